// One chat screen over the suanpan Kotlin API (bindings/jni).
//
// The API this is written against (DESIGN.md section 7 and issue 7; align here if the
// bindings' final names differ):
//   SuanpanEngine.load(path: String, onProgress: (Float) -> Unit): SuanpanEngine   AutoCloseable
//   engine.createSession(): SuanpanSession                                          AutoCloseable
//   session.generateAsync(prompt: String, params: GenerateParams): Flow<String>     cancel = cancel the collector
//   session.generate(prompt, params, listener: GenerateListener)                    blocking, listener streaming
//   sealed class SuanpanException : Exception
package dev.suanpan.sample

import android.app.Application
import android.os.Bundle
import androidx.activity.ComponentActivity
import androidx.activity.compose.setContent
import androidx.compose.foundation.layout.Arrangement
import androidx.compose.foundation.layout.Column
import androidx.compose.foundation.layout.Row
import androidx.compose.foundation.layout.fillMaxSize
import androidx.compose.foundation.layout.fillMaxWidth
import androidx.compose.foundation.layout.imePadding
import androidx.compose.foundation.layout.padding
import androidx.compose.foundation.lazy.LazyColumn
import androidx.compose.foundation.lazy.itemsIndexed
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.material3.Button
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableFloatStateOf
import androidx.compose.runtime.mutableStateListOf
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import androidx.lifecycle.viewmodel.compose.viewModel
import dev.suanpan.GenerateParams
import dev.suanpan.SuanpanEngine
import dev.suanpan.SuanpanException
import dev.suanpan.SuanpanSession
import java.io.File
import kotlinx.coroutines.Dispatchers
import kotlinx.coroutines.Job
import kotlinx.coroutines.flow.flowOn
import kotlinx.coroutines.launch
import kotlinx.coroutines.withContext

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent { MaterialTheme { Surface(Modifier.fillMaxSize()) { ChatScreen() } } }
    }
}

data class Turn(val fromUser: Boolean, val text: String)

class ChatViewModel(app: Application) : AndroidViewModel(app) {
    /** Where `adb push` puts the model (README.md); no storage permission needed. */
    val modelFile = File(app.getExternalFilesDir(null), "model.gguf")

    val turns = mutableStateListOf<Turn>()
    var status by mutableStateOf("Loading ${modelFile.name}…")
    var loadFraction by mutableFloatStateOf(0f)
    var ready by mutableStateOf(false)
    var generating by mutableStateOf(false)

    private var engine: SuanpanEngine? = null
    private var session: SuanpanSession? = null
    private var job: Job? = null

    init {
        viewModelScope.launch {
            try {
                val (e, s) = withContext(Dispatchers.IO) {
                    val e = SuanpanEngine.load(modelFile.path) { f -> loadFraction = f }
                    e to e.createSession()
                }
                engine = e
                session = s
                ready = true
                status = "Ready"
            } catch (e: SuanpanException) {
                // A missing or corrupt file is a message on screen, not a crash.
                status = "Could not load ${modelFile.path}: ${e.message}"
            }
        }
    }

    fun send(text: String) {
        val s = session ?: return
        if (text.isBlank() || generating) return
        turns += Turn(fromUser = true, text = text)
        turns += Turn(fromUser = false, text = "")
        val at = turns.lastIndex
        generating = true
        job = viewModelScope.launch {
            try {
                s.generateAsync(text, GenerateParams(maxTokens = 256))
                    .flowOn(Dispatchers.IO)
                    .collect { piece -> turns[at] = turns[at].copy(text = turns[at].text + piece) }
                status = "Ready"
            } catch (e: SuanpanException) {
                status = "Error: ${e.message}"
            } finally {
                generating = false
            }
        }
    }

    /** Cancelling the collector cancels the generation in the runtime. */
    fun stop() {
        job?.cancel()
        status = "Stopped"
    }

    override fun onCleared() {
        job?.cancel()
        session?.close()
        engine?.close()
    }
}

@Composable
fun ChatScreen(vm: ChatViewModel = viewModel()) {
    var input by remember { mutableStateOf("") }
    val list = rememberLazyListState()
    LaunchedEffect(vm.turns.size, vm.turns.lastOrNull()?.text?.length) {
        if (vm.turns.isNotEmpty()) list.scrollToItem(vm.turns.lastIndex)
    }
    Column(Modifier.fillMaxSize().imePadding().padding(12.dp)) {
        Text(vm.status, style = MaterialTheme.typography.labelMedium)
        if (!vm.ready && vm.loadFraction < 1f) {
            LinearProgressIndicator(
                progress = { vm.loadFraction },
                modifier = Modifier.fillMaxWidth().padding(vertical = 4.dp),
            )
        }
        LazyColumn(Modifier.weight(1f).fillMaxWidth(), state = list) {
            itemsIndexed(vm.turns) { _, t ->
                Text(
                    text = (if (t.fromUser) "You: " else "Model: ") + t.text,
                    modifier = Modifier.padding(vertical = 6.dp),
                )
            }
        }
        Row(horizontalArrangement = Arrangement.spacedBy(8.dp)) {
            OutlinedTextField(
                value = input,
                onValueChange = { input = it },
                modifier = Modifier.weight(1f),
                placeholder = { Text("Message") },
                enabled = vm.ready,
            )
            if (vm.generating) {
                Button(onClick = vm::stop) { Text("Stop") }
            } else {
                Button(
                    onClick = { vm.send(input.trim()); input = "" },
                    enabled = vm.ready && input.isNotBlank(),
                ) { Text("Send") }
            }
        }
    }
}
