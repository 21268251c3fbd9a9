/*
 * Tests of the C ABI against the real default model (SmolLM2-135M-Instruct).
 * Built and run by bindings/c/tests/c_api.rs:  test_api MODEL_PATH SCRATCH_DIR
 * Prints one line per check and "N passed, M failed" at the end; exit status 0 iff all passed.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "suanpan.h"

static int passed, failed;
static const char *model_path, *scratch_dir;

#define CHECK(cond, ...)                                                                     \
    do {                                                                                     \
        if (cond) {                                                                          \
            passed++;                                                                        \
        } else {                                                                             \
            failed++;                                                                        \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                  \
            fprintf(stderr, __VA_ARGS__);                                                    \
            fprintf(stderr, " (last error: %s)\n", suanpan_last_error());                    \
        }                                                                                    \
    } while (0)

#define CHECK_STATUS(call, want)                                                             \
    do {                                                                                     \
        suanpan_status st_ = (call);                                                         \
        CHECK(st_ == (want), "%s returned %s, expected %s", #call, suanpan_status_name(st_), \
              suanpan_status_name(want));                                                    \
    } while (0)

/* ---- helpers --------------------------------------------------------------------- */

/* 1 if s[0..len) is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        unsigned cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xE0) == 0xC0) { n = 1; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { n = 2; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { n = 3; cp = c & 0x07; }
        else return 0;
        if (i + n >= len) return 0; /* truncated sequence */
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000)) return 0;
        if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += n + 1;
    }
    return 1;
}

/* Collects streamed pieces. */
typedef struct {
    char text[16384];
    size_t len;
    int pieces;
    int bad_pieces;    /* pieces that are not valid UTF-8 or lack the trailing NUL */
    int non_ascii;     /* pieces holding a multi-byte character */
    int stop_after;    /* return false after this many pieces (0 = never) */
    atomic_int seen;   /* pieces so far, read by other threads */
} collector;

static bool on_piece(const char *piece, size_t len, void *user) {
    collector *c = user;
    if (!valid_utf8((const unsigned char *)piece, len) || piece[len] != '\0' || len == 0)
        c->bad_pieces++;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)piece[i] >= 0x80) { c->non_ascii++; break; }
    if (c->len + len < sizeof c->text) {
        memcpy(c->text + c->len, piece, len);
        c->len += len;
        c->text[c->len] = '\0';
    }
    c->pieces++;
    atomic_fetch_add(&c->seen, 1);
    return !(c->stop_after && c->pieces >= c->stop_after);
}

static void collector_init(collector *c) {
    memset(c, 0, sizeof *c);
    atomic_init(&c->seen, 0);
}

static suanpan_generate_params greedy(uint32_t n) {
    suanpan_generate_params p = suanpan_generate_params_default();
    p.max_tokens = n;
    p.temperature = 0.0f;
    return p;
}

static suanpan_session *new_session(suanpan_model *m, uint32_t n_ctx) {
    suanpan_session_params sp = suanpan_session_params_default();
    sp.n_ctx = n_ctx;
    suanpan_session *s = NULL;
    suanpan_status st = suanpan_session_new(m, &sp, &s);
    CHECK(st == SUANPAN_OK && s != NULL, "session_new: %s", suanpan_status_name(st));
    return s;
}

/* ---- load, progress, log ------------------------------------------------------------ */

typedef struct {
    int calls;
    float last;
    int decreasing;
    float cancel_at; /* return false once fraction >= cancel_at (> 1 = never) */
} progress_state;

static bool on_progress(float f, void *user) {
    progress_state *p = user;
    if (f < p->last) p->decreasing = 1;
    p->last = f;
    p->calls++;
    return f < p->cancel_at;
}

static atomic_int log_loaded, log_errors;

static void on_log(suanpan_log_level level, const char *msg, void *user) {
    (void)user;
    if (level == SUANPAN_LOG_INFO && strstr(msg, "loaded ")) atomic_fetch_add(&log_loaded, 1);
    if (level == SUANPAN_LOG_ERROR) atomic_fetch_add(&log_errors, 1);
}

