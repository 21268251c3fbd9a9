package io.suanpan

import kotlinx.coroutines.channels.awaitClose
import kotlinx.coroutines.channels.trySendBlocking
import kotlinx.coroutines.flow.Flow
import kotlinx.coroutines.flow.callbackFlow

/**
 * Generate as a cold [Flow] of text pieces (whole characters). Generation runs on its own
 * thread while the flow is collected; cancelling the collector (or `take(n)`) cancels
 * generation and waits for it to stop, so the session is free again when collection ends.
 * Errors arrive as [SuanpanException]s thrown from `collect`.
 */
fun SuanpanSession.generateAsync(prompt: String, params: GenerateParams = GenerateParams()): Flow<String> =
    callbackFlow {
        val worker = Thread({
            try {
                generate(prompt, params) { piece -> trySendBlocking(piece).isSuccess }
                close()
            } catch (t: Throwable) {
                close(t)
            }
        }, "suanpan-generate")
        worker.start()
        awaitClose {
            cancel()
            worker.join()
        }
    }

/** [SuanpanSession.chat] as a [Flow], like [generateAsync]. */
fun SuanpanSession.chatAsync(messages: List<ChatMessage>, params: GenerateParams = GenerateParams()): Flow<String> =
    callbackFlow {
        val worker = Thread({
            try {
                chat(messages, params) { piece -> trySendBlocking(piece).isSuccess }
                close()
            } catch (t: Throwable) {
                close(t)
            }
        }, "suanpan-chat")
        worker.start()
        awaitClose {
            cancel()
            worker.join()
        }
    }
