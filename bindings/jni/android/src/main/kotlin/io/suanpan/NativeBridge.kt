package io.suanpan

/**
 * The native methods of libsuanpan_jni (bindings/jni/src/lib.rs). Every method that can
 * fail returns a status code (0 = OK, the numbers of the C ABI); [check] turns it into a
 * [SuanpanException]. Text goes both ways as UTF-8 byte arrays, never as JNI strings
 * (whose "modified UTF-8" mangles NUL and characters outside the BMP).
 */
internal object NativeBridge {
    init {
        // Desktop tests and apps may point at the library explicitly; Android finds it in
        // the AAR's jniLibs/<abi>/.
        val explicit = System.getProperty("suanpan.library.path")
        if (explicit != null) System.load(explicit) else System.loadLibrary("suanpan_jni")
    }

    @JvmStatic external fun nativeVersion(): ByteArray
    @JvmStatic external fun nativeLastError(): ByteArray
    @JvmStatic external fun nativeLastStatus(): Int
    @JvmStatic external fun nativeLoad(path: ByteArray, nThreads: Int, progress: LoadProgressListener?, out: LongArray): Int
    @JvmStatic external fun nativeModelFree(model: Long): Int
    @JvmStatic external fun nativeEstimate(path: ByteArray, nThreads: Int, nCtx: Int, nBatch: Int, budget: Long, out: LongArray): Int
    @JvmStatic external fun nativeSessionNew(model: Long, nCtx: Int, nBatch: Int, budget: Long, out: LongArray): Int
    @JvmStatic external fun nativeSessionClone(session: Long, out: LongArray): Int
    @JvmStatic external fun nativeSessionFree(session: Long): Int
    @JvmStatic external fun nativeCancel(session: Long): Int
    @JvmStatic external fun nativeReset(session: Long): Int
    @JvmStatic external fun nativeUsage(session: Long, out: LongArray): Int
    @JvmStatic external fun nativeGenerate(
        session: Long, prompt: ByteArray?, chat: ByteArray?,
        maxTokens: Int, temperature: Float, topK: Int, topP: Float, minP: Float,
        repeatPenalty: Float, repeatLastN: Int, seed: Long,
        addSpecial: Boolean, parseSpecial: Boolean, stops: ByteArray?,
        constraintKind: Int, constraint: ByteArray?,
        sink: NativeSink?, out: LongArray,
    ): Int
    @JvmStatic external fun nativeSave(session: Long): ByteArray?
    @JvmStatic external fun nativeRestore(session: Long, blob: ByteArray): Int
    @JvmStatic external fun nativeDebugPanic(): Int

    fun lastError(): String = nativeLastError().decodeToString()

    /** Throw the exception for a non-zero status, with this thread's last error message. */
    fun check(status: Int) {
        if (status != 0) throw SuanpanException.of(status, lastError())
    }

    /** Strings as `[u32 little-endian length][UTF-8 bytes]` records. */
    fun records(strings: List<String>): ByteArray {
        val parts = strings.map { it.encodeToByteArray() }
        val out = ByteArray(parts.sumOf { 4 + it.size })
        var at = 0
        for (p in parts) {
            val n = p.size
            out[at] = n.toByte(); out[at + 1] = (n shr 8).toByte()
            out[at + 2] = (n shr 16).toByte(); out[at + 3] = (n shr 24).toByte()
            p.copyInto(out, at + 4)
            at += 4 + n
        }
        return out
    }
}

/** Receives each streamed piece as UTF-8 bytes (whole code points). */
internal fun interface NativeSink {
    fun onPiece(utf8: ByteArray): Boolean
}
