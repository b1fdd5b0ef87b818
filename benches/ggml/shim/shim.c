// Thin C shim over ggml: builds one GGML_OP_SOFT_MAX graph and runs it on
// the CPU backend's compute path (ggml_graph_compute with a persistent
// threadpool, or a disposable one per call when pool == 0).
#include "ggml.h"
#include "ggml-cpu.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct shim {
    struct ggml_context *ctx;
    struct ggml_tensor *a, *mask, *out;
    struct ggml_cgraph *gf;
    struct ggml_cplan plan;
    struct ggml_threadpool *tp;
    void *work;
} shim;

// mask_kind: 0 = none, 1 = f16 mask tensor [keys, queries, 1, 1] (contents filled by the caller)
shim *shim_new(int heads, int queries, int keys, int mask_kind, float scale, float max_bias,
               int n_threads, int pool, int poll) {
    shim *s = calloc(1, sizeof(shim));
    if (!s) return NULL;
    size_t n = (size_t)heads * queries * keys;
    size_t mem = 2 * n * sizeof(float) + (size_t)queries * keys * 2 + ggml_graph_overhead() +
                 16 * ggml_tensor_overhead() + (1 << 20);
    struct ggml_init_params ip = {mem, NULL, false};
    s->ctx = ggml_init(ip);
    if (!s->ctx) {
        free(s);
        return NULL;
    }
    s->a = ggml_new_tensor_4d(s->ctx, GGML_TYPE_F32, keys, queries, heads, 1);
    s->mask = mask_kind ? ggml_new_tensor_4d(s->ctx, GGML_TYPE_F16, keys, queries, 1, 1) : NULL;
    s->out = ggml_soft_max_ext(s->ctx, s->a, s->mask, scale, max_bias);
    s->gf = ggml_new_graph(s->ctx);
    ggml_build_forward_expand(s->gf, s->out);
    if (pool) {
        struct ggml_threadpool_params tpp = ggml_threadpool_params_default(n_threads);
        tpp.poll = (uint32_t)poll;
        s->tp = ggml_threadpool_new(&tpp);
    }
    s->plan = ggml_graph_plan(s->gf, n_threads, s->tp);
    if (s->plan.work_size) {
        s->work = malloc(s->plan.work_size);
        s->plan.work_data = s->work;
    }
    return s;
}

int shim_run(shim *s) { return (int)ggml_graph_compute(s->gf, &s->plan); }
float *shim_src(shim *s) { return (float *)s->a->data; }
float *shim_dst(shim *s) { return (float *)s->out->data; }
uint16_t *shim_mask(shim *s) { return s->mask ? (uint16_t *)s->mask->data : NULL; }
size_t shim_work_size(shim *s) { return s->plan.work_size; }
void shim_free(shim *s) {
    if (s->tp) ggml_threadpool_free(s->tp);
    free(s->work);
    ggml_free(s->ctx);
    free(s);
}
const char *shim_version(void) { return ggml_version(); }
const char *shim_commit(void) { return ggml_commit(); }
