// The chat's state over the Suanpan Swift package (bindings/swift/Sources/Suanpan/Suanpan.swift):
//   try await SuanpanEngine.load(path:threads:progress:)    loads off the calling task;
//       progress(Float) is called on the loading thread; cancelling the task cancels the load
//   try engine.makeSession(contextLength:memoryBudget:) -> SuanpanSession
//   session.generate(_:options:) -> AsyncThrowingStream<String, Error>   (GenerateOptions)
//       cancelling the task that iterates ends the stream (without an error) and cancels
//       the native generation
//   errors: SuanpanError
// The package has no chat-template call: each message goes in as a plain prompt that
// continues the session's context.
import Foundation
import Suanpan

struct Turn: Identifiable {
    enum Kind { case user, model, note }
    let id = UUID()
    let kind: Kind
    var text: String
}

/// A SuanpanError as a sentence; the switch is exhaustive on purpose.
func describe(_ error: Error) -> String {
    guard let error = error as? SuanpanError else { return error.localizedDescription }
    switch error {
    case .invalidArgument(let m): return "invalid argument: \(m)"
    case .io(let m): return "cannot read the file: \(m)"
    case .badModel(let m): return "not a usable model: \(m)"
    case .outOfMemory(let m): return "out of memory: \(m)"
    case .contextFull(let m): return "context full: \(m)"
    case .cancelled: return "cancelled"
    case .busy(let m): return "busy: \(m)"
    case .backend(let m): return "compute backend failed: \(m)"
    case .internalError(let m): return "internal error: \(m)"
    }
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
    private var loading = false

    private static let contextLength: UInt32 = 2048
    private static let options: GenerateOptions = {
        var o = GenerateOptions()
        o.maxTokens = 256
        return o
    }()

    /// The model goes into the app's Documents folder (Finder / Files app, see README.md).
    static var modelURL: URL {
        FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("model.gguf")
    }

    /// Called from the view's `.task`, so leaving the screen cancels the load.
    func load() async {
        guard engine == nil, !loading else { return }
        loading = true
        defer { loading = false }
        do {
            let engine = try await SuanpanEngine.load(path: Self.modelURL.path) { fraction in
                Task { @MainActor [weak self] in self?.loadFraction = Double(fraction) }
            }
            session = try engine.makeSession(contextLength: Self.contextLength)
            self.engine = engine
            loadFraction = 1
            ready = true
            status = "Ready"
        } catch SuanpanError.cancelled {
            status = "Loading cancelled"
        } catch {
            // A missing or corrupt file is a message on screen, not a crash.
            status = "Could not load \(Self.modelURL.lastPathComponent): \(describe(error))"
        }
    }

    func send(_ text: String) {
        let message = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let session, !generating, !message.isEmpty else { return }
        turns.append(Turn(kind: .user, text: message))
        turns.append(Turn(kind: .model, text: ""))
        let at = turns.count - 1
        generating = true
        status = "Generating…"
        // The prompt continues the context: close the user's line so the reply starts afresh.
        let prompt = (turns.count > 2 ? "\n" : "") + message + "\n"
        task = Task {
            var outcome = "Ready"
            var note: String?
            do {
                for try await piece in session.generate(prompt, options: Self.options) {
                    turns[at].text += piece
                }
                // Stop cancels this task: the stream then just ends.
                if Task.isCancelled { outcome = "Stopped" }
            } catch SuanpanError.cancelled {
                outcome = "Stopped"
            } catch SuanpanError.contextFull(_) {
                try? session.reset()
                outcome = "Context full"
                note = "The conversation filled the context (\(Self.contextLength) tokens); it was cleared. Send your message again."
            } catch SuanpanError.busy(_) {
                // The previous reply was stopped but its native call had not returned yet.
                outcome = "Busy"
                note = "The previous reply is still stopping; send again."
            } catch {
                outcome = "Error"
                note = "Error: \(describe(error))"
            }
            if turns[at].text.isEmpty { turns.remove(at: at) }
            if let note { turns.append(Turn(kind: .note, text: note)) }
            status = outcome
            generating = false
        }
    }

    /// Stop the reply: cancelling the iterating task cancels the native generation.
    func stop() { task?.cancel() }
}
