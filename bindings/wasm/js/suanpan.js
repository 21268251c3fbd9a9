// suanpan in the browser: the JS API over the wasm-bindgen module (suanpan_wasm.js, built
// by scripts/build-web with `wasm-bindgen --target web`).
//
//   import { init, loadModel } from "./suanpan.js";
//   await init();                                   // fetches suanpan_wasm_bg.wasm
//   const model = await loadModel(urlOrFileOrBytes, { backend: "auto", onProgress: (got, total) => … });
//   model.backendInfo                               // { kind: "webgpu"|"cpu", name, why, adapter }
//                                                   // adapter.browser: GPUAdapterInfo (vendor, architecture, …)
//   const session = model.createSession({ nCtx: 2048 });
//   for await (const piece of session.generate("Once upon a time", { maxTokens: 64 }))
//     out.textContent += piece;                     // whole UTF-8 pieces
//   for await (const piece of session.chat([{ role: "user", content: "Hi" }], { signal }))
//     …                                             // AbortController.abort() stops it
//
// Errors (bad file, no WebGPU adapter, a model over the adapter's limits, context full, …)
// are thrown as `Error`s with the runtime's message. Everything runs on the calling
// thread, one token per task: the generators yield to the event loop between tokens so
// the page stays responsive and an abort is seen in time. On WebGPU each token's pass is
// submitted and its logits awaited (the browser maps results only between tasks).

import wasmInit, { Model as RawModel, ModelLoader } from "./suanpan_wasm.js";

let ready = null;

/** Load and instantiate the WebAssembly module once (`wasmUrl` optional). */
export function init(wasmUrl) {
  if (!ready) ready = wasmInit(wasmUrl ? { module_or_path: wasmUrl } : undefined);
  return ready;
}

/**
 * Give the event loop a turn: a new macrotask (a MessageChannel message, without
 * setTimeout's 4 ms clamp), so input (a Stop click) and painting run before the next
 * token. Not `scheduler.yield()`: its continuations are prioritized over other tasks.
 */
function yieldToEventLoop() {
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => resolve();
    ch.port2.postMessage(null);
  });
}

function throwIfAborted(signal) {
  if (signal && signal.aborted) {
    throw signal.reason ?? new DOMException("The generation was aborted", "AbortError");
  }
}

/** Read a stream into the loader, reporting progress. */
async function pump(reader, loader, total, onProgress, signal) {
  let got = 0;
  for (;;) {
    throwIfAborted(signal);
    const { done, value } = await reader.read();
    if (done) break;
    loader.push(value);
    got += value.length;
    if (onProgress) onProgress(got, total);
  }
  return got;
}

/**
 * Load a GGUF model from a URL (string or URL), a `Blob`/`File`, an `ArrayBuffer` or a
 * `Uint8Array`. Options: `backend` ("webgpu": the GPU backend on the page's WebGPU adapter,
 * an error without one or when the model exceeds its limits; "cpu": wasm CPU; "auto", the
 * default: WebGPU when it has an adapter that fits the model, else the CPU with the reason
 * in `model.backendInfo.why`), `maxBinding` (cap the adapter's storage-binding limit, bytes:
 * check a model against a smaller device), `onProgress(bytesLoaded, bytesTotal)` (total 0
 * when unknown), `signal` (AbortSignal) to cancel the download.
 */
export async function loadModel(source, { backend = "auto", maxBinding, onProgress, signal } = {}) {
  await init();
  let loader;
  if (typeof source === "string" || source instanceof URL) {
    const resp = await fetch(source, { signal });
    if (!resp.ok) throw new Error(`cannot fetch ${source}: HTTP ${resp.status} ${resp.statusText}`);
    const total = Number(resp.headers.get("content-length") || 0);
    loader = new ModelLoader(total);
    await pump(resp.body.getReader(), loader, total, onProgress, signal);
  } else if (typeof Blob !== "undefined" && source instanceof Blob) {
    loader = new ModelLoader(source.size);
    await pump(source.stream().getReader(), loader, source.size, onProgress, signal);
  } else if (source instanceof ArrayBuffer || ArrayBuffer.isView(source)) {
    const bytes = source instanceof ArrayBuffer
      ? new Uint8Array(source)
      : new Uint8Array(source.buffer, source.byteOffset, source.byteLength);
    loader = new ModelLoader(bytes.length);
    // In pieces, so progress moves and no second whole copy is made at once.
    const step = 16 << 20;
    for (let i = 0; i < bytes.length; i += step) {
      throwIfAborted(signal);
      loader.push(bytes.subarray(i, i + step));
      if (onProgress) onProgress(Math.min(i + step, bytes.length), bytes.length);
      await yieldToEventLoop();
    }
  } else {
    throw new TypeError("loadModel: give a URL, a File/Blob, an ArrayBuffer or a Uint8Array");
  }
  await yieldToEventLoop(); // let the page paint "100%" before the parse blocks it
  const opts = { backend };
  if (maxBinding !== undefined && maxBinding !== null) opts.maxBinding = Number(maxBinding);
  const model = new Model(await loader.finishOn(JSON.stringify(opts)));
  if (model.raw.backendInfo().includes('"kind":"webgpu"')) model.browserAdapter = await describeAdapter();
  return model;
}

