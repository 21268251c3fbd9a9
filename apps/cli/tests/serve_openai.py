"""Drives `suanpan serve` with the official `openai` Python client (and raw HTTP where the
client cannot express the request). Run by apps/cli/tests/serve.rs:

    python3 serve_openai.py BASE_URL API_KEY SERVER_PID

Prints one `ok NAME ...` line per check and `cancelled-id ID` for the stream it abandons;
exits non-zero with a traceback on the first failure. Every loop is bounded.
"""

import json
import sys
import threading
import urllib.error
import urllib.request

import openai

BASE, KEY, PID = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=120)
MODEL = client.models.list().data[0].id
print("ok models", MODEL, flush=True)


def ask(text, **kw):
    kw.setdefault("max_tokens", 8)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": text}], **kw
    )


def raw(path, body, headers=None):
    """POST raw bytes; returns (status, parsed JSON or text)."""
    h = {"Content-Type": "application/json", "Authorization": "Bearer " + KEY}
    h.update(headers or {})
    req = urllib.request.Request(BASE + path, data=body, headers=h, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            status, text = r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def rss_kib():
    with open(f"/proc/{PID}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


# A chat completion, with usage.
r = ask("What is the capital of France?")
text = r.choices[0].message.content
assert isinstance(text, str) and text, r
assert r.choices[0].finish_reason in ("stop", "length"), r
u = r.usage
assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 8, u
assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
print("ok chat", repr(text), flush=True)

# The next turn of that conversation reuses the cached prefix (the earlier turn's tokens).
msgs = [{"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": text},
        {"role": "user", "content": "And of Spain?"}]
r2 = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4, temperature=0)
cached = r2.usage.prompt_tokens_details.cached_tokens
assert cached >= u.prompt_tokens, (cached, u.prompt_tokens)
assert r2.usage.prompt_tokens > cached, r2.usage
print("ok prefix-reuse", cached, "of", r2.usage.prompt_tokens, "cached", flush=True)

# The same request streamed gives the same text (greedy), in several chunks.
chunks = list(ask("What is the capital of France?", stream=True,
                  stream_options={"include_usage": True}))
streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
assert streamed == text, (streamed, text)
assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2, chunks
assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == u.completion_tokens
finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
assert finals == [r.choices[0].finish_reason], finals
print("ok stream", len(chunks), "chunks", flush=True)

# The raw event stream ends with `data: [DONE]`.
status, body = raw("/v1/completions",
                   json.dumps({"prompt": "Once upon a time", "max_tokens": 4,
                               "stream": True}).encode())
assert status == 200, (status, body)
events = [l for l in body.split("\n") if l.startswith("data: ")]
assert events[-1] == "data: [DONE]", events
assert all(json.loads(e[6:])["object"] == "text_completion" for e in events[:-1]), events
print("ok sse-done", len(events), "events", flush=True)

# Completions endpoint.
c = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5, temperature=0)
assert c.choices[0].text and c.usage.completion_tokens <= 5, c
print("ok completion", repr(c.choices[0].text), flush=True)

# json_schema output parses and validates, over varied prompts and seeds.
schema = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 24},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "mood": {"enum": ["happy", "sad", "calm"]},
    },
    "required": ["name", "age", "mood"],
    "additionalProperties": False,
}
for i, (prompt, temp) in enumerate([("Describe a person.", 0), ("Invent a pirate.", 0.8),
                                    ("Who is your friend?", 1.0)]):
    r = ask(prompt, max_tokens=64, temperature=temp, seed=i,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "person", "schema": schema,
                                             "strict": True}})
    assert r.choices[0].finish_reason == "stop", r
    v = json.loads(r.choices[0].message.content)
    assert set(v) == {"name", "age", "mood"}, v
    assert isinstance(v["name"], str) and len(v["name"]) <= 24, v
    assert isinstance(v["age"], int) and 0 <= v["age"] <= 150, v
    assert v["mood"] in ("happy", "sad", "calm"), v
    print("ok json_schema", json.dumps(v), flush=True)
