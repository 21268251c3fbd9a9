package io.suanpan

import kotlinx.coroutines.flow.take
import kotlinx.coroutines.flow.toList
import kotlinx.coroutines.runBlocking
import java.io.File
import java.util.concurrent.atomic.AtomicInteger
import kotlin.concurrent.thread
import kotlin.system.exitProcess

/**
 * The Kotlin API on the desktop JVM against the Linux build of libsuanpan_jni and the
 * real SmolLM2 model. Run by bindings/jni/tests/jvm.rs: `main MODEL SCRATCH_DIR [HOSTILE]`
 * (HOSTILE: the model with a chat template that asks for too much memory).
 * Prints each failure and "N passed, M failed"; exits 1 on any failure.
 */
private var passed = 0
private var failed = 0

private fun check(cond: Boolean, what: () -> String) {
    if (cond) passed++ else {
        failed++
        System.err.println("FAIL: ${what()}")
    }
}

private inline fun <reified E : Throwable> expectThrows(what: String, block: () -> Unit): E? {
    try {
        block()
    } catch (e: Throwable) {
        if (e is E) {
            passed++
            return e
        }
        failed++
        System.err.println("FAIL: $what: expected ${E::class.simpleName}, got $e")
        return null
    }
    failed++
    System.err.println("FAIL: $what: expected ${E::class.simpleName}, nothing was thrown")
    return null
}

private fun validUtf8(s: String): Boolean =
    s.encodeToByteArray().decodeToString() == s && s.none { it == '\uFFFD' }