static suanpan_model *test_load(void) {
    suanpan_set_log_callback(on_log, SUANPAN_LOG_DEBUG, NULL);
    progress_state ps = {0, 0.0f, 0, 2.0f};
    suanpan_model_params mp = suanpan_model_params_default();
    mp.n_threads = 2;
    mp.progress = on_progress;
    mp.progress_user_data = &ps;
    suanpan_model *m = NULL;
    CHECK_STATUS(suanpan_model_load(model_path, &mp, &m), SUANPAN_OK);
    CHECK(m != NULL, "model handle");
    CHECK(ps.calls > 10, "%d progress calls", ps.calls);
    CHECK(ps.last == 1.0f, "last progress %f", ps.last);
    CHECK(!ps.decreasing, "progress went backwards");
    CHECK(atomic_load(&log_loaded) == 1, "log saw %d load messages", atomic_load(&log_loaded));

    /* A progress callback answering false cancels the load. */
    progress_state pc = {0, 0.0f, 0, 0.5f};
    mp.progress_user_data = &pc;
    suanpan_model *m2 = (suanpan_model *)0x1;
    CHECK_STATUS(suanpan_model_load(model_path, &mp, &m2), SUANPAN_CANCELLED);
    CHECK(m2 == NULL, "out handle cleared on failure");
    CHECK(pc.last >= 0.5f && pc.last < 1.0f, "stopped at %f", pc.last);
    return m;
}

static void test_bad_files(void) {
    suanpan_model *m = NULL;
    int errors_before = atomic_load(&log_errors);
    CHECK_STATUS(suanpan_model_load("/nonexistent/dir/model.gguf", NULL, &m), SUANPAN_IO);
    CHECK(strstr(suanpan_last_error(), "/nonexistent/dir/model.gguf") != NULL, "message: %s",
          suanpan_last_error());
    CHECK(atomic_load(&log_errors) > errors_before, "error logged");

    /* A truncated copy of the real model. */
    char cut[4096];
    snprintf(cut, sizeof cut, "%s/truncated.gguf", scratch_dir);
    FILE *in = fopen(model_path, "rb"), *out = fopen(cut, "wb");
    CHECK(in && out, "open files");
    if (in && out) {
        static char buf[1 << 16];
        size_t total = 0, n;
        while (total < (8u << 20) && (n = fread(buf, 1, sizeof buf, in)) > 0) {
            fwrite(buf, 1, n, out);
            total += n;
        }
    }
    if (in) fclose(in);
    if (out) fclose(out);
    CHECK_STATUS(suanpan_model_load(cut, NULL, &m), SUANPAN_BAD_MODEL);
    CHECK(strstr(suanpan_last_error(), "truncated") != NULL, "message: %s", suanpan_last_error());

    /* Not a GGUF at all. */
    snprintf(cut, sizeof cut, "%s/text.gguf", scratch_dir);
    out = fopen(cut, "wb");
    if (out) { fputs("hello, I am not a model\n", out); fclose(out); }
    CHECK_STATUS(suanpan_model_load(cut, NULL, &m), SUANPAN_BAD_MODEL);
    CHECK(strstr(suanpan_last_error(), "GGUF") != NULL, "message: %s", suanpan_last_error());
    CHECK(m == NULL, "no handle");
}

