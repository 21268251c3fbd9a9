import SwiftUI

struct ChatView: View {
    @StateObject private var model = ChatModel()
    @State private var input = ""

    var body: some View {
        VStack(alignment: .leading, spacing: 8) {
            Text(model.status).font(.caption).foregroundStyle(.secondary)
            if !model.ready && model.loadFraction < 1 {
                ProgressView(value: model.loadFraction)
            }
            ScrollViewReader { proxy in
                List(model.turns) { turn in
                    switch turn.kind {
                    case .user: Text("You: " + turn.text).id(turn.id)
                    case .model: Text("Model: " + turn.text).id(turn.id)
                    case .note: Text(turn.text).foregroundStyle(.red).id(turn.id)
                    }
                }
                .listStyle(.plain)
                .onChange(of: model.turns.last?.text) { _ in
                    if let last = model.turns.last { proxy.scrollTo(last.id, anchor: .bottom) }
                }
            }
            HStack {
                TextField("Message", text: $input)
                    .textFieldStyle(.roundedBorder)
                    .disabled(!model.ready)
                    .onSubmit(send)
                if model.generating {
                    Button("Stop", action: model.stop)
                } else {
                    Button("Send", action: send)
                        .disabled(!model.ready || input.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)
                }
            }
        }
        .padding()
        .task { await model.load() }
    }

    private func send() {
        model.send(input)
        input = ""
    }
}