fun main(args: Array<String>) {
    val modelPath = args[0]
    val scratch = File(args[1]).apply { mkdirs() }

    check(SuanpanEngine.version.isNotEmpty()) { "version" }

    // Load with progress, then a load cancelled by its listener.
    val seen = ArrayList<Float>()
    val engine = SuanpanEngine.load(modelPath, EngineParams(threads = 2)) { f -> seen.add(f); true }
    check(seen.size > 10 && seen.last() == 1.0f) { "progress reports: $seen" }
    check(seen.zipWithNext().all { (a, b) -> a <= b }) { "progress not monotone" }
    expectThrows<SuanpanException.Cancelled>("cancelled load") {
        SuanpanEngine.load(modelPath, EngineParams(threads = 2)) { f -> f < 0.5f }
    }

    // Missing and corrupt files.
    expectThrows<SuanpanException.Io>("missing file") { SuanpanEngine.load("/nonexistent/model.gguf") }
        ?.let { check(it.message!!.contains("/nonexistent/model.gguf")) { "message: ${it.message}" } }
    val cut = File(scratch, "truncated.gguf")
    File(modelPath).inputStream().use { inp -> cut.outputStream().use { out -> out.write(inp.readNBytes(8 shl 20)) } }
    expectThrows<SuanpanException.BadModel>("truncated file") { SuanpanEngine.load(cut.path) }
        ?.let { check(it.message!!.contains("truncated")) { "message: ${it.message}" } }

    // Memory estimate and budget.
    val est = SuanpanEngine.estimateMemory(modelPath, EngineParams(threads = 2), SessionParams(contextLength = 512))
    check(est.kvBytes == 512 * est.kvBytesPerToken) { "estimate $est" }
    engine.createSession(SessionParams(contextLength = 512)).use { s ->
        check(s.usage.kvBytes == est.kvBytes) { "usage ${s.usage} vs $est" }
    }
    expectThrows<SuanpanException.OutOfMemory>("over budget") {
        engine.createSession(SessionParams(contextLength = 512, memoryBudgetBytes = est.kvBytes + est.scratchBytes - 1))
    }?.let { check(it.message!!.contains("budget")) { "message: ${it.message}" } }
    expectThrows<SuanpanException.InvalidArgument>("context too long") {
        engine.createSession(SessionParams(contextLength = 1_000_000))
    }

    // Streaming multi-byte text split across tokens: every piece is whole characters.
    engine.createSession(SessionParams(contextLength = 256)).use { s ->
        val pieces = ArrayList<String>()
        val r = s.generate("日本の首都は東京です。中国の首都は", GenerateParams.greedy(24)) { pieces.add(it); true }
        check(pieces.all { it.isNotEmpty() && validUtf8(it) }) { "broken pieces: $pieces" }
        check(pieces.any { p -> p.any { it.code > 0x2E80 } }) { "no CJK output: $pieces" }
        // Fewer pieces than tokens: partial characters were held back, not streamed broken.
        check(pieces.size < r.generatedTokens) { "${pieces.size} pieces for ${r.generatedTokens} tokens" }
        println("streamed: ${pieces.joinToString("")}")

        // Max tokens and stop strings.
        s.reset()
        val plain = StringBuilder()
        val r2 = s.generate("Once upon a time, in a small village,", GenerateParams.greedy(40)) { plain.append(it); true }
        check(r2.generatedTokens == 40 && r2.stopReason == StopReason.MAX_TOKENS) { "max tokens: $r2" }
        val sp = plain.indexOf(' ', 1)
        val stop = plain.substring(sp, minOf(sp + 5, plain.length))
        s.reset()
        val stopped = StringBuilder()
        val r3 = s.generate(
            "Once upon a time, in a small village,",
            GenerateParams.greedy(40).copy(stop = listOf("<never>", stop)),
        ) { stopped.append(it); true }
        check(r3.stopReason == StopReason.STOP_STRING) { "stop reason ${r3.stopReason}" }
        check(stopped.toString() == plain.substring(0, plain.indexOf(stop))) { "stopped at \"$stopped\" for \"$stop\" in \"$plain\"" }

        // A listener exception stops generation and reaches the caller.
        s.reset()
        expectThrows<IllegalStateException>("listener exception") {
            s.generate("Hello", GenerateParams.greedy(20)) { throw IllegalStateException("from listener") }
        }
        check(s.generate("Hi", GenerateParams.greedy(2)).generatedTokens == 2) { "usable after listener exception" }
    }

    // Cancellation from another thread; the session is usable afterwards; a second
    // thread meanwhile gets Busy.
    engine.createSession(SessionParams(contextLength = 1024)).use { s ->
        val count = AtomicInteger()
        var busy: Throwable? = null
        val t = thread {
            while (count.get() < 5) Thread.sleep(1)
            busy = runCatching { s.usage }.exceptionOrNull()
            s.cancel()
        }
        expectThrows<SuanpanException.Cancelled>("cancel") {
            s.generate("Count: one, two, three, four,", GenerateParams.greedy(900)) { count.incrementAndGet(); true }
        }
        t.join()
        check(busy is SuanpanException.Busy) { "second thread got $busy" }
        check(count.get() in 5..399) { "cancelled after ${count.get()} pieces" }
        check(s.generate(" The end.", GenerateParams.greedy(5)).generatedTokens > 0) { "usable after cancel" }
    }

    // Flow: take(5) cancels the collection; the session is free right after.
    engine.createSession(SessionParams(contextLength = 1024)).use { s ->
        val first = runBlocking { s.generateAsync("Count: one, two, three, four,", GenerateParams.greedy(500)).take(5).toList() }
        check(first.size == 5) { "flow pieces $first" }
        val all = runBlocking { s.generateAsync(" and", GenerateParams.greedy(6)).toList() }
        check(all.isNotEmpty()) { "flow after cancel" }
        s.reset()
        val chat = runBlocking { s.chatAsync(listOf(ChatMessage("user", "Say hello.")), GenerateParams.greedy(16)).toList() }
        check(chat.joinToString("").isNotEmpty()) { "chat flow" }
    }

    // Context full, then usable after reset.
    engine.createSession(SessionParams(contextLength = 24)).use { s ->
        expectThrows<SuanpanException.ContextFull>("context full") {
            s.generate("Count: one, two, three, four,", GenerateParams.greedy(100))
        }
        check(s.usage.tokens == 24) { "tokens ${s.usage.tokens}" }
        s.reset()
        check(s.generate("Hi", GenerateParams.greedy(3)).generatedTokens == 3) { "after reset" }
    }

    // Two sessions on two threads give what serial runs give.
    val prompts = listOf("The sun is a", "My favourite programming language is")
    val sampled = GenerateParams(maxTokens = 16, temperature = 0.7f, seed = 11)
    fun one(p: String): String = engine.createSession(SessionParams(contextLength = 128)).use { s ->
        val sb = StringBuilder()
        s.generate(p, sampled) { sb.append(it); true }
        sb.toString()
    }
    val serial = prompts.map { one(it) }
    val parallel = arrayOfNulls<String>(2)
    prompts.mapIndexed { i, p -> thread { parallel[i] = one(p) } }.forEach { it.join() }
    check(serial == parallel.toList()) { "serial $serial vs parallel ${parallel.toList()}" }

    // Save / restore / copy reproduce the continuation; bad blobs are refused.
    engine.createSession(SessionParams(contextLength = 128)).use { a ->
        a.generate("Once upon a time, in a small village,", GenerateParams.greedy(6))
        val blob = a.saveState()
        val c = a.copy()
        val want = StringBuilder().also { sb -> a.generate("", GenerateParams.greedy(12)) { sb.append(it); true } }.toString()
        engine.createSession(SessionParams(contextLength = 256)).use { b ->
            b.restoreState(blob)
            val got = StringBuilder().also { sb -> b.generate("", GenerateParams.greedy(12)) { sb.append(it); true } }.toString()
            check(want.isNotEmpty() && got == want) { "restored \"$got\" vs \"$want\"" }
            val before = b.usage
            val bad = blob.copyOf().also { it[it.size / 2] = (it[it.size / 2].toInt() xor 0x40).toByte() }
            expectThrows<SuanpanException.InvalidArgument>("corrupt blob") { b.restoreState(bad) }
                ?.let { check(it.message!!.contains("corrupt")) { "message: ${it.message}" } }
            expectThrows<SuanpanException.InvalidArgument>("short blob") { b.restoreState(blob.copyOf(17)) }
            check(b.usage == before) { "context kept" }
        }
        c.use {
            val cloned = StringBuilder().also { sb -> c.generate("", GenerateParams.greedy(12)) { sb.append(it); true } }.toString()
            check(cloned == want) { "copy \"$cloned\" vs \"$want\"" }
        }
        engine.createSession(SessionParams(contextLength = 8)).use { small ->
            expectThrows<SuanpanException.ContextFull>("restore into a small context") { small.restoreState(blob) }
        }
    }

    // Structured output: a regex, a JSON schema; a bad regex is a clear InvalidArgument.
    engine.createSession(SessionParams(contextLength = 256)).use { s ->
        val digits = StringBuilder()
        s.generate("My PIN is", GenerateParams.greedy(16).copy(constraint = Constraint.Regex("[0-9]{4}"))) { digits.append(it); true }
        check(Regex("[0-9]{4}").matches(digits)) { "regex output \"$digits\"" }
        s.reset()
        val json = StringBuilder()
        val schema = """{"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false}"""
        s.generate("Is water wet?", GenerateParams.greedy(16).copy(constraint = Constraint.JsonSchema(schema))) { json.append(it); true }
        check(json.toString() == "{\"ok\":true}" || json.toString() == "{\"ok\":false}") { "schema output $json" }
        s.reset()
        expectThrows<SuanpanException.InvalidArgument>("bad regex") {
            s.generate("Hi", GenerateParams.greedy(4).copy(constraint = Constraint.Regex("(unclosed")))
        }?.let { check(it.message!!.contains("regex")) { "message: ${it.message}" } }
    }

    // Chat through the template.
    engine.createSession(SessionParams(contextLength = 512)).use { s ->
        val reply = StringBuilder()
        val r = s.chat(listOf(ChatMessage("user", "What is the capital of France?")), GenerateParams.greedy(24)) { reply.append(it); true }
        check(reply.isNotEmpty() && r.promptTokens > 10) { "chat: \"$reply\" $r" }
        println("chat reply: $reply")
    }

    // A chat template that asks for 206 GB while rendering (issue 18): OutOfMemory, not an
    // aborted JVM; the session generates afterwards.
    if (args.size >= 3) {
        SuanpanEngine.load(args[2], EngineParams(threads = 2)).use { hostile ->
            hostile.createSession(SessionParams(contextLength = 128)).use { s ->
                expectThrows<SuanpanException.OutOfMemory>("hostile template") {
                    s.chat(listOf(ChatMessage("user", "hi")), GenerateParams.greedy(2))
                }?.let { check(it.message!!.contains("memory")) { "message: ${it.message}" } }
                check(s.generate("Hi", GenerateParams.greedy(2)).generatedTokens == 2) { "after OOM" }
            }
        }
    }

    // A panic inside the native library arrives as a Kotlin exception; the JVM lives on.
    expectThrows<SuanpanException.Internal>("internal error") { SuanpanEngine.debugProvokeInternalError() }
        ?.let { check(it.message!!.contains("deliberate panic")) { "message: ${it.message}" } }

    // Closed objects: a clear exception, not a crash. Sessions outlive the engine.
    val s = engine.createSession(SessionParams(contextLength = 64))
    engine.close()
    engine.close()
    expectThrows<SuanpanException.InvalidArgument>("closed engine") { engine.createSession() }
    check(s.generate("Hi", GenerateParams.greedy(2)).generatedTokens == 2) { "session outlives engine" }
    s.close()
    expectThrows<SuanpanException.InvalidArgument>("closed session") { s.generate("Hi") }

    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