static void test_args(suanpan_model *m) {
    suanpan_session *s = NULL;
    CHECK_STATUS(suanpan_session_new(NULL, NULL, &s), SUANPAN_INVALID_ARG);
    CHECK_STATUS(suanpan_session_new(m, NULL, NULL), SUANPAN_INVALID_ARG);
    suanpan_session_params sp = suanpan_session_params_default();
    sp.size = 3;
    CHECK_STATUS(suanpan_session_new(m, &sp, &s), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "size") != NULL, "message: %s", suanpan_last_error());
    sp = suanpan_session_params_default();
    sp.n_ctx = 1000000;
    CHECK_STATUS(suanpan_session_new(m, &sp, &s), SUANPAN_INVALID_ARG);
    CHECK(strcmp(suanpan_status_name(12345), "SUANPAN_UNKNOWN") == 0, "unknown status");
    CHECK(strlen(suanpan_version()) > 0, "version");

    s = new_session(m, 64);
    suanpan_generate_params gp = greedy(4);
    CHECK_STATUS(suanpan_generate(s, NULL, &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    CHECK_STATUS(suanpan_generate(s, "\xff\xfe", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "UTF-8") != NULL, "message: %s", suanpan_last_error());
    gp.temperature = 1.0f;
    gp.top_p = 2.0f;
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    gp = greedy(4);
    gp.n_stop = 1;
    gp.stop = NULL;
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    suanpan_session_free(s);
    suanpan_session_free(NULL);
    suanpan_model_free(NULL);
}

/* ---- memory ------------------------------------------------------------------------- */

static void test_memory(suanpan_model *m) {
    suanpan_session_params sp = suanpan_session_params_default();
    sp.n_ctx = 512;
    suanpan_model_params mp = suanpan_model_params_default();
    mp.n_threads = 2;
    suanpan_memory_estimate e = suanpan_memory_estimate_default();
    CHECK_STATUS(suanpan_estimate_memory(model_path, &mp, &sp, &e), SUANPAN_OK);
    CHECK(e.n_ctx == 512 && e.kv_bytes == 512 * e.kv_bytes_per_token, "kv %llu",
          (unsigned long long)e.kv_bytes);
    CHECK(e.weights_bytes > 50000000 && e.weights_bytes < e.file_bytes, "weights %llu",
          (unsigned long long)e.weights_bytes);
    CHECK(e.total_bytes == e.weights_bytes + e.kv_bytes + e.scratch_bytes, "total");

    suanpan_session *s = NULL;
    CHECK_STATUS(suanpan_session_new(m, &sp, &s), SUANPAN_OK);
    suanpan_usage u = suanpan_usage_default();
    CHECK_STATUS(suanpan_session_usage(s, &u), SUANPAN_OK);
    CHECK(u.kv_bytes == e.kv_bytes, "usage kv %llu vs estimate %llu",
          (unsigned long long)u.kv_bytes, (unsigned long long)e.kv_bytes);
    CHECK(u.tokens == 0 && u.n_ctx == 512, "empty usage");
    suanpan_session_free(s);

    /* Over budget: SUANPAN_OOM with a message, from both estimate and session_new. */
    sp.memory_budget = e.kv_bytes + e.scratch_bytes - 1;
    s = (suanpan_session *)0x1;
    CHECK_STATUS(suanpan_session_new(m, &sp, &s), SUANPAN_OOM);
    CHECK(s == NULL, "no handle");
    CHECK(strstr(suanpan_last_error(), "budget") != NULL, "message: %s", suanpan_last_error());
    CHECK_STATUS(suanpan_estimate_memory(model_path, &mp, &sp, &e), SUANPAN_OOM);
    sp.memory_budget += 1;
    CHECK_STATUS(suanpan_session_new(m, &sp, &s), SUANPAN_OK);
    suanpan_session_free(s);

    /* An out-struct without its size set is refused. */
    suanpan_usage bad;
    memset(&bad, 0, sizeof bad);
    s = new_session(m, 64);
    CHECK_STATUS(suanpan_session_usage(s, &bad), SUANPAN_INVALID_ARG);
    suanpan_session_free(s);
}

/* ---- streaming ---------------------------------------------------------------------- */

static void test_streaming_multibyte(suanpan_model *m) {
    suanpan_session *s = new_session(m, 256);
    static collector c;
    collector_init(&c);
    suanpan_generate_params gp = greedy(24);
    suanpan_generate_result r = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_generate(s, "日本の首都は東京です。中国の首都は", &gp, on_piece, &c, &r),
                 SUANPAN_OK);
    CHECK(c.bad_pieces == 0, "%d pieces were not whole UTF-8", c.bad_pieces);
    CHECK(c.non_ascii > 0, "no multi-byte output: %s", c.text);
    /* Fewer pieces than tokens: some tokens held only part of a character and were
       merged into the next piece instead of being streamed broken. */
    CHECK((uint32_t)c.pieces < r.generated_tokens, "%d pieces for %u tokens", c.pieces,
          r.generated_tokens);
    CHECK(valid_utf8((const unsigned char *)c.text, c.len), "whole text valid");
    printf("streamed (%u tokens, %d pieces): %s\n", r.generated_tokens, c.pieces, c.text);

    /* The callback returning false stops generation normally. */
    collector_init(&c);
    c.stop_after = 3;
    suanpan_session_reset(s);
    gp = greedy(50);
    CHECK_STATUS(suanpan_generate(s, "Once upon a time", &gp, on_piece, &c, &r), SUANPAN_OK);
    CHECK(c.pieces == 3 && r.stop_reason == SUANPAN_STOP_CALLBACK, "pieces %d reason %d",
          c.pieces, r.stop_reason);
    suanpan_session_free(s);
}

