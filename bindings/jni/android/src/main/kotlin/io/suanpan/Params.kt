package io.suanpan

/** How to load a model. [threads] = 0 uses one thread per core. */
data class EngineParams(val threads: Int = 0)

/**
 * How to create a session. [contextLength] = 0 takes the model's trained length (at most
 * 4096); [memoryBudgetBytes] = 0 means no limit (over it, creation throws OutOfMemory).
 */
data class SessionParams(
    val contextLength: Int = 0,
    val batchSize: Int = 512,
    val memoryBudgetBytes: Long = 0,
)

/** How to generate; the sampling defaults are llama.cpp's. temperature <= 0 is greedy. */
data class GenerateParams(
    val maxTokens: Int = 256,
    val temperature: Float = 0.8f,
    val topK: Int = 40,
    val topP: Float = 0.95f,
    val minP: Float = 0.05f,
    val repeatPenalty: Float = 1.0f,
    val repeatLastN: Int = 64,
    val seed: Long = 0x5EED,
    /** Stop before any of these strings; none of a stop string is streamed. */
    val stop: List<String> = emptyList(),
    val addSpecial: Boolean = true,
    val parseSpecial: Boolean = false,
    /** Output that matches a JSON schema, a regex or a grammar (null: free text). */
    val constraint: Constraint? = null,
) {
    companion object {
        /** Always the most likely token. */
        fun greedy(maxTokens: Int = 256) = GenerateParams(maxTokens = maxTokens, temperature = 0f)
    }
}

/**
 * What generated text must match. A constraint that does not compile or that no text can
 * satisfy makes generation throw [SuanpanException.InvalidArgument] naming it.
 */
sealed class Constraint(internal val kind: Int, internal val text: String?) {
    /** JSON matching this JSON schema (compact output). */
    class JsonSchema(val schema: String) : Constraint(1, schema)
    /** Any JSON object. */
    object JsonObject : Constraint(2, null)
    /** The whole output matches this regular expression (Rust regex syntax). */
    class Regex(val pattern: String) : Constraint(3, pattern)
    /** A Lark-style grammar in llguidance's syntax (`start: ...`). */
    class Grammar(val lark: String) : Constraint(4, lark)
}

/** One message of a conversation ("system", "user" or "assistant"). */
data class ChatMessage(val role: String, val content: String)

/** Why a generation ended. */
enum class StopReason { END_OF_GENERATION, MAX_TOKENS, LISTENER, STOP_STRING }

/** What one generation did. */
data class GenerateResult(
    val promptTokens: Int,
    val generatedTokens: Int,
    val stopReason: StopReason,
    val promptMillis: Double,
    val generateMillis: Double,
)

/** How full a session is. */
data class Usage(val tokens: Int, val contextLength: Int, val kvBytes: Long, val kvBytesUsed: Long)

/** Memory a model and one session need, known before loading. */
data class MemoryEstimate(
    val fileBytes: Long,
    val weightsBytes: Long,
    val contextLength: Int,
    val kvBytes: Long,
    val kvBytesPerToken: Long,
    val scratchBytes: Long,
    val totalBytes: Long,
)

/** Load progress from 0 to 1; return false to cancel the load. */
fun interface LoadProgressListener {
    fun onProgress(fraction: Float): Boolean
}

/** Receives generated text, always whole characters; return false to stop generating. */
fun interface TokenListener {
    fun onToken(piece: String): Boolean
}
