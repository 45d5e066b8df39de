/* Tests of the C ABI, run by tests/capi.rs: ./abi_test MODEL.gguf
 *
 * 1. Every function given NULL, freed, foreign and made-up handles and
 *    out-of-range arguments answers with a status code (never a crash), and
 *    a failed call leaves its session as it was.
 * 2. Four threads using four sessions over one model produce exactly the
 *    tokens that the same four prompts produce run one after another.
 * 3. Sessions outlive their model handle; truncation and reset behave. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "subllm.h"

static int failures = 0;

#define EXPECT(cond)                                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      fprintf(stderr, "%s:%d: failed: %s (last error: %s)\n", __FILE__,   \
              __LINE__, #cond, subllm_last_error());                      \
      failures++;                                                         \
    }                                                                     \
  } while (0)

#define EXPECT_STATUS(call, want)                                          \
  do {                                                                     \
    subllm_status got_ = (call);                                           \
    if (got_ != (want)) {                                                  \
      fprintf(stderr, "%s:%d: %s gave %s, expected %s (last error: %s)\n", \
              __FILE__, __LINE__, #call, subllm_status_name(got_),        \
              subllm_status_name(want), subllm_last_error());             \
      failures++;                                                          \
    } else if ((want) != SUBLLM_OK && subllm_last_error()[0] == 0) {        \
      fprintf(stderr, "%s:%d: %s: no error message\n", __FILE__, __LINE__, \
              #call);                                                      \
      failures++;                                                          \
    }                                                                      \
  } while (0)

static size_t n_past(subllm_session *s) {
  size_t n = (size_t)-1;
  EXPECT_STATUS(subllm_n_past(s, &n), SUBLLM_OK);
  return n;
}

static int stop_after = 0;
static bool count_pieces(const char *text, size_t len, void *user) {
  int *n = user;
  EXPECT(text != NULL && strlen(text) == len);
  return ++*n < stop_after;
}

static void hostile_arguments(const char *path) {
  subllm_model *bogus_m = (subllm_model *)(uintptr_t)0x1234;
  subllm_session *bogus_s = (subllm_session *)(uintptr_t)0x5678;
  subllm_model *m = NULL;
  subllm_model_info info;
  int32_t toks[64];
  size_t n = 0;
  float logits[8];
  int32_t tok = 0;
  subllm_stats st;
  char buf[256];

  /* loading */
  EXPECT_STATUS(subllm_model_load(NULL, NULL, &m), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_model_load(path, NULL, NULL), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_model_load("/nonexistent/model.gguf", NULL, &m), SUBLLM_ERR_IO);
  EXPECT(m == NULL);
  EXPECT_STATUS(subllm_model_load(__FILE__, NULL, &m), SUBLLM_ERR_MODEL);
  EXPECT_STATUS(subllm_model_load("/dev/null", NULL, &m), SUBLLM_ERR_IO);
  EXPECT(m == NULL);
  EXPECT(strcmp(subllm_status_name(SUBLLM_ERR_MODEL), "SUBLLM_ERR_MODEL") == 0);
  EXPECT(strcmp(subllm_status_name(-7), "unknown") == 0);

  /* made-up and NULL handles, to every function */
  EXPECT_STATUS(subllm_model_free(NULL), SUBLLM_OK);
  EXPECT_STATUS(subllm_model_free(bogus_m), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_model_get_info(NULL, &info), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_model_get_info(bogus_m, &info), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT(subllm_model_architecture(bogus_m) == NULL);
  EXPECT(subllm_model_architecture(NULL) == NULL);
  EXPECT(subllm_model_chat_template(bogus_m) == NULL);
  EXPECT_STATUS(subllm_tokenize(bogus_m, "hi", 2, true, true, toks, 64, &n), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_detokenize(NULL, toks, 1, false, buf, sizeof buf, &n), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_session_new(bogus_m, NULL, &bogus_s), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT(bogus_s == NULL);
  bogus_s = (subllm_session *)(uintptr_t)0x5678;
  EXPECT_STATUS(subllm_session_free(bogus_s), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_session_free(NULL), SUBLLM_OK);
  EXPECT_STATUS(subllm_eval(bogus_s, toks, 1), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_eval(NULL, toks, 1), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_get_logits(bogus_s, logits, 8, &n), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_sample(bogus_s, NULL, &tok), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_generate(bogus_s, toks, 1, NULL, NULL, NULL, NULL, NULL), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_kv_reset(bogus_s), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_kv_truncate(bogus_s, 0), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_n_past(bogus_s, &n), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_get_stats(bogus_s, &st), SUBLLM_ERR_INVALID_HANDLE);

  /* a live model */
  EXPECT_STATUS(subllm_model_load(path, NULL, &m), SUBLLM_OK);
  EXPECT_STATUS(subllm_model_get_info(m, NULL), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_model_get_info(m, &info), SUBLLM_OK);
  EXPECT(info.n_vocab > 1000 && info.has_tokenizer && info.n_layer > 0);
  EXPECT(strcmp(subllm_model_architecture(m), "llama") == 0);
  /* a model handle is not a session handle */
  EXPECT_STATUS(subllm_eval((subllm_session *)m, toks, 1), SUBLLM_ERR_INVALID_HANDLE);

  /* tokenize: NULL, bad UTF-8, a buffer too small, then one that fits */
  EXPECT_STATUS(subllm_tokenize(m, NULL, 3, true, true, toks, 64, &n), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_tokenize(m, NULL, 0, false, true, toks, 64, &n), SUBLLM_OK);
  EXPECT(n == 0);
  EXPECT_STATUS(subllm_tokenize(m, "\xff\xfe", 2, true, true, toks, 64, &n), SUBLLM_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(subllm_tokenize(m, "hello world", 11, true, true, toks, 64, NULL), SUBLLM_ERR_NULL);
  const char *text = "<|im_start|>user\nThe capital of France is";
  n = 0;
  EXPECT_STATUS(subllm_tokenize(m, text, strlen(text), true, true, toks, 1, &n), SUBLLM_ERR_BUFFER_TOO_SMALL);
  size_t need = n;
  EXPECT(need > 1 && need < 64);
  EXPECT_STATUS(subllm_tokenize(m, text, strlen(text), true, true, NULL, 0, &n), SUBLLM_ERR_BUFFER_TOO_SMALL);
  EXPECT_STATUS(subllm_tokenize(m, text, strlen(text), true, true, toks, 64, &n), SUBLLM_OK);
  EXPECT(n == need);
  size_t n_prompt = n;
  /* <|im_start|> is one special token when parsed, several pieces when not */
  int32_t plain[64];
  size_t n_plain = 0;
  EXPECT_STATUS(subllm_tokenize(m, text, strlen(text), true, false, plain, 64, &n_plain), SUBLLM_OK);
  EXPECT(n_plain > n_prompt);

  /* detokenize */
  int32_t bad[2] = {-1, (int32_t)info.n_vocab};
  EXPECT_STATUS(subllm_detokenize(m, bad, 1, false, buf, sizeof buf, &n), SUBLLM_ERR_INVALID_TOKEN);
  EXPECT_STATUS(subllm_detokenize(m, bad + 1, 1, false, buf, sizeof buf, &n), SUBLLM_ERR_INVALID_TOKEN);
  EXPECT_STATUS(subllm_detokenize(m, toks, n_prompt, true, buf, 2, &n), SUBLLM_ERR_BUFFER_TOO_SMALL);
  EXPECT_STATUS(subllm_detokenize(m, toks, n_prompt, true, buf, sizeof buf - 1, &n), SUBLLM_OK);
  buf[n] = 0;
  EXPECT(strcmp(buf, text) == 0);

  /* sessions: bad parameters */
  subllm_session *s = NULL;
  subllm_session_params sp = subllm_session_default_params();
  sp.kv_type = 99;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_ERR_INVALID_ARGUMENT);
  sp = subllm_session_default_params();
  sp.n_batch = 0;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_ERR_INVALID_ARGUMENT);
  sp = subllm_session_default_params();
  sp.n_ctx = 0xffffffffu;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_ERR_INVALID_ARGUMENT);
  EXPECT(s == NULL);
  sp = subllm_session_default_params();
  EXPECT(sp.subsample_threshold == 0.0f);
  sp.subsample_threshold = NAN;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_ERR_INVALID_ARGUMENT);
  sp.subsample_threshold = INFINITY;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_ERR_INVALID_ARGUMENT);
  EXPECT(s == NULL);
  EXPECT_STATUS(subllm_session_new(m, NULL, NULL), SUBLLM_ERR_NULL);
  sp = subllm_session_default_params();
  sp.n_ctx = 32;
  EXPECT_STATUS(subllm_session_new(m, &sp, &s), SUBLLM_OK);

  /* before any eval */
  EXPECT_STATUS(subllm_get_logits(s, logits, 8, &n), SUBLLM_ERR_NO_DATA);
  EXPECT_STATUS(subllm_sample(s, NULL, &tok), SUBLLM_ERR_NO_DATA);

  /* failed evals leave the session unchanged */
  EXPECT_STATUS(subllm_eval(s, bad, 1), SUBLLM_ERR_INVALID_TOKEN);
  EXPECT_STATUS(subllm_eval(s, NULL, 3), SUBLLM_ERR_NULL);
  int32_t many[40];
  for (int i = 0; i < 40; i++) many[i] = toks[i % n_prompt];
  EXPECT_STATUS(subllm_eval(s, many, 40), SUBLLM_ERR_CONTEXT_FULL);
  EXPECT(n_past(s) == 0);
  EXPECT_STATUS(subllm_eval(s, toks, n_prompt), SUBLLM_OK);
  EXPECT(n_past(s) == n_prompt);
  EXPECT_STATUS(subllm_eval(s, many, 40), SUBLLM_ERR_CONTEXT_FULL);
  EXPECT_STATUS(subllm_eval(s, bad + 1, 1), SUBLLM_ERR_INVALID_TOKEN);
  EXPECT(n_past(s) == n_prompt);

  /* logits */
  EXPECT_STATUS(subllm_get_logits(s, logits, 8, &n), SUBLLM_ERR_BUFFER_TOO_SMALL);
  EXPECT(n == info.n_vocab);
  EXPECT_STATUS(subllm_get_logits(s, NULL, 0, NULL), SUBLLM_ERR_NULL);
  float *all = malloc(sizeof(float) * info.n_vocab);
  float *again = malloc(sizeof(float) * info.n_vocab);
  EXPECT_STATUS(subllm_get_logits(s, all, info.n_vocab, &n), SUBLLM_OK);

  /* sampling: bad values refused, greedy is the argmax */
  subllm_sampler_params p = subllm_sampler_default_params();
  p.temperature = NAN;
  EXPECT_STATUS(subllm_sample(s, &p, &tok), SUBLLM_ERR_INVALID_ARGUMENT);
  p = subllm_sampler_default_params();
  p.top_p = 2.0f;
  EXPECT_STATUS(subllm_sample(s, &p, &tok), SUBLLM_ERR_INVALID_ARGUMENT);
  p = subllm_sampler_default_params();
  p.repeat_penalty = -1.0f;
  EXPECT_STATUS(subllm_sample(s, &p, &tok), SUBLLM_ERR_INVALID_ARGUMENT);
  EXPECT_STATUS(subllm_sample(s, &p, NULL), SUBLLM_ERR_NULL);
  p = subllm_sampler_default_params();
  p.temperature = 0.0f;
  p.repeat_penalty = 1.0f;
  EXPECT_STATUS(subllm_sample(s, &p, &tok), SUBLLM_OK);
  int32_t best = 0;
  for (uint32_t i = 1; i < info.n_vocab; i++)
    if (all[i] > all[best]) best = (int32_t)i;
  EXPECT(tok == best);

  /* truncation: re-evaluating the cut tokens gives the same logits */
  EXPECT_STATUS(subllm_kv_truncate(s, n_prompt - 2), SUBLLM_OK);
  EXPECT(n_past(s) == n_prompt - 2);
  EXPECT_STATUS(subllm_get_logits(s, again, info.n_vocab, &n), SUBLLM_ERR_NO_DATA);
  EXPECT_STATUS(subllm_kv_truncate(s, 1000), SUBLLM_OK);
  EXPECT(n_past(s) == n_prompt - 2);
  EXPECT_STATUS(subllm_eval(s, toks + n_prompt - 2, 2), SUBLLM_OK);
  EXPECT_STATUS(subllm_get_logits(s, again, info.n_vocab, &n), SUBLLM_OK);
  float diff = 0;
  for (uint32_t i = 0; i < info.n_vocab; i++) diff = fmaxf(diff, fabsf(all[i] - again[i]));
  EXPECT(diff < 1e-3f);

  /* generate: bad arguments, then a callback that stops after 3 pieces */
  subllm_generate_params gp = subllm_generate_default_params();
  EXPECT_STATUS(subllm_generate(s, toks, 0, &gp, NULL, NULL, NULL, NULL), SUBLLM_ERR_INVALID_ARGUMENT);
  gp.n_stop = 1;
  EXPECT_STATUS(subllm_generate(s, toks, 1, &gp, NULL, NULL, NULL, NULL), SUBLLM_ERR_NULL);
  gp = subllm_generate_default_params();
  gp.sampler.min_p = NAN;
  EXPECT_STATUS(subllm_generate(s, toks, 1, &gp, NULL, NULL, NULL, NULL), SUBLLM_ERR_INVALID_ARGUMENT);
  EXPECT(n_past(s) == n_prompt);
  EXPECT_STATUS(subllm_kv_reset(s), SUBLLM_OK);
  EXPECT(n_past(s) == 0);
  gp = subllm_generate_default_params();
  gp.sampler.temperature = 0.0f;
  gp.ignore_eos = true;
  gp.n_predict = -1;
  int pieces = 0;
  stop_after = 3;
  subllm_stop_reason why = SUBLLM_STOP_EOG;
  size_t n_gen = 0;
  EXPECT_STATUS(subllm_generate(s, toks, n_prompt, &gp, count_pieces, &pieces, &why, &n_gen), SUBLLM_OK);
  EXPECT(why == SUBLLM_STOP_CALLBACK && pieces == 3 && n_gen >= 3);
  EXPECT(n_past(s) == n_prompt);
  /* no callback: runs to the end of the 32-token context */
  EXPECT_STATUS(subllm_kv_reset(s), SUBLLM_OK);
  EXPECT_STATUS(subllm_generate(s, toks, n_prompt, &gp, NULL, NULL, &why, &n_gen), SUBLLM_OK);
  EXPECT(why == SUBLLM_STOP_CONTEXT_FULL);
  EXPECT(n_past(s) == 32);
  EXPECT_STATUS(subllm_get_stats(s, NULL), SUBLLM_ERR_NULL);
  EXPECT_STATUS(subllm_get_stats(s, &st), SUBLLM_OK);
  EXPECT(st.n_past == 32 && st.n_levels == 1 && st.tokens_per_level[0] == 32);
  EXPECT(st.kv_bytes > 0 && st.kv_bytes == st.kv_bytes_full);

  /* free the model first: the session keeps working; then use-after-free */
  EXPECT_STATUS(subllm_model_free(m), SUBLLM_OK);
  EXPECT_STATUS(subllm_model_free(m), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_model_get_info(m, &info), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_tokenize(m, "hi", 2, true, true, toks, 64, &n), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_kv_truncate(s, 4), SUBLLM_OK);
  EXPECT_STATUS(subllm_eval(s, toks + 4, 2), SUBLLM_OK);
  EXPECT(n_past(s) == 6);
  EXPECT_STATUS(subllm_session_free(s), SUBLLM_OK);
  EXPECT_STATUS(subllm_session_free(s), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_eval(s, toks, 1), SUBLLM_ERR_INVALID_HANDLE);
  EXPECT_STATUS(subllm_get_stats(s, &st), SUBLLM_ERR_INVALID_HANDLE);
  free(all);
  free(again);
}