static void test_stop_strings_and_max_tokens(suanpan_model *m) {
    suanpan_session *s = new_session(m, 256);
    static collector plain, stopped;
    collector_init(&plain);
    suanpan_generate_params gp = greedy(40);
    suanpan_generate_result r = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_generate(s, "Once upon a time, in a small village,", &gp, on_piece,
                                  &plain, &r),
                 SUANPAN_OK);
    CHECK(r.generated_tokens == 40 && r.stop_reason == SUANPAN_STOP_MAX_TOKENS, "max tokens");
    /* Stop at the second word of the output, a string that spans tokens. */
    const char *sp = strchr(plain.text + 1, ' ');
    CHECK(sp != NULL, "a space in %s", plain.text);
    if (!sp) { suanpan_session_free(s); return; }
    char stop[32];
    snprintf(stop, sizeof stop, "%.*s", (int)(strlen(sp) < 5 ? strlen(sp) : 5), sp);
    const char *stops[] = {"<never>", stop};
    gp.stop = stops;
    gp.n_stop = 2;
    collector_init(&stopped);
    suanpan_session_reset(s);
    CHECK_STATUS(suanpan_generate(s, "Once upon a time, in a small village,", &gp, on_piece,
                                  &stopped, &r),
                 SUANPAN_OK);
    size_t want = (size_t)(strstr(plain.text, stop) - plain.text);
    CHECK(r.stop_reason == SUANPAN_STOP_STRING, "reason %d", r.stop_reason);
    CHECK(stopped.len == want && strncmp(stopped.text, plain.text, want) == 0,
          "got \"%s\", wanted the %zu bytes before \"%s\" in \"%s\"", stopped.text, want, stop,
          plain.text);
    suanpan_session_free(s);
}

/* ---- cancellation and BUSY ---------------------------------------------------------- */

typedef struct {
    suanpan_session *s;
    collector *c;
    suanpan_status busy_status;
    atomic_int done; /* generation returned: stop waiting */
} canceller_args;

static void *canceller(void *p) {
    canceller_args *a = p;
    struct timespec ms = {0, 1000000};
    while (atomic_load(&a->c->seen) < 5)
        if (atomic_load(&a->done)) return NULL;
        else nanosleep(&ms, NULL);
    suanpan_usage u = suanpan_usage_default();
    a->busy_status = suanpan_session_usage(a->s, &u); /* generating: BUSY */
    suanpan_session_cancel(a->s);
    return NULL;
}

/* ---- constrained output ------------------------------------------------------------- */

