// Swift API over suanpan's C ABI (bindings/c/include/suanpan.h).
// NOT COMPILED in the suanpan repository: there is no Swift toolchain on its machines.
// It is kept thin on purpose: every call maps onto one C function, and the C tests
// (bindings/c/tests) exercise the behaviour underneath.

import Foundation
import SuanpanFFI

/// Everything that can go wrong; one case per C status.
public enum SuanpanError: Error, Equatable {
    case invalidArgument(String)
    case io(String)
    case badModel(String)
    case outOfMemory(String)
    case contextFull(String)
    case cancelled
    case busy(String)
    case backend(String)
    case internalError(String)

    static func check(_ status: suanpan_status) throws {
        if status == SUANPAN_OK { return }
        let message = String(cString: suanpan_last_error())
        switch status {
        case SUANPAN_INVALID_ARG: throw SuanpanError.invalidArgument(message)
        case SUANPAN_IO: throw SuanpanError.io(message)
        case SUANPAN_BAD_MODEL: throw SuanpanError.badModel(message)
        case SUANPAN_OOM: throw SuanpanError.outOfMemory(message)
        case SUANPAN_CONTEXT_FULL: throw SuanpanError.contextFull(message)
        case SUANPAN_CANCELLED: throw SuanpanError.cancelled
        case SUANPAN_BUSY: throw SuanpanError.busy(message)
        case SUANPAN_BACKEND: throw SuanpanError.backend(message)
        default: throw SuanpanError.internalError(message)
        }
    }
}

/// Sampling and stopping for one generation. temperature <= 0 is greedy.
public struct GenerateOptions: Sendable {
    public var maxTokens: UInt32 = 256
    public var temperature: Float = 0.8
    public var topK: UInt32 = 40
    public var topP: Float = 0.95
    public var minP: Float = 0.05
    public var seed: UInt64 = 0x5EED
    public var stop: [String] = []
    /// Output that matches a JSON schema, a regex or a grammar (nil: free text).
    public var constraint: Constraint? = nil
    public init() {}
}

/// What generated text must match. One that does not compile, or that no text can
/// satisfy, makes generation throw `SuanpanError.invalidArgument` naming it.
public enum Constraint: Sendable {
    /// JSON matching this JSON schema (compact output).
    case jsonSchema(String)
    /// Any JSON object.
    case jsonObject
    /// The whole output matches this regular expression (Rust regex syntax).
    case regex(String)
    /// A Lark-style grammar in llguidance's syntax (`start: ...`).
    case grammar(String)

    /// The SUANPAN_CONSTRAINT_* value and the text of suanpan_generate_params.
    var abi: (kind: UInt32, text: String?) {
        switch self {
        case .jsonSchema(let s): return (1, s)
        case .jsonObject: return (2, nil)
        case .regex(let r): return (3, r)
        case .grammar(let g): return (4, g)
        }
    }
}

/// Boxes passed through the C callbacks' user-data pointer.
private final class ProgressBox {
    let onProgress: ((Float) -> Void)?
    let cancelled = ManagedAtomicFlag()
    init(_ f: ((Float) -> Void)?) { onProgress = f }
}

private final class StreamBox {
    let continuation: AsyncThrowingStream<String, Error>.Continuation
    init(_ c: AsyncThrowingStream<String, Error>.Continuation) { continuation = c }
}

/// A flag set from one thread and read from another.
private final class ManagedAtomicFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.lock(); value = true; lock.unlock() }
    func get() -> Bool { lock.lock(); defer { lock.unlock() }; return value }
}

/// A loaded model. Thread-safe; sessions keep it alive.
public final class SuanpanEngine: @unchecked Sendable {
    let handle: OpaquePointer

    private init(handle: OpaquePointer) { self.handle = handle }
    deinit { suanpan_model_free(handle) }

