// Drives the built web demo in headless Chromium (scripts/test-web runs it):
//   node run.mjs BASE_URL MODEL_URL PROMPT N NATIVE_JSON ARTIFACTS_DIR [tokens-only]
// 1. ?model=…&prompt=…&n=N&temp=0&backend=B&auto=1, for B = cpu (wasm CPU) and webgpu (the
//    GPU backend on the browser's WebGPU adapter: SwiftShader in headless CI): N greedy
//    tokens must equal the native CPU backend's (NATIVE_JSON: `suanpan run --json` output,
//    its `done` event), except at a near tie (the page's draw's two best logits under 0.1
//    apart, the native token being the runner-up): from there on the texts may differ and
//    are not compared. The page must say it ran on the backend asked for.
// 2. The chat UI: a reply through the chat template, and Stop ending a long one.
// 3. A file that is not GGUF: the page shows the runtime's error in data-error.
// 4. A model too large for the adapter: backend=webgpu with the adapter's storage-binding
//    limit capped at 1 MiB by the page (maxBinding, the runtime's GpuOptions::max_binding:
//    the same refusal a device with that limit gives) shows the runtime's error, naming
//    the tensor and the limit, and the tab stays usable.
// Saves screenshots into ARTIFACTS_DIR and prints the tok/s of each backend.
// BACKENDS (env, default "cpu,webgpu") limits step 1.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.PUPPETEER_DIR + "/package.json");
const puppeteer = require("puppeteer-core");

const [base, modelUrl, prompt, n, nativeJson, artifacts, mode] = process.argv.slice(2);
const full = mode !== "tokens-only";
const TIE = 0.1;
const backends = (process.env.BACKENDS || "cpu,webgpu").split(",").filter(Boolean);
const tag = mode === "tokens-only" ? "-tokens" : "";

function nativeTokens(path) {
  const lines = readFileSync(path, "utf8").split("\n").filter((l) => l.startsWith("{"));
  const done = lines.map((l) => JSON.parse(l)).find((e) => e.event === "done");
  if (!done) throw new Error(`no "done" event in ${path}`);
  return done.tokens;
}

/** Open `url` and wait for #output's data-done or data-error. */
async function runPage(browser, url, timeoutMs) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1000, height: 900 });
  const logs = [];
  page.on("console", (m) => logs.push(`[console.${m.type()}] ${m.text()}`));
  page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
  await page.goto(url, { waitUntil: "load" });
  try {
    await page.waitForFunction(
      () => {
        const o = document.getElementById("output");
        return o && (o.dataset.done === "1" || o.dataset.error !== undefined);
      },
      { timeout: timeoutMs, polling: 250 },
    );
  } catch (e) {
    console.error(logs.join("\n"));
    throw new Error(`${url}: no result within ${timeoutMs / 1e3} s (${e.message})`);
  }
  const result = await page.$eval("#output", (o) => ({ ...o.dataset, text: o.textContent }));
  return { page, result, logs };
}

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // waitForFunction is one protocol call: it must outlive the slowest page (WebGPU on
  // SwiftShader takes seconds per token).
  protocolTimeout: 1200e3,
  args: [
    "--headless=new",
    "--no-sandbox",
    "--enable-unsafe-webgpu",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-dev-shm-usage",
    ...(process.env.CHROMIUM_FLAGS || "").split(" ").filter(Boolean),
  ],
});