static void test_constrained(suanpan_model *m) {
    suanpan_session *s = new_session(m, 256);
    static collector c;
    suanpan_generate_result r = suanpan_generate_result_default();
    /* A regex: exactly three digits, a dash, two letters. */
    suanpan_generate_params gp = greedy(32);
    gp.constraint_kind = SUANPAN_CONSTRAINT_REGEX;
    gp.constraint = "[0-9]{3}-[a-z]{2}";
    collector_init(&c);
    CHECK_STATUS(suanpan_generate(s, "My code is", &gp, on_piece, &c, &r), SUANPAN_OK);
    int ok = c.len == 6 && c.text[3] == '-';
    for (int i = 0; i < 6 && ok; i++) {
        if (i < 3) ok = c.text[i] >= '0' && c.text[i] <= '9';
        else if (i > 3) ok = c.text[i] >= 'a' && c.text[i] <= 'z';
    }
    CHECK(ok && r.stop_reason == SUANPAN_STOP_END, "regex output \"%s\" (reason %d)", c.text,
          r.stop_reason);
    /* A JSON schema: an object with one boolean. */
    suanpan_session_reset(s);
    gp = greedy(32);
    gp.constraint_kind = SUANPAN_CONSTRAINT_JSON_SCHEMA;
    gp.constraint = "{\"type\":\"object\",\"properties\":{\"ok\":{\"type\":\"boolean\"}},"
                    "\"required\":[\"ok\"],\"additionalProperties\":false}";
    collector_init(&c);
    CHECK_STATUS(suanpan_generate(s, "Is water wet?", &gp, on_piece, &c, &r), SUANPAN_OK);
    CHECK(strcmp(c.text, "{\"ok\":true}") == 0 || strcmp(c.text, "{\"ok\":false}") == 0,
          "schema output \"%s\"", c.text);
    /* Bad constraints are SUANPAN_INVALID_ARG with a message naming them. */
    suanpan_session_reset(s);
    gp = greedy(8);
    gp.constraint_kind = SUANPAN_CONSTRAINT_REGEX;
    gp.constraint = "(unclosed";
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "regex") != NULL, "message: %s", suanpan_last_error());
    gp.constraint_kind = SUANPAN_CONSTRAINT_GRAMMAR;
    gp.constraint = NULL;
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "NULL") != NULL, "message: %s", suanpan_last_error());
    gp.constraint_kind = 99;
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    gp.constraint_kind = SUANPAN_CONSTRAINT_REGEX;
    gp.constraint = "[^\\s\\S]"; /* no string matches */
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "cannot be satisfied") != NULL, "message: %s",
          suanpan_last_error());
    suanpan_session_free(s);
}

static void test_cancel(suanpan_model *m) {
    suanpan_session *s = new_session(m, 1024);
    static collector c;
    collector_init(&c);
    canceller_args a = {s, &c, SUANPAN_OK, 0};
    atomic_init(&a.done, 0);
    pthread_t t;
    pthread_create(&t, NULL, canceller, &a);
    /* Counting goes on for hundreds of tokens unless cancelled. */
    suanpan_generate_params gp = greedy(900);
    /* The result describes the failed call: the tokens streamed before the cancel. */
    suanpan_generate_result cr = suanpan_generate_result_default();
    cr.generated_tokens = 12345;
    CHECK_STATUS(suanpan_generate(s, "Count: one, two, three, four,", &gp, on_piece, &c, &cr),
                 SUANPAN_CANCELLED);
    atomic_store(&a.done, 1);
    pthread_join(t, NULL);
    CHECK(cr.stop_reason == SUANPAN_STOP_ERROR, "stop reason %d", (int)cr.stop_reason);
    CHECK(cr.generated_tokens >= (uint32_t)c.pieces && cr.generated_tokens < 900,
          "result says %u tokens after %d pieces", cr.generated_tokens, c.pieces);
    CHECK(a.busy_status == SUANPAN_BUSY, "second thread got %s",
          suanpan_status_name(a.busy_status));
    CHECK(c.pieces >= 5 && c.pieces < 400, "cancelled after %d pieces", c.pieces);
    /* Usable afterwards: the context holds what was generated, generation goes on. */
    suanpan_usage u = suanpan_usage_default();
    CHECK_STATUS(suanpan_session_usage(s, &u), SUANPAN_OK);
    CHECK(u.tokens > 5, "%u tokens in context", u.tokens);
    static collector more;
    collector_init(&more);
    suanpan_generate_result r = suanpan_generate_result_default();
    gp = greedy(5);
    CHECK_STATUS(suanpan_generate(s, " The end.", &gp, on_piece, &more, &r), SUANPAN_OK);
    CHECK(r.generated_tokens > 0, "generated %u after cancel", r.generated_tokens);
    suanpan_session_free(s);
}

