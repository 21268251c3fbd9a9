// One chat screen over the suanpan Kotlin API (package io.suanpan, bindings/jni).
// The logic (load, send, stop, errors) is ChatController.kt; this file is Android glue:
// a ViewModel that owns the controller and a Compose screen that draws its state.
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
import androidx.compose.foundation.lazy.items
import androidx.compose.foundation.lazy.rememberLazyListState
import androidx.compose.material3.Button
import androidx.compose.material3.LinearProgressIndicator
import androidx.compose.material3.MaterialTheme
import androidx.compose.material3.OutlinedTextField
import androidx.compose.material3.Surface
import androidx.compose.material3.Text
import androidx.compose.runtime.Composable
import androidx.compose.runtime.LaunchedEffect
import androidx.compose.runtime.collectAsState
import androidx.compose.runtime.getValue
import androidx.compose.runtime.mutableStateOf
import androidx.compose.runtime.remember
import androidx.compose.runtime.setValue
import androidx.compose.ui.Modifier
import androidx.compose.ui.unit.dp
import androidx.lifecycle.AndroidViewModel
import androidx.lifecycle.viewModelScope
import androidx.lifecycle.viewmodel.compose.viewModel
import java.io.File

class MainActivity : ComponentActivity() {
    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        setContent { MaterialTheme { Surface(Modifier.fillMaxSize()) { ChatScreen() } } }
    }
}

class ChatViewModel(app: Application) : AndroidViewModel(app) {
    /** Where `adb push` puts the model (README.md); no storage permission needed. */
    private val modelFile = File(app.getExternalFilesDir(null), "model.gguf")

    /** Survives rotation with the ViewModel; loads once. */
    val chat = ChatController(viewModelScope, modelFile.path).also { it.load() }

    override fun onCleared() {
        chat.close()
    }
}

@Composable
fun ChatScreen(vm: ChatViewModel = viewModel()) {
    val state by vm.chat.state.collectAsState()
    var input by remember { mutableStateOf("") }
    val list = rememberLazyListState()
    LaunchedEffect(state.turns.size, state.turns.lastOrNull()?.text?.length) {
        if (state.turns.isNotEmpty()) list.scrollToItem(state.turns.lastIndex)
    }
    Column(Modifier.fillMaxSize().imePadding().padding(12.dp)) {
        Text(state.status, style = MaterialTheme.typography.labelMedium)
        if (!state.ready && state.loadFraction < 1f) {
            LinearProgressIndicator(
                progress = { state.loadFraction },
                modifier = Modifier.fillMaxWidth().padding(vertical = 4.dp),
            )
        }
        LazyColumn(Modifier.weight(1f).fillMaxWidth(), state = list) {
            items(state.turns) { t ->
                val who = when (t.kind) {
                    Turn.Kind.USER -> "You: "
                    Turn.Kind.MODEL -> "Model: "
                    Turn.Kind.NOTE -> ""
                }
                Text(
                    text = who + t.text,
                    color = if (t.kind == Turn.Kind.NOTE) MaterialTheme.colorScheme.error else MaterialTheme.colorScheme.onSurface,
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
                enabled = state.ready,
            )
            if (state.generating) {
                Button(onClick = vm.chat::stop) { Text("Stop") }
            } else {
                Button(
                    onClick = { vm.chat.send(input); input = "" },
                    enabled = state.ready && input.isNotBlank(),
                ) { Text("Send") }
            }
        }
    }
}