/**
 * The page's WebGPU adapter as the browser describes it (`GPUAdapterInfo`: vendor,
 * architecture, device, description, fallback), which says more than wgpu passes on
 * (SwiftShader has no description). `null` without WebGPU.
 */
async function describeAdapter() {
  try {
    const a = await navigator.gpu?.requestAdapter();
    if (!a) return null;
    const i = a.info ?? {};
    return {
      vendor: i.vendor ?? "",
      architecture: i.architecture ?? "",
      device: i.device ?? "",
      description: i.description ?? "",
      fallback: Boolean(i.isFallbackAdapter ?? a.isFallbackAdapter),
      features: [...a.features].sort(),
    };
  } catch {
    return null;
  }
}

/** A loaded model. */
export class Model {
  constructor(raw) {
    this.raw = raw;
    this.info = JSON.parse(raw.describe());
  }
  /** E.g. `cpu (scalar, lut simd128, 1 threads)` or `gpu (SwiftShader …, BrowserWebGpu, …)`. */
  get backend() {
    return this.raw.backendName();
  }
  /**
   * The backend in use: `{ kind: "webgpu"|"cpu", name, why, adapter }`; `why` is what was
   * asked for or why WebGPU was not taken; `adapter` (WebGPU only): name, shader_f16,
   * subgroups, max_binding, max_buffer, weight_bytes, and `browser` (the browser's
   * GPUAdapterInfo: vendor, architecture, device, description, fallback, features).
   */
  get backendInfo() {
    const info = JSON.parse(this.raw.backendInfo());
    if (info.adapter && this.browserAdapter) info.adapter.browser = this.browserAdapter;
    return info;
  }
  /** Token ids of `text` (BOS added when the model wants it). */
  tokenize(text) {
    return Array.from(this.raw.tokenize(text));
  }
  /** The conversation rendered with the model's chat template. */
  applyChatTemplate(messages) {
    return this.raw.applyChatTemplate(JSON.stringify(messages));
  }
  /** A new session; `nCtx` tokens of context (0: the model's, capped at 4096). */
  createSession({ nCtx = 2048 } = {}) {
    return new Session(this.raw.createSession(nCtx));
  }
  free() {
    this.raw.free();
  }
}

/** Sampling options: maxTokens, temperature (0 = greedy), topK, topP, minP, repeatPenalty, seed. */
function optionsJson(o) {
  const keys = ["maxTokens", "temperature", "topK", "topP", "minP", "repeatPenalty", "seed"];
  const out = {};
  for (const k of keys) if (o[k] !== undefined && o[k] !== null) out[k] = Number(o[k]);
  return JSON.stringify(out);
}

/** A conversation (KV cache). One generation at a time. */
export class Session {
  constructor(raw) {
    this.raw = raw;
    this.busy = false;
  }

  /** Complete `prompt` from an empty context: an async iterator of text pieces. */
  generate(prompt, options = {}) {
    return this.#run(() => this.raw.startPrompt(prompt, optionsJson(options)), options);
  }

  /** The assistant's reply to `messages` (the whole conversation each turn). */
  chat(messages, options = {}) {
    return this.#run(
      () => this.raw.startChat(JSON.stringify(messages), optionsJson(options)),
      options,
    );
  }

  async *#run(start, { signal } = {}) {
    if (this.busy) throw new Error("this session is already generating");
    this.busy = true;
    try {
      throwIfAborted(signal);
      await yieldToEventLoop();
      await start();
      for (;;) {
        await yieldToEventLoop();
        throwIfAborted(signal);
        const piece = await this.raw.step();
        if (piece === undefined) return;
        if (piece.length) yield piece;
      }
    } finally {
      this.busy = false;
    }
  }

  /** Ids of the tokens of the last generation. */
  get tokens() {
    return Array.from(this.raw.generated());
  }
  /** Per draw of the last generation, the two best candidates: `[[id, logit], [id, logit]]`. */
  get top2() {
    const f = this.raw.top2();
    const out = [];
    for (let i = 0; i + 3 < f.length; i += 4) out.push([[f[i], f[i + 1]], [f[i + 2], f[i + 3]]]);
    return out;
  }
  /** prompt_tokens, prompt_ms, prompt_tps, generated_tokens, decode_ms, decode_tps, stop. */
  get stats() {
    return JSON.parse(this.raw.stats());
  }
  reset() {
    this.raw.reset();
  }
  free() {
    this.raw.free();
  }
}