r = ask("Say something.", max_tokens=48, response_format={"type": "json_object"})
if r.choices[0].finish_reason == "stop":
    assert isinstance(json.loads(r.choices[0].message.content), dict), r
print("ok json_object", repr(r.choices[0].message.content), flush=True)

# Four concurrent clients.
results, errors = [None] * 4, []


def worker(i):
    try:
        own = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=120)
        results[i] = own.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count to {i + 3}."}],
            max_tokens=6, temperature=0).choices[0].message.content
    except Exception as e:  # noqa: BLE001 - reported below
        errors.append(repr(e))


threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join(timeout=300)
assert not errors and all(results), (errors, results)
print("ok concurrent", results, flush=True)

# A client that disconnects mid-stream: its generation stops (the server logs it as
# cancelled; serve.rs checks), and the server keeps answering.
stream = ask("Write a very long story about a dragon.", max_tokens=400, temperature=0.7,
             stream=True)
seen = 0
cid = None
for chunk in stream:
    cid = chunk.id
    seen += 1
    if seen == 3:
        break
stream.close()
print("cancelled-id", cid, flush=True)
r = ask("Hello again.")
assert r.choices[0].message.content, r
print("ok after-disconnect", flush=True)

# Malformed JSON is a 400 with an OpenAI error body.
status, body = raw("/v1/chat/completions", b'{"model": "x", "messages": [')
assert status == 400 and body["error"]["type"] == "invalid_request_error", (status, body)
assert "JSON" in body["error"]["message"], body
print("ok malformed", flush=True)

# Missing or wrong API key: 401.
status, body = raw("/v1/chat/completions", b"{}", headers={"Authorization": ""})
assert status == 401 and body["error"]["code"] == "invalid_api_key", (status, body)
bad = openai.OpenAI(base_url=BASE + "/v1", api_key="wrong-" + KEY, max_retries=0)
try:
    bad.models.list()
    raise AssertionError("a wrong key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401
print("ok auth", flush=True)

# A prompt longer than the context: 400 with a clear message.
try:
    ask("word " * 3000)
    raise AssertionError("an over-long prompt was accepted")
except openai.BadRequestError as e:
    msg = e.body["message"] if isinstance(e.body, dict) else str(e)
    assert "maximum context length" in msg, msg
    assert e.code == "context_length_exceeded", e.code
print("ok too-long", flush=True)

# max_tokens above the server's limit: 400 naming the parameter.
try:
    ask("Hi", max_tokens=10**6)
    raise AssertionError("max_tokens above the limit was accepted")
except openai.BadRequestError as e:
    assert e.param == "max_tokens", e
print("ok max-tokens-bound", flush=True)

# Bounded load: 8 clients x 20 requests, no error, no memory growth past a warm-up round.
def load(rounds):
    errs = []

    def client_loop(i):
        own = openai.OpenAI(base_url=BASE + "/v1", api_key=KEY, max_retries=0, timeout=300)
        for j in range(rounds):
            try:
                r = own.chat.completions.create(
                    model=MODEL,
                    messages=[{"role": "user", "content": f"Client {i}, question {j}: hi"}],
                    max_tokens=3, temperature=0.5, seed=j)
                assert r.choices[0].message.content is not None
            except Exception as e:  # noqa: BLE001 - reported below
                errs.append(repr(e))

    ts = [threading.Thread(target=client_loop, args=(i,)) for i in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=900)
    assert not any(t.is_alive() for t in ts), "load clients did not finish"
    assert not errs, errs[:3]


load(2)
before = rss_kib()
load(20)
after = rss_kib()
print(f"ok load 160 requests, rss {before} KiB -> {after} KiB", flush=True)
assert after - before < 32 * 1024, (before, after)
print("done", flush=True)
