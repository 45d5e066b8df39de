/* A minimal libsubllm program: load a model, generate from a prompt, print.
 *
 *   cc -std=c11 -Iinclude examples/c/simple.c -Ltarget/release -lsubllm \
 *      -Wl,-rpath,target/release -o simple
 *   ./simple assets/SmolLM2-135M-Instruct.Q4_1.gguf "The capital of France is" 32
 *
 * Greedy sampling, so the output is the same on every run. Statistics go to
 * stderr. Exit status 1 with one line on stderr for any failure. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subllm.h"

static int check(subllm_status s, const char *what) {
  if (s != SUBLLM_OK) {
    fprintf(stderr, "error: %s: %s (%s)\n", what, subllm_last_error(), subllm_status_name(s));
    return 1;
  }
  return 0;
}

static bool print_piece(const char *text, size_t len, void *user_data) {
  (void)user_data;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return true;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.gguf PROMPT [N_PREDICT]\n", argv[0]);
    return 2;
  }
  int n_predict = argc > 3 ? atoi(argv[3]) : 32;

  subllm_model *model = NULL;
  if (check(subllm_model_load(argv[1], NULL, &model), "load")) return 1;

  subllm_session_params sp = subllm_session_default_params();
  sp.n_ctx = 512;
  subllm_session *session = NULL;
  if (check(subllm_session_new(model, &sp, &session), "session")) return 1;

  /* ask for the size first, then tokenize into a buffer that fits */
  const char *prompt = argv[2];
  size_t n = 0;
  subllm_status s = subllm_tokenize(model, prompt, strlen(prompt), true, true, NULL, 0, &n);
  if (s != SUBLLM_ERR_BUFFER_TOO_SMALL && check(s, "tokenize")) return 1;
  int32_t *tokens = malloc(n * sizeof *tokens);
  if (!tokens) return 1;
  if (check(subllm_tokenize(model, prompt, strlen(prompt), true, true, tokens, n, &n), "tokenize"))
    return 1;

  subllm_generate_params gp = subllm_generate_default_params();
  gp.n_predict = n_predict;
  gp.sampler.temperature = 0.0f; /* greedy */
  subllm_stop_reason stop;
  size_t n_gen = 0;
  fputs(prompt, stdout);
  if (check(subllm_generate(session, tokens, n, &gp, print_piece, NULL, &stop, &n_gen), "generate"))
    return 1;
  fputc('\n', stdout);

  subllm_stats st;
  if (check(subllm_get_stats(session, &st), "stats")) return 1;
  fprintf(stderr, "%s: %zu prompt tokens, %zu generated (stop %d); prompt %.1f t/s, generation %.1f t/s\n",
          subllm_model_architecture(model), n, n_gen, (int)stop,
          st.prefill_ms > 0 ? st.prefill_tokens * 1e3 / st.prefill_ms : 0.0,
          st.decode_ms > 0 ? st.decode_tokens * 1e3 / st.decode_ms : 0.0);
  fprintf(stderr, "KV cache: %llu bytes (full-length cache: %llu)\n",
          (unsigned long long)st.kv_bytes, (unsigned long long)st.kv_bytes_full);

  free(tokens);
  /* any order: the session keeps its model alive */
  check(subllm_model_free(model), "free model");
  check(subllm_session_free(session), "free session");
  return 0;
}
