package io.suanpan

/**
 * Everything that can go wrong, one subclass per status of the native library. Catch
 * [SuanpanException] for all of them or a subclass for one case:
 *
 * ```kotlin
 * try { session.generate(prompt) } catch (e: SuanpanException.ContextFull) { session.reset() }
 * ```
 */
sealed class SuanpanException(val status: Int, message: String) : Exception(message) {
    /** An argument was out of range, not UTF-8, or the object was closed. */
    class InvalidArgument(message: String) : SuanpanException(1, message)
    /** A file could not be read. */
    class Io(message: String) : SuanpanException(2, message)
    /** The model file is malformed, truncated or unsupported. */
    class BadModel(message: String) : SuanpanException(3, message)
    /** Over the memory budget, or an allocation failed. */
    class OutOfMemory(message: String) : SuanpanException(4, message)
    /** The session's context is full: reset it or use a larger context. */
    class ContextFull(message: String) : SuanpanException(5, message)
    /** [SuanpanSession.cancel], a progress listener or coroutine cancellation stopped the call. */
    class Cancelled(message: String) : SuanpanException(6, message)
    /** The session is in use by another thread. */
    class Busy(message: String) : SuanpanException(7, message)
    /** The compute backend failed. */
    class Backend(message: String) : SuanpanException(8, message)
    /** A bug in suanpan: an internal error or a caught panic. */
    class Internal(message: String) : SuanpanException(9, message)

    companion object {
        internal fun of(status: Int, message: String): SuanpanException = when (status) {
            1 -> InvalidArgument(message)
            2 -> Io(message)
            3 -> BadModel(message)
            4 -> OutOfMemory(message)
            5 -> ContextFull(message)
            6 -> Cancelled(message.ifEmpty { "cancelled" })
            7 -> Busy(message)
            8 -> Backend(message)
            else -> Internal("status $status: $message")
        }
    }
}