    /// Load a GGUF model off the calling task. Cancelling the task cancels the load
    /// (it then throws `SuanpanError.cancelled`).
    public static func load(path: String, threads: UInt32 = 0,
                            progress: ((Float) -> Void)? = nil) async throws -> SuanpanEngine {
        let box = ProgressBox(progress)
        return try await withTaskCancellationHandler {
            try await Task.detached(priority: .userInitiated) { () throws -> SuanpanEngine in
                var params = suanpan_model_params_default()
                params.n_threads = threads
                params.progress = { fraction, user in
                    let box = Unmanaged<ProgressBox>.fromOpaque(user!).takeUnretainedValue()
                    box.onProgress?(fraction)
                    return !box.cancelled.get()
                }
                params.progress_user_data = Unmanaged.passUnretained(box).toOpaque()
                var out: OpaquePointer?
                let status = withExtendedLifetime(box) { suanpan_model_load(path, &params, &out) }
                try SuanpanError.check(status)
                return SuanpanEngine(handle: out!)
            }.value
        } onCancel: {
            box.cancelled.set()
        }
    }

    /// A new session (conversation) on this model. contextLength 0 = the model's default.
    public func makeSession(contextLength: UInt32 = 0, memoryBudget: UInt64 = 0) throws -> SuanpanSession {
        var params = suanpan_session_params_default()
        params.n_ctx = contextLength
        params.memory_budget = memoryBudget
        var out: OpaquePointer?
        try SuanpanError.check(suanpan_session_new(handle, &params, &out))
        return SuanpanSession(handle: out!)
    }
}

/// A conversation: its context and generation. One generation at a time.
public final class SuanpanSession: @unchecked Sendable {
    let handle: OpaquePointer

    init(handle: OpaquePointer) { self.handle = handle }
    deinit { suanpan_session_free(handle) }

    /// Stream the continuation of `prompt` as whole-character pieces. Cancelling the
    /// consuming task (or breaking out of the `for try await` loop) cancels generation.
    public func generate(_ prompt: String, options: GenerateOptions = GenerateOptions())
        -> AsyncThrowingStream<String, Error> {
        AsyncThrowingStream { continuation in
            let box = StreamBox(continuation)
            continuation.onTermination = { [handle] _ in _ = suanpan_session_cancel(handle) }
            let thread = Thread { [self] in
                var params = suanpan_generate_params_default()
                params.max_tokens = options.maxTokens
                params.temperature = options.temperature
                params.top_k = options.topK
                params.top_p = options.topP
                params.min_p = options.minP
                params.seed = options.seed
                let constraintText = options.constraint?.abi.text.flatMap { strdup($0) }
                defer { free(constraintText) }
                params.constraint_kind = options.constraint?.abi.kind ?? 0
                params.constraint = UnsafePointer(constraintText)
                let stops = options.stop.map { strdup($0) }
                defer { stops.forEach { free($0) } }
                var stopPtrs = stops.map { UnsafePointer<CChar>($0) }
                let status: suanpan_status = stopPtrs.withUnsafeMutableBufferPointer { buf in
                    params.stop = UnsafePointer(buf.baseAddress)
                    params.n_stop = buf.count
                    return withExtendedLifetime(box) {
                        suanpan_generate(self.handle, prompt, &params, { piece, len, user in
                            let box = Unmanaged<StreamBox>.fromOpaque(user!).takeUnretainedValue()
                            let bytes = UnsafeRawBufferPointer(start: piece, count: len)
                            let text = String(decoding: bytes, as: UTF8.self)
                            if case .terminated = box.continuation.yield(text) { return false }
                            return true
                        }, Unmanaged.passUnretained(box).toOpaque(), nil)
                    }
                }
                do {
                    try SuanpanError.check(status)
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            thread.start()
        }
    }

    /// Stop a running generation from any thread.
    public func cancel() { _ = suanpan_session_cancel(handle) }

    /// Forget the conversation.
    public func reset() throws { try SuanpanError.check(suanpan_session_reset(handle)) }

    /// The context as a versioned, checksummed blob.
    public func saveState() throws -> Data {
        var bytes: UnsafeMutablePointer<UInt8>?
        var len = 0
        try SuanpanError.check(suanpan_session_save(handle, &bytes, &len))
        defer { suanpan_bytes_free(bytes, len) }
        return Data(bytes: bytes!, count: len)
    }

    /// Replace the context with a saved one (same model only).
    public func restoreState(_ state: Data) throws {
        try state.withUnsafeBytes { raw in
            try SuanpanError.check(suanpan_session_restore(
                handle, raw.bindMemory(to: UInt8.self).baseAddress, raw.count))
        }
    }
}
