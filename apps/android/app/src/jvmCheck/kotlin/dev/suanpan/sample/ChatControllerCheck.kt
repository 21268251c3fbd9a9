package dev.suanpan.sample

import io.suanpan.GenerateParams
import io.suanpan.SessionParams
import kotlinx.coroutines.CoroutineScope
import kotlinx.coroutines.SupervisorJob
import kotlinx.coroutines.asCoroutineDispatcher
import kotlinx.coroutines.cancel
import kotlinx.coroutines.flow.first
import kotlinx.coroutines.runBlocking
import kotlinx.coroutines.withContext
import kotlinx.coroutines.withTimeout
import java.util.concurrent.Executors
import kotlin.system.exitProcess

/**
 * The sample's ChatController on the desktop JVM, against the Linux build of
 * libsuanpan_jni and the real model, with a single-thread dispatcher standing in for the
 * Android main thread. Run by bindings/jni/tests/jvm.rs: `main MODEL`, and `main --no-library` with
 * -Dsuanpan.library.path pointing nowhere. Not part of the
 * Gradle build (src/jvmCheck is no Android source set). Prints "N passed, M failed".
 */
private var passed = 0
private var failed = 0

private fun check(cond: Boolean, what: () -> String) {
    if (cond) passed++ else {
        failed++
        System.err.println("FAIL: ${what()}")
    }
}

private val mainThread = Executors.newSingleThreadExecutor { r -> Thread(r, "main-standin") }
private val main = mainThread.asCoroutineDispatcher()

private fun <T> onMain(block: () -> T): T = runBlocking { withContext(main) { block() } }

private fun ChatController.await(timeoutMs: Long = 120_000, done: (ChatState) -> Boolean): ChatState =
    runBlocking { withTimeout(timeoutMs) { state.first(done) } }

/** Wait for the load to end either way (ready, or a message in the status line). */
private fun ChatController.awaitLoad(): ChatState = await { !it.status.startsWith("Loading") }

private fun ChatController.loadOrFail() {
    load()
    val s = awaitLoad()
    if (!s.ready) {
        System.err.println("FAIL: load: $s")
        exitProcess(1)
    }
}

private fun replies(s: ChatState) = s.turns.filter { it.kind == Turn.Kind.MODEL }.map { it.text }

fun main(args: Array<String>) {
    val scope = CoroutineScope(SupervisorJob() + main)
    if (args[0] == "--no-library") {
        // Run with -Dsuanpan.library.path pointing nowhere: a message, not a crash.
        ChatController(scope, "model.gguf").use { c ->
            c.load()
            val s = c.awaitLoad()
            check(!s.ready && s.status.startsWith("The native library did not load")) { "no library: $s" }
        }
        finish()
    }
    val modelPath = args[0]

    // A missing model is a message, not a crash.
    ChatController(scope, "/nonexistent/model.gguf").use { c ->
        c.load()
        val s = c.awaitLoad()
        check(!s.ready && s.status.startsWith("Could not load /nonexistent/model.gguf")) { "missing model: $s" }
        onMain { c.send("Hello") }
        check(c.state.value.turns.isEmpty()) { "send before ready: ${c.state.value}" }
    }

    ChatController(scope, modelPath, SessionParams(contextLength = 1024), GenerateParams.greedy(24)).use { c ->
        // Load with progress.
        val fractions = HashSet<Float>()
        val watcher = Thread {
            while (c.state.value.status.startsWith("Loading")) {
                fractions += c.state.value.loadFraction
                Thread.sleep(1)
            }
        }.apply { start() }
        c.load()
        val loaded = c.awaitLoad()
        watcher.join()
        check(loaded.ready && loaded.loadFraction == 1f && loaded.status == "Ready") { "load: $loaded" }
        check(fractions.size >= 2) { "load progress seen: $fractions" }

        // Two turns through the chat template; the second reuses the first.
        onMain { c.send("What is the capital of France?") }
        check(c.state.value.generating) { "generating after send" }
        var s = c.await { !it.generating }
        check(s.status == "Ready" && replies(s).size == 1 && replies(s)[0].isNotBlank()) { "first reply: $s" }
        println("reply 1: ${replies(s)[0]}")
        onMain { c.send("And of Germany?") }
        s = c.await { !it.generating }
        check(s.status == "Ready" && replies(s).size == 2 && replies(s)[1].isNotBlank()) { "second reply: $s" }
        println("reply 2: ${replies(s)[1]}")
    }

    // Stop mid-reply: the partial reply stays, the session is free right after.
    ChatController(scope, modelPath, SessionParams(contextLength = 1024), GenerateParams.greedy(400)).use { c ->
        c.loadOrFail()
        onMain { c.send("Count from one to two hundred in words.") }
        c.await { st -> st.turns.lastOrNull()?.let { it.kind == Turn.Kind.MODEL && it.text.length > 8 } == true }
        onMain { c.stop() }
        var s = c.await(30_000) { !it.generating }
        check(s.status == "Stopped" && replies(s).single().length in 9..400) { "stopped: $s" }
        onMain { c.send("Thanks.") }
        s = c.await { !it.generating }
        check(s.status == "Ready" && s.turns.none { it.kind == Turn.Kind.NOTE }) { "after stop: $s" }
    }

    // A full context is a note in the transcript; the next message starts afresh.
    ChatController(scope, modelPath, SessionParams(contextLength = 64), GenerateParams.greedy(200)).use { c ->
        c.loadOrFail()
        onMain { c.send("Tell me a long story about a dragon.") }
        val s = c.await { !it.generating }
        check(s.status == "Context full" && s.turns.last().kind == Turn.Kind.NOTE) { "context full: $s" }
    }

    // Closing while a reply streams cancels it and returns.
    ChatController(scope, modelPath, SessionParams(contextLength = 1024), GenerateParams.greedy(400)).let { c ->
        c.loadOrFail()
        onMain { c.send("Count from one to two hundred in words.") }
        c.await { st -> st.turns.lastOrNull()?.text?.isNotEmpty() == true }
        val t0 = System.nanoTime()
        c.close()
        check(System.nanoTime() - t0 < 10_000_000_000) { "close took too long" }
    }

    // Closing during the load cancels it (or frees what was loaded).
    ChatController(scope, modelPath).let { c ->
        c.load()
        c.close()
        Thread.sleep(200)
        check(!c.state.value.ready) { "ready after close: ${c.state.value}" }
    }

    scope.cancel()
    finish()
}

private fun finish(): Nothing {
    mainThread.shutdown()
    println("$passed passed, $failed failed")
    exitProcess(if (failed == 0) 0 else 1)
}
