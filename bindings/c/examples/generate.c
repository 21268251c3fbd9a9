/*
 * Stream a completion from a GGUF model through the C ABI.
 *
 *   cc -std=c11 -I bindings/c/include examples/generate.c -L target/debug -lsuanpan_c \
 *      -Wl,-rpath,target/debug -o generate
 *   ./generate MODEL.gguf "The capital of France is" 32
 */
#include <stdio.h>
#include <stdlib.h>

#include "suanpan.h"

static bool show_progress(float fraction, void *user) {
    (void)user;
    fprintf(stderr, "\rloading %3.0f%%", fraction * 100.0f);
    if (fraction >= 1.0f) fputc('\n', stderr);
    return true; /* false would cancel the load */
}

static bool print_piece(const char *piece, size_t len, void *user) {
    (void)user;
    fwrite(piece, 1, len, stdout); /* always whole UTF-8 characters */
    fflush(stdout);
    return true; /* false would stop generating */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL.gguf PROMPT [MAX_TOKENS]\n", argv[0]);
        return 2;
    }
    suanpan_model_params mp = suanpan_model_params_default();
    mp.progress = show_progress;
    suanpan_model *model = NULL;
    if (suanpan_model_load(argv[1], &mp, &model) != SUANPAN_OK) {
        fprintf(stderr, "load failed: %s\n", suanpan_last_error());
        return 1;
    }
    suanpan_session *session = NULL;
    suanpan_session_params sp = suanpan_session_params_default();
    sp.n_ctx = 1024;
    if (suanpan_session_new(model, &sp, &session) != SUANPAN_OK) {
        fprintf(stderr, "session failed: %s\n", suanpan_last_error());
        suanpan_model_free(model);
        return 1;
    }
    suanpan_generate_params gp = suanpan_generate_params_default();
    gp.max_tokens = argc > 3 ? (uint32_t)atoi(argv[3]) : 64;
    gp.temperature = 0.0f; /* greedy */
    suanpan_generate_result r = suanpan_generate_result_default();
    suanpan_status st = suanpan_generate(session, argv[2], &gp, print_piece, NULL, &r);
    printf("\n");
    if (st != SUANPAN_OK)
        fprintf(stderr, "generate: %s: %s\n", suanpan_status_name(st), suanpan_last_error());
    else
        fprintf(stderr, "%u tokens, %.1f tok/s\n", r.generated_tokens,
                r.generated_tokens > 1 ? (r.generated_tokens - 1) / (r.generate_ms / 1e3) : 0.0);
    suanpan_session_free(session);
    suanpan_model_free(model);
    return st == SUANPAN_OK ? 0 : 1;
}