/* ---- context full ------------------------------------------------------------------- */

static void test_context_full(suanpan_model *m) {
    suanpan_session *s = new_session(m, 24);
    suanpan_generate_params gp = greedy(100);
    static collector c;
    collector_init(&c);
    /* A result left from a previous call must not survive the failed one. */
    suanpan_generate_result fr = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, &fr), SUANPAN_CONTEXT_FULL);
    suanpan_session_reset(s);
    uint32_t stale = fr.generated_tokens;
    CHECK_STATUS(suanpan_generate(s, "Count: one, two, three, four,", &gp, on_piece, &c, &fr),
                 SUANPAN_CONTEXT_FULL);
    CHECK(strstr(suanpan_last_error(), "context") != NULL, "message: %s", suanpan_last_error());
    CHECK(fr.stop_reason == SUANPAN_STOP_ERROR, "stop reason %d", (int)fr.stop_reason);
    CHECK(fr.generated_tokens >= (uint32_t)c.pieces && fr.generated_tokens > 0 &&
              fr.generated_tokens < 24,
          "result says %u tokens (%d pieces, %u before)", fr.generated_tokens, c.pieces, stale);
    /* Bad arguments reset it too. */
    fr.generated_tokens = 77;
    CHECK_STATUS(suanpan_generate(s, NULL, &gp, NULL, NULL, &fr), SUANPAN_INVALID_ARG);
    CHECK(fr.generated_tokens == 0 && fr.stop_reason == SUANPAN_STOP_ERROR, "after a bad call");
    suanpan_usage u = suanpan_usage_default();
    suanpan_session_usage(s, &u);
    CHECK(u.tokens == 24, "%u tokens", u.tokens);
    /* A prompt longer than the whole context. */
    suanpan_session_reset(s);
    char long_prompt[2048] = "";
    for (int i = 0; i < 40; i++) strcat(long_prompt, "word ");
    CHECK_STATUS(suanpan_generate(s, long_prompt, &gp, NULL, NULL, NULL), SUANPAN_CONTEXT_FULL);
    suanpan_session_reset(s);
    gp = greedy(3);
    suanpan_generate_result r = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, &r), SUANPAN_OK);
    CHECK(r.generated_tokens == 3, "usable after reset");
    suanpan_session_free(s);
}

/* ---- two sessions, two threads ------------------------------------------------------ */

typedef struct {
    suanpan_model *m;
    const char *prompt;
    collector c;
    suanpan_status status;
} run_args;

static void *run_one(void *p) {
    run_args *a = p;
    suanpan_session_params sp = suanpan_session_params_default();
    sp.n_ctx = 128;
    suanpan_session *s = NULL;
    a->status = suanpan_session_new(a->m, &sp, &s);
    if (a->status != SUANPAN_OK) return NULL;
    suanpan_generate_params gp = suanpan_generate_params_default();
    gp.max_tokens = 16;
    gp.temperature = 0.7f;
    gp.seed = 11;
    collector_init(&a->c);
    a->status = suanpan_generate(s, a->prompt, &gp, on_piece, &a->c, NULL);
    suanpan_session_free(s);
    return NULL;
}