/* ---- four threads, four sessions, one model */

#define N_THREADS 4
#define N_GEN 16

struct job {
  subllm_model *model;
  const char *prompt;
  int32_t out[N_GEN];
  size_t n_out;
  subllm_status status;
};

static void *run_job(void *arg) {
  struct job *j = arg;
  int32_t toks[128];
  size_t n = 0;
  j->n_out = 0;
  j->status = subllm_tokenize(j->model, j->prompt, strlen(j->prompt), true, true, toks, 128, &n);
  if (j->status != SUBLLM_OK) return NULL;
  subllm_session_params sp = subllm_session_default_params();
  sp.n_ctx = 256;
  sp.n_threads = 1;
  subllm_session *s = NULL;
  if ((j->status = subllm_session_new(j->model, &sp, &s)) != SUBLLM_OK) return NULL;
  subllm_sampler_params p = subllm_sampler_default_params();
  p.temperature = 0.8f;
  p.seed = 42;
  if ((j->status = subllm_eval(s, toks, n)) != SUBLLM_OK) goto done;
  for (int i = 0; i < N_GEN; i++) {
    int32_t t;
    if ((j->status = subllm_sample(s, &p, &t)) != SUBLLM_OK) goto done;
    j->out[j->n_out++] = t;
    if ((j->status = subllm_eval(s, &t, 1)) != SUBLLM_OK) goto done;
  }
done:
  subllm_session_free(s);
  return NULL;
}

