package io.suanpan

import java.util.concurrent.locks.ReentrantLock

/**
 * A conversation on a model: its context (KV cache) and generation. One thread generates
 * at a time (a second gets [SuanpanException.Busy]); [cancel] works from any thread.
 * Streaming as a Flow: [generateAsync] (SuanpanFlow.kt).
 */
class SuanpanSession internal constructor(private var handle: Long) : AutoCloseable {
    private val lock = ReentrantLock()

    private inline fun <T> exclusive(block: (Long) -> T): T {
        if (!lock.tryLock()) throw SuanpanException.Busy("the session is in use by another thread")
        try {
            if (handle == 0L) throw SuanpanException.InvalidArgument("the session is closed")
            return block(handle)
        } finally {
            lock.unlock()
        }
    }

    /**
     * Continue the context with [prompt] and generate; [listener] receives the text as it
     * comes (whole characters) and may return false to stop. An empty prompt continues
     * where the last generation stopped. Throws [SuanpanException.Cancelled] after
     * [cancel], [SuanpanException.ContextFull] when the context fills up; the session stays
     * usable either way. An exception thrown by the listener stops generation and is
     * rethrown here.
     */
    @JvmOverloads
    fun generate(prompt: String, params: GenerateParams = GenerateParams(), listener: TokenListener? = null): GenerateResult =
        run(prompt.encodeToByteArray(), null, params, listener)

    /**
     * The assistant's reply to a conversation, rendered with the model's chat template.
     * Pass the whole conversation each turn: the part already in the context is reused.
     */
    @JvmOverloads
    fun chat(messages: List<ChatMessage>, params: GenerateParams = GenerateParams(), listener: TokenListener? = null): GenerateResult {
        if (messages.isEmpty()) throw SuanpanException.InvalidArgument("a chat needs at least one message")
        val records = NativeBridge.records(messages.flatMap { listOf(it.role, it.content) })
        return run(null, records, params, listener)
    }

    private fun run(prompt: ByteArray?, chat: ByteArray?, p: GenerateParams, listener: TokenListener?): GenerateResult = exclusive { h ->
        var thrown: Throwable? = null
        val sink = listener?.let { l ->
            NativeSink { bytes ->
                try {
                    l.onToken(bytes.decodeToString())
                } catch (t: Throwable) {
                    thrown = t
                    false
                }
            }
        }
        val out = LongArray(5)
        val status = NativeBridge.nativeGenerate(
            h, prompt, chat, p.maxTokens, p.temperature, p.topK, p.topP, p.minP,
            p.repeatPenalty, p.repeatLastN, p.seed, p.addSpecial, p.parseSpecial,
            if (p.stop.isEmpty()) null else NativeBridge.records(p.stop),
            p.constraint?.kind ?: 0, p.constraint?.text?.encodeToByteArray(), sink, out,
        )
        thrown?.let { throw it }
        NativeBridge.check(status)
        GenerateResult(
            promptTokens = out[0].toInt(),
            generatedTokens = out[1].toInt(),
            stopReason = StopReason.values()[out[2].toInt()],
            promptMillis = out[3] / 1000.0,
            generateMillis = out[4] / 1000.0,
        )
    }

    /** Stop a running generation (any thread); it throws [SuanpanException.Cancelled]. */
    fun cancel() {
        val h = handle
        if (h != 0L) NativeBridge.nativeCancel(h)
    }

    /** Forget the conversation. */
    fun reset() = exclusive { h -> NativeBridge.check(NativeBridge.nativeReset(h)) }

    /** Tokens in context, capacity and KV memory. */
    val usage: Usage
        get() = exclusive { h ->
            val o = LongArray(4)
            NativeBridge.check(NativeBridge.nativeUsage(h, o))
            Usage(o[0].toInt(), o[1].toInt(), o[2], o[3])
        }

    /** The context as a versioned, checksummed blob for [restoreState]. */
    fun saveState(): ByteArray = exclusive { h ->
        NativeBridge.nativeSave(h) ?: throw SuanpanException.of(NativeBridge.nativeLastStatus(), NativeBridge.lastError())
    }

    /**
     * Replace the context with a saved one. A blob of another model or a damaged one
     * throws [SuanpanException.InvalidArgument] and leaves the session unchanged.
     */
    fun restoreState(state: ByteArray) = exclusive { h -> NativeBridge.check(NativeBridge.nativeRestore(h, state)) }

    /** An independent copy of this session, context included. */
    fun copy(): SuanpanSession = exclusive { h ->
        val out = LongArray(1)
        NativeBridge.check(NativeBridge.nativeSessionClone(h, out))
        SuanpanSession(out[0])
    }

    /** Cancel any running generation, wait for it to end, and free the session. */
    override fun close() {
        cancel()
        lock.lock()
        try {
            if (handle != 0L) {
                NativeBridge.nativeSessionFree(handle)
                handle = 0L
            }
        } finally {
            lock.unlock()
        }
    }
}
