package io.suanpan

import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.withContext
import kotlin.coroutines.coroutineContext

/**
 * A loaded model, shareable by any number of sessions on any threads.
 *
 * ```kotlin
 * SuanpanEngine.load("/data/.../model.gguf").use { engine ->
 *     engine.createSession().use { session ->
 *         session.generate("Once upon a time", GenerateParams(maxTokens = 64)) { piece -> print(piece); true }
 *     }
 * }
 * ```
 *
 * Closing the engine releases its reference to the model; sessions still open keep the
 * model alive until they are closed.
 */
class SuanpanEngine private constructor(private var handle: Long) : AutoCloseable {
    companion object {
        /** The native library's version. */
        @JvmStatic
        val version: String get() = NativeBridge.nativeVersion().decodeToString()

        /**
         * Load a GGUF model (blocking). [progress] hears the fraction loaded and may return
         * false to cancel ([SuanpanException.Cancelled]).
         */
        @JvmStatic
        @JvmOverloads
        fun load(path: String, params: EngineParams = EngineParams(), progress: LoadProgressListener? = null): SuanpanEngine {
            val out = LongArray(1)
            NativeBridge.check(NativeBridge.nativeLoad(path.encodeToByteArray(), params.threads, progress, out))
            return SuanpanEngine(out[0])
        }

        /**
         * Load on [Dispatchers.IO]; cancelling the coroutine cancels the load.
         */
        suspend fun loadAsync(
            path: String,
            params: EngineParams = EngineParams(),
            onProgress: ((Float) -> Unit)? = null,
        ): SuanpanEngine = withContext(Dispatchers.IO) {
            val job = coroutineContext[Job]
            load(path, params) { f ->
                onProgress?.invoke(f)
                job?.isActive != false
            }
        }

        /** Memory that loading [path] and one session would take, without loading. */
        @JvmStatic
        @JvmOverloads
        fun estimateMemory(
            path: String,
            params: EngineParams = EngineParams(),
            session: SessionParams = SessionParams(),
        ): MemoryEstimate {
            val o = LongArray(7)
            NativeBridge.check(
                NativeBridge.nativeEstimate(
                    path.encodeToByteArray(), params.threads, session.contextLength,
                    session.batchSize, session.memoryBudgetBytes, o,
                ),
            )
            return MemoryEstimate(o[0], o[1], o[2].toInt(), o[3], o[4], o[5], o[6])
        }

        /** For tests: a panic inside the native library arrives as [SuanpanException.Internal]. */
        @JvmStatic
        fun debugProvokeInternalError() = NativeBridge.check(NativeBridge.nativeDebugPanic())
    }

    /** A new, empty session on this model. */
    @JvmOverloads
    fun createSession(params: SessionParams = SessionParams()): SuanpanSession = synchronized(this) {
        val out = LongArray(1)
        NativeBridge.check(
            NativeBridge.nativeSessionNew(handle, params.contextLength, params.batchSize, params.memoryBudgetBytes, out),
        )
        SuanpanSession(out[0])
    }

    override fun close() = synchronized(this) {
        if (handle != 0L) {
            NativeBridge.nativeModelFree(handle)
            handle = 0L
        }
    }
}