static void threads_match_sequential(const char *path) {
  static const char *prompts[N_THREADS] = {
      "Once upon a time", "The capital of France is", "def fibonacci(n):", "1, 2, 3, 4,"};
  subllm_model *m = NULL;
  EXPECT_STATUS(subllm_model_load(path, NULL, &m), SUBLLM_OK);
  struct job seq[N_THREADS], par[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) {
    seq[i].model = par[i].model = m;
    seq[i].prompt = par[i].prompt = prompts[i];
    run_job(&seq[i]);
    EXPECT_STATUS(seq[i].status, SUBLLM_OK);
  }
  pthread_t th[N_THREADS];
  for (int i = 0; i < N_THREADS; i++) EXPECT(pthread_create(&th[i], NULL, run_job, &par[i]) == 0);
  for (int i = 0; i < N_THREADS; i++) pthread_join(th[i], NULL);
  for (int i = 0; i < N_THREADS; i++) {
    EXPECT_STATUS(par[i].status, SUBLLM_OK);
    EXPECT(par[i].n_out == N_GEN && seq[i].n_out == N_GEN);
    EXPECT(memcmp(par[i].out, seq[i].out, sizeof par[i].out) == 0);
  }
  /* the prompts differ, so the answers should too */
  EXPECT(memcmp(seq[0].out, seq[1].out, sizeof seq[0].out) != 0);
  EXPECT_STATUS(subllm_model_free(m), SUBLLM_OK);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
    return 2;
  }
  hostile_arguments(argv[1]);
  threads_match_sequential(argv[1]);
  if (failures) {
    fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  printf("abi_test: all passed\n");
  return 0;
}