static void test_two_threads(suanpan_model *m) {
    static run_args serial[2], par[2];
    const char *prompts[2] = {"The sun is a", "My favourite programming language is"};
    for (int i = 0; i < 2; i++) {
        serial[i].m = par[i].m = m;
        serial[i].prompt = par[i].prompt = prompts[i];
        run_one(&serial[i]);
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, run_one, &par[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    for (int i = 0; i < 2; i++) {
        CHECK(serial[i].status == SUANPAN_OK && par[i].status == SUANPAN_OK, "statuses");
        CHECK(serial[i].c.len > 0 && strcmp(serial[i].c.text, par[i].c.text) == 0,
              "prompt %d: serial \"%s\" vs parallel \"%s\"", i, serial[i].c.text, par[i].c.text);
    }
}

/* ---- save / restore / clone --------------------------------------------------------- */

static void test_save_restore(suanpan_model *m) {
    suanpan_session *a = new_session(m, 128);
    suanpan_generate_params gp = greedy(6);
    CHECK_STATUS(suanpan_generate(a, "Once upon a time, in a small village,", &gp, NULL, NULL,
                                  NULL),
                 SUANPAN_OK);
    uint8_t *blob = NULL;
    size_t len = 0;
    CHECK_STATUS(suanpan_session_save(a, &blob, &len), SUANPAN_OK);
    CHECK(blob != NULL && len > 1000, "blob of %zu bytes", len);
    suanpan_session *cl = NULL;
    CHECK_STATUS(suanpan_session_clone(a, &cl), SUANPAN_OK);

    static collector want, got, cloned;
    collector_init(&want);
    collector_init(&got);
    collector_init(&cloned);
    gp = greedy(12);
    CHECK_STATUS(suanpan_generate(a, "", &gp, on_piece, &want, NULL), SUANPAN_OK);

    suanpan_session *b = new_session(m, 256);
    CHECK_STATUS(suanpan_session_restore(b, blob, len), SUANPAN_OK);
    CHECK_STATUS(suanpan_generate(b, "", &gp, on_piece, &got, NULL), SUANPAN_OK);
    CHECK(want.len > 0 && strcmp(want.text, got.text) == 0, "restored \"%s\" vs \"%s\"",
          got.text, want.text);
    CHECK_STATUS(suanpan_generate(cl, "", &gp, on_piece, &cloned, NULL), SUANPAN_OK);
    CHECK(strcmp(want.text, cloned.text) == 0, "clone \"%s\" vs \"%s\"", cloned.text, want.text);

    /* Damaged or foreign blobs are refused; the session keeps its context. */
    suanpan_usage before = suanpan_usage_default(), after = suanpan_usage_default();
    suanpan_session_usage(b, &before);
    blob[len / 2] ^= 0x40;
    CHECK_STATUS(suanpan_session_restore(b, blob, len), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "corrupt") != NULL, "message: %s", suanpan_last_error());
    blob[len / 2] ^= 0x40;
    CHECK_STATUS(suanpan_session_restore(b, blob, 17), SUANPAN_INVALID_ARG);
    CHECK_STATUS(suanpan_session_restore(b, (const uint8_t *)"hello", 5), SUANPAN_INVALID_ARG);
    suanpan_session_usage(b, &after);
    CHECK(before.tokens == after.tokens, "context kept: %u vs %u", before.tokens, after.tokens);
    suanpan_session *small = new_session(m, 8);
    CHECK_STATUS(suanpan_session_restore(small, blob, len), SUANPAN_CONTEXT_FULL);

    suanpan_bytes_free(blob, len);
    suanpan_session_free(small);
    suanpan_session_free(cl);
    suanpan_session_free(b);
    suanpan_session_free(a);
}

/* ---- chat --------------------------------------------------------------------------- */

static void test_chat(suanpan_model *m) {
    suanpan_session *s = new_session(m, 512);
    suanpan_chat_message msgs[1] = {{"user", "What is the capital of France?"}};
    static collector c;
    collector_init(&c);
    suanpan_generate_params gp = greedy(24);
    suanpan_generate_result r = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_chat(s, msgs, 1, &gp, on_piece, &c, &r), SUANPAN_OK);
    CHECK(c.len > 0 && r.generated_tokens > 0, "reply \"%s\"", c.text);
    CHECK(r.prompt_tokens > 10, "the template wraps the message: %u tokens", r.prompt_tokens);
    printf("chat reply: %s\n", c.text);
    CHECK_STATUS(suanpan_chat(s, msgs, 0, &gp, on_piece, &c, &r), SUANPAN_INVALID_ARG);
    suanpan_session_free(s);
}

/* ---- hostile chat templates (issue 18) ----------------------------------------------- */

static void *cancel_after_50ms(void *p) {
    struct timespec ms50 = {0, 50000000};
    nanosleep(&ms50, NULL);
    suanpan_session_cancel((suanpan_session *)p);
    return NULL;
}

