// The suanpan web demo: pick a .gguf (or give a URL), watch it load, chat with streamed
// replies, stop them. `?backend=webgpu|cpu|auto` (default auto) picks the backend; the
// header shows the one in use (the WebGPU adapter, or wasm CPU and why). `maxBinding=BYTES`
// caps the adapter's storage-binding limit (a smaller device's limit, for tests).
// Test mode (used by scripts/test-web):
//   ?model=URL&prompt=TEXT&n=N&temp=0&backend=webgpu|cpu&auto=1
// loads the model, completes TEXT with N tokens (as `suanpan run -p TEXT -n N --temp 0`)
// into #output and sets data-done="1" on it, with data-tokens (ids), data-top2 (the two
// best logits of each draw), data-tps and data-backend-kind; or data-error with the
// message.

import { init, loadModel } from "./suanpan.js";

const $ = (id) => document.getElementById(id);
const output = $("output");
const params = new URLSearchParams(location.search);

let model = null;
let session = null;
let history = [];
let abort = null;

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

function fail(err) {
  const msg = err && err.message ? err.message : String(err);
  console.error(err);
  setStatus(msg, true);
  output.dataset.error = msg;
  if (!model) $("progress").value = 0;
  setBusy(false);
}

window.addEventListener("error", (e) => fail(e.error || e.message));
window.addEventListener("unhandledrejection", (e) => fail(e.reason));

/** Which backend runs: the WebGPU adapter, or wasm CPU and why. */
function backendLine() {
  const info = model.backendInfo;
  if (info.kind === "webgpu") {
    const a = info.adapter;
    const b = a.browser;
    const name = b
      ? [b.vendor, b.architecture, b.description].filter(Boolean).join(" ") +
        (b.fallback ? " (software fallback adapter)" : "")
      : a.name;
    const f16 = a.shader_f16 ? "shader-f16" : "no shader-f16 (not needed)";
    const subgroups = a.subgroups || Boolean(b && b.features.includes("subgroups"));
    const mb = (x) => (x / 2 ** 20).toFixed(0);
    return (
      `WebGPU: ${name || "unnamed adapter"} (${f16}, subgroups ${subgroups ? "yes" : "no"} (unused), ` +
      `bindings up to ${mb(a.max_binding)} MiB; ${mb(a.weight_bytes)} MiB of weights) · ${info.why}`
    );
  }
  const why = [info.why];
  if (!("gpu" in navigator)) why.push("this browser has no navigator.gpu");
  why.push(
    self.crossOriginIsolated
      ? "one thread (wasm threads not built yet)"
      : "one thread (the page is not cross-origin isolated)",
  );
  return `wasm CPU: ${model.backend} (${why.join("; ")})`;
}

function setBusy(busy) {
  $("send").disabled = busy || !model;
  $("input").disabled = !model;
  $("stop").disabled = !busy;
  $("clear").disabled = busy || !model;
  $("load-url").disabled = busy;
  $("file").disabled = busy;
}

async function load(source, label) {
  setBusy(true);
  $("progress").value = 0;
  if (model) {
    session?.free();
    model.free();
    model = session = null;
  }
  setStatus(`Loading ${label}…`);
  const t0 = performance.now();
  model = await loadModel(source, {
    backend: params.get("backend") ?? "auto",
    maxBinding: params.get("maxBinding") ?? undefined,
    onProgress: (got, total) => {
      if (total) $("progress").value = got / total;
      const mb = (x) => (x / 1e6).toFixed(1);
      setStatus(`Loading ${label}: ${mb(got)}${total ? ` / ${mb(total)}` : ""} MB`);
    },
  });
  $("progress").value = 1;
  session = model.createSession({ nCtx: 2048 });
  history = [];
  $("log").textContent = "";
  const secs = ((performance.now() - t0) / 1e3).toFixed(1);
  const on = model.backendInfo.kind === "webgpu" ? "WebGPU" : "wasm CPU";
  setStatus(`Loaded ${label} (${model.info.arch}, ${(model.info.n_params / 1e6).toFixed(0)} M params) on ${on} in ${secs} s.`);
  $("backend").textContent = `backend: ${backendLine()}`;
  setBusy(false);
}

function showSpeed(s) {
  const on = model.backendInfo.kind === "webgpu" ? "WebGPU" : "wasm CPU";
  $("speed").textContent =
    `${on}: prompt ${s.prompt_tokens} tok ${s.prompt_tps.toFixed(1)} tok/s · ` +
    `decode ${s.generated_tokens} tok ${s.decode_tps.toFixed(1)} tok/s`;
}

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role;
  const body = document.createElement("span");
  body.textContent = text;
  div.append(who, body);
  $("log").append(div);
  $("log").scrollTop = $("log").scrollHeight;
  return body;
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const body = addMessage("assistant", "");
  abort = new AbortController();
  setBusy(true);
  let reply = "";
  try {
    const opts = {
      maxTokens: Number($("max-tokens").value),
      temperature: Number($("temperature").value),
      signal: abort.signal,
    };
    for await (const piece of session.chat(history, opts)) {
      reply += piece;
      body.textContent = reply;
      $("log").scrollTop = $("log").scrollHeight;
    }
  } catch (e) {
    if (e.name !== "AbortError") {
      body.parentElement.classList.add("error");
      body.textContent = reply + `\n[error: ${e.message}]`;
    }
  } finally {
    history.push({ role: "assistant", content: reply });
    showSpeed(session.stats);
    abort = null;
    setBusy(false);
  }
}

/** Test mode: a plain completion, results in #output's data attributes. */
async function runTest() {
  const url = params.get("model");
  const prompt = params.get("prompt") ?? "";
  await load(url, url);
  const opts = {
    maxTokens: Number(params.get("n") ?? 16),
    temperature: Number(params.get("temp") ?? 0),
  };
  output.textContent = "";
  setBusy(true);
  for await (const piece of session.generate(prompt, opts)) output.textContent += piece;
  setBusy(false);
  const s = session.stats;
  showSpeed(s);
  output.dataset.tokens = JSON.stringify(session.tokens);
  output.dataset.top2 = JSON.stringify(session.top2);
  output.dataset.tps = String(s.decode_tps);
  output.dataset.promptTps = String(s.prompt_tps);
  output.dataset.backend = model.backend;
  output.dataset.backendKind = model.backendInfo.kind;
  output.dataset.adapter = JSON.stringify(model.backendInfo.adapter ?? null);
  output.dataset.done = "1";
}

$("file").addEventListener("change", () => {
  const f = $("file").files[0];
  if (f) load(f, f.name).catch(fail);
});
$("load-url").addEventListener("click", () => {
  const u = $("url").value.trim();
  if (u) load(u, u).catch(fail);
});
$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("input").value.trim();
  if (!text || !session) return;
  $("input").value = "";
  send(text).catch(fail);
});
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("send-form").requestSubmit();
  }
});
$("stop").addEventListener("click", () => abort?.abort());
$("clear").addEventListener("click", () => {
  history = [];
  session.reset();
  $("log").textContent = "";
});

init()
  .then(() => {
    if (params.get("model")) $("url").value = params.get("model");
    if (params.get("auto") === "1" && params.get("model")) return runTest();
  })
  .catch(fail);
