// The chat's state over the Suanpan Swift package (bindings/swift).
//
// The API this is written against (DESIGN.md section 7 and issue 7; align here if the
// package's final names differ):
//   try await SuanpanEngine(modelPath: String, onProgress: (Double) -> Void)   async throws load
//   try engine.makeSession() -> SuanpanSession
//   session.generate(_ prompt: String, maxTokens: Int) -> AsyncThrowingStream<String, Error>
//   cancelling the consuming Task cancels the generation
import Foundation
import Suanpan

struct Turn: Identifiable {
    let id = UUID()
    let fromUser: Bool
    var text: String
}

@MainActor
final class ChatModel: ObservableObject {
    @Published var turns: [Turn] = []
    @Published var status = "Loading model…"
    @Published var loadFraction = 0.0
    @Published var ready = false
    @Published var generating = false

    private var engine: SuanpanEngine?
    private var session: SuanpanSession?
    private var task: Task<Void, Never>?

    /// The model goes into the app's Documents folder (Finder / Files app, see README.md).
    static var modelURL: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("model.gguf")
    }

    func load() async {
        do {
            let engine = try await SuanpanEngine(modelPath: Self.modelURL.path) { fraction in
                Task { @MainActor in self.loadFraction = fraction }
            }
            self.engine = engine
            session = try engine.makeSession()
            ready = true
            status = "Ready"
        } catch {
            // A missing or corrupt file is a message on screen, not a crash.
            status = "Could not load \(Self.modelURL.lastPathComponent): \(error)"
        }
    }

    func send(_ text: String) {
        guard let session, !generating, !text.isEmpty else { return }
        turns.append(Turn(fromUser: true, text: text))
        turns.append(Turn(fromUser: false, text: ""))
        let at = turns.count - 1
        generating = true
        task = Task {
            do {
                for try await piece in session.generate(text, maxTokens: 256) {
                    turns[at].text += piece
                }
                status = "Ready"
            } catch is CancellationError {
                status = "Stopped"
            } catch {
                status = "Error: \(error)"
            }
            generating = false
        }
    }

    func stop() { task?.cancel() }
}