/* `doubling` asks for 206 GB while rendering its template (ns.l + ns.l), `loops` runs for
 * 10^10 iterations: chat returns a status, the process and the session live on. */
static void test_hostile_templates(const char *doubling, const char *loops) {
    suanpan_model *m = NULL;
    CHECK_STATUS(suanpan_model_load(doubling, NULL, &m), SUANPAN_OK);
    if (!m) return;
    suanpan_session *s = new_session(m, 128);
    suanpan_chat_message msgs[1] = {{"user", "hi"}};
    suanpan_generate_params gp = greedy(2);
    suanpan_generate_result r = suanpan_generate_result_default();
    CHECK_STATUS(suanpan_chat(s, msgs, 1, &gp, NULL, NULL, &r), SUANPAN_OOM);
    CHECK(strstr(suanpan_last_error(), "memory") != NULL, "message: %s", suanpan_last_error());
    CHECK(r.stop_reason == SUANPAN_STOP_ERROR && r.generated_tokens == 0, "result after OOM");
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, &r), SUANPAN_OK);
    suanpan_session_free(s);
    suanpan_model_free(m);

    CHECK_STATUS(suanpan_model_load(loops, NULL, &m), SUANPAN_OK);
    if (!m) return;
    s = new_session(m, 128);
    pthread_t t;
    pthread_create(&t, NULL, cancel_after_50ms, s);
    CHECK_STATUS(suanpan_chat(s, msgs, 1, &gp, NULL, NULL, &r), SUANPAN_CANCELLED);
    pthread_join(t, NULL);
    /* Uncancelled, it runs out of fuel. */
    CHECK_STATUS(suanpan_chat(s, msgs, 1, &gp, NULL, NULL, &r), SUANPAN_INVALID_ARG);
    CHECK(strstr(suanpan_last_error(), "instructions") != NULL, "message: %s",
          suanpan_last_error());
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, &r), SUANPAN_OK);
    suanpan_session_free(s);
    suanpan_model_free(m);
}

/* ---- panics become SUANPAN_INTERNAL ------------------------------------------------- */

static void test_internal(suanpan_model *m) {
    suanpan_session *s = new_session(m, 64);
    suanpan_usage u = suanpan_usage_default();
    setenv("SUANPAN_C_DEBUG_PANIC", "suanpan_session_usage", 1);
    CHECK_STATUS(suanpan_session_usage(s, &u), SUANPAN_INTERNAL);
    CHECK(strstr(suanpan_last_error(), "internal error in suanpan_session_usage") != NULL,
          "message: %s", suanpan_last_error());
    setenv("SUANPAN_C_DEBUG_PANIC", "suanpan_generate", 1);
    suanpan_generate_params gp = greedy(2);
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_INTERNAL);
    unsetenv("SUANPAN_C_DEBUG_PANIC");
    CHECK_STATUS(suanpan_session_usage(s, &u), SUANPAN_OK);
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_OK);
    CHECK(strcmp(suanpan_last_error(), "") == 0, "cleared after success");
    suanpan_session_free(s);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    model_path = argv[1];
    scratch_dir = argv[2];
    suanpan_model *m = test_load();
    if (!m) return 1;
    test_bad_files();
    test_args(m);
    test_memory(m);
    test_streaming_multibyte(m);
    test_stop_strings_and_max_tokens(m);
    test_constrained(m);
    test_cancel(m);
    test_context_full(m);
    test_two_threads(m);
    test_save_restore(m);
    test_chat(m);
    test_internal(m);
    if (argc >= 5) test_hostile_templates(argv[3], argv[4]);
    /* Sessions outlive the model handle. */
    suanpan_session *s = new_session(m, 64);
    suanpan_model_free(m);
    suanpan_generate_params gp = greedy(2);
    CHECK_STATUS(suanpan_generate(s, "Hi", &gp, NULL, NULL, NULL), SUANPAN_OK);
    suanpan_session_free(s);
    suanpan_set_log_callback(NULL, 0, NULL);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