/** N greedy tokens of the page on `backend`, compared with the native CPU backend's. */
async function greedy(backend) {
  const q = new URLSearchParams({ model: modelUrl, prompt, n, temp: "0", backend, auto: "1" });
  const r = await runPage(browser, `${base}/index.html?${q}`, 600e3);
  const { result, logs } = r;
  if (result.error !== undefined) {
    console.error(logs.join("\n"));
    throw new Error(`backend=${backend}: the page reported an error: ${result.error}`);
  }
  if (result.backendKind !== backend) {
    throw new Error(`backend=${backend} asked for, the page ran on ${result.backendKind} (${result.backend})`);
  }
  const got = JSON.parse(result.tokens);
  const top2 = JSON.parse(result.top2);
  const native = nativeTokens(nativeJson);
  const who = backend === "cpu" ? "wasm CPU" : "WebGPU";
  console.log(`[test-web] ${who} backend: ${result.backend}`);
  if (backend === "webgpu") console.log(`[test-web] WebGPU adapter: ${result.adapter}`);
  console.log(`[test-web] ${who} text: ${JSON.stringify(result.text)}`);
  console.log(`[test-web] ${who} tokens: ${got.join(" ")}`);
  console.log(`[test-web] native tokens: ${native.join(" ")}`);
  if (got.length !== Number(n) || native.length !== Number(n)) {
    throw new Error(`expected ${n} tokens each: ${who} ${got.length}, native ${native.length}`);
  }
  let same = got.length;
  for (let i = 0; i < got.length; i++) {
    if (got[i] === native[i]) continue;
    const [[a, la], [b, lb]] = top2[i];
    const tie = a === got[i] && b === native[i] && la - lb < TIE;
    if (!tie) {
      throw new Error(
        `token ${i}: ${who} ${got[i]}, native ${native[i]}; ${who}'s two best ${a} (${la}) and ` +
          `${b} (${lb}): not a near tie (< ${TIE})`,
      );
    }
    console.log(`[test-web] token ${i}: near tie (${la} vs ${lb}); later tokens not compared`);
    same = i;
    break;
  }
  console.log(
    `[test-web] OK: ${who}: ${same} of ${n} greedy tokens equal${same < Number(n) ? ", then a near tie" : ""}; ` +
      `decode ${Number(result.tps).toFixed(2)} tok/s, prompt ${Number(result.promptTps).toFixed(2)} tok/s`,
  );
  await r.page.screenshot({ path: `${artifacts}/web-demo-${backend}${tag}.png`, fullPage: true });
  return r;
}
let failed = false;
try {
  // 1. Greedy tokens on each backend vs native CPU; the chat checks use the first page.
  let page = null;
  for (const b of backends) {
    const r = await greedy(b);
    if (page) await r.page.close();
    else page = r.page;
  }
  if (!full) {
    await page.close();
    throw "done";
  }

  // 2. The chat UI: a greedy reply through the chat template, then a long reply stopped
  //    with the Stop button (an AbortSignal) after its first pieces.
  const bodies = ".msg.assistant > span:last-child";
  await page.evaluate(() => {
    document.getElementById("temperature").value = "0";
    document.getElementById("max-tokens").value = "12";
  });
  await page.type("#input", "What is the capital of France?");
  await page.click("#send");
  await page.waitForFunction(
    (sel) => {
      const b = document.querySelectorAll(sel);
      return !document.getElementById("send").disabled && b.length === 1 && b[0].textContent.length > 0;
    },
    { timeout: 120e3, polling: 100 },
    bodies,
  );
  const reply = await page.$eval(bodies, (e) => e.textContent);
  console.log(`[test-web] chat reply: ${JSON.stringify(reply)}`);
  if (/error/.test(await page.$eval(".msg.assistant", (e) => e.className))) {
    throw new Error(`the chat reply is an error: ${reply}`);
  }
  await page.evaluate(() => (document.getElementById("max-tokens").value = "400"));
  await page.type("#input", "Tell me a long story about a dragon.");
  await page.click("#send");
  await page.waitForFunction(
    (sel) => (document.querySelectorAll(sel)[1]?.textContent.length ?? 0) > 20,
    { timeout: 120e3, polling: 50 },
    bodies,
  );
  await page.click("#stop");
  await page.waitForFunction(() => !document.getElementById("send").disabled, { timeout: 60e3 });
  const speed = await page.$eval("#speed", (e) => e.textContent);
  const got = Number((/decode (\d+) tok/.exec(speed) || [])[1]);
  if (!(got > 0 && got < 400)) throw new Error(`Stop did not stop the reply: ${speed}`);
  console.log(`[test-web] OK: chat replied; Stop ended a 400-token reply after ${got} tokens`);
  await page.screenshot({ path: `${artifacts}/web-demo.png`, fullPage: true });
  await page.close();

  // 3. Bad input: a file that is not GGUF (the page's own HTML) is an error on the page.
  const bad = new URLSearchParams({ model: `${base}/index.html`, prompt: "x", n: "4", temp: "0", backend: "cpu", auto: "1" });
  const r2 = await runPage(browser, `${base}/index.html?${bad}`, 60e3);
  await r2.page.screenshot({ path: `${artifacts}/web-demo-bad-input.png`, fullPage: true });
  if (r2.result.error === undefined || !/gguf|magic/i.test(r2.result.error)) {
    throw new Error(`a non-GGUF file gave ${JSON.stringify(r2.result)} (want data-error about GGUF)`);
  }
  // The tab is alive: the page still answers.
  const alive = await r2.page.evaluate(() => document.getElementById("load-url").disabled === false);
  if (!alive) throw new Error("after the bad file the page did not come back to a usable state");
  console.log(`[test-web] OK: a non-GGUF file shows the error: ${r2.result.error}`);
  await r2.page.close();

  // 4. A model over the adapter's storage-binding limit (capped at 1 MiB) on WebGPU.
  if (backends.includes("webgpu")) {
    const big = new URLSearchParams({ model: modelUrl, prompt: "x", n: "4", temp: "0", backend: "webgpu", maxBinding: String(1 << 20), auto: "1" });
    const r3 = await runPage(browser, `${base}/index.html?${big}`, 120e3);
    await r3.page.screenshot({ path: `${artifacts}/web-demo-too-large.png`, fullPage: true });
    if (r3.result.error === undefined || !/binds at most 1048576 bytes/.test(r3.result.error)) {
      throw new Error(`a model over the binding limit gave ${JSON.stringify(r3.result)} (want data-error about the limit)`);
    }
    const alive3 = await r3.page.evaluate(() => document.getElementById("load-url").disabled === false);
    if (!alive3) throw new Error("after the too-large model the page did not come back to a usable state");
    console.log(`[test-web] OK: a model too large for the adapter shows the error: ${r3.result.error}`);
  }
} catch (e) {
  if (e !== "done") {
    console.error(`[test-web] FAIL: ${e.message}`);
    failed = true;
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
