/*
 * A frugal backend plugin in C: naive f32 convolution (any groups, strides, dilations, pads,
 * bias, residual, activation), standalone activations and copies. Written against
 * plugins/include/frugal_plugin.h alone; tests/plugins.rs builds it with the system C compiler
 * (when there is one) and runs a small network by parts through it.
 *
 *     cc -shared -fPIC -O2 -I plugins/include plugins/example-c/example.c -o libexample_c.so -lm
 *     frugal run zoo:... --backend plugin:./libexample_c.so
 */
#include "frugal_plugin.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *arena;
    size_t arena_len; /* floats */
    float **weights;
    uint64_t *weight_len;
    size_t nweights;
} Backend;

#define FAIL(err, ...)                                                   \
    do {                                                                 \
        snprintf((err)->message, sizeof (err)->message, __VA_ARGS__);    \
        return FRUGAL_ERROR;                                             \
    } while (0)

/* ---- windows ---------------------------------------------------------------------------- */

static void geometry(const FrugalWindow *w, size_t *planes, size_t *h, size_t *wd) {
    size_t p = 1;
    if (w->rank == 0) { *planes = 1; *h = 1; *wd = 1; return; }
    if (w->rank == 1) { *planes = 1; *h = 1; *wd = (size_t)w->dims[0]; return; }
    for (uint32_t a = 0; a + 2 < w->rank; a++) p *= (size_t)w->dims[a];
    *planes = p;
    *h = (size_t)w->dims[w->rank - 2];
    *wd = (size_t)w->dims[w->rank - 1];
}

/* Arena index of row `row` of plane `plane`: rows wrap around the ring (row % capacity). */
static size_t row_start(const FrugalWindow *w, size_t plane, size_t row) {
    size_t cap = w->capacity ? (size_t)w->capacity : 1;
    return (size_t)w->offset / 4 + (plane * cap + row % cap) * (size_t)w->row_stride;
}

/* Arena index of element f (row-major over the whole tensor). */
static size_t index_of(const FrugalWindow *w, size_t f) {
    size_t planes, h, wd;
    geometry(w, &planes, &h, &wd);
    if (h == 0) h = 1;
    if (wd == 0) wd = 1;
    size_t g = f / wd;
    return row_start(w, g / h, g % h) + f % wd;
}

/* Every row slot of the window lies inside the arena, and it holds f32. */
static int fits(const Backend *b, const FrugalWindow *w) {
    size_t planes, h, wd;
    geometry(w, &planes, &h, &wd);
    if (w->dtype != FRUGAL_DTYPE_F32) return 0;
    size_t cap = w->capacity ? (size_t)w->capacity : 1;
    size_t end = (size_t)w->offset / 4 + (planes * cap - 1) * (size_t)w->row_stride + wd;
    return end <= b->arena_len;
}

static float act(const FrugalActivation *a, float x) {
    float v;
    switch (a->kind) {
    case FRUGAL_ACT_RELU: return x > 0.0f ? x : 0.0f;
    case FRUGAL_ACT_CLIP: v = x > a->p0 ? x : a->p0; return v < a->p1 ? v : a->p1;
    case FRUGAL_ACT_LEAKY_RELU: return x >= 0.0f ? x : a->p0 * x;
    case FRUGAL_ACT_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case FRUGAL_ACT_HARD_SIGMOID: v = a->p0 * x + a->p1; return v > 1.0f ? 1.0f : (v > 0.0f ? v : 0.0f);
    case FRUGAL_ACT_HARD_SWISH: v = x / 6.0f + 0.5f; return x * (v > 1.0f ? 1.0f : (v > 0.0f ? v : 0.0f));
    case FRUGAL_ACT_TANH: return tanhf(x);
    case FRUGAL_ACT_ERF: return erff(x);
    default: return x;
    }
}

static const float *weight(const Backend *b, const FrugalWeight *w) {
    uint64_t n = 1;
    for (uint32_t a = 0; a < w->rank; a++) n *= w->dims[a];
    if (w->id >= b->nweights || b->weight_len[w->id] != n) return NULL;
    return b->weights[w->id];
}

/* ---- the module's functions ------------------------------------------------------------- */

static FrugalStatus create(const FrugalOptions *o, FrugalBackend *out, FrugalError *err) {
    (void)o;
    Backend *b = calloc(1, sizeof *b);
    if (!b) FAIL(err, "out of memory");
    *out = b;
    return FRUGAL_OK;
}

static void release(FrugalBackend p) {
    Backend *b = p;
    for (size_t i = 0; i < b->nweights; i++) free(b->weights[i]);
    free(b->weights);
    free(b->weight_len);
    free(b->arena);
    free(b);
}

static FrugalStatus capabilities(FrugalBackend p, FrugalCapabilities *c, FrugalError *err) {
    (void)p; (void)err;
    c->storage_mask = 1u << FRUGAL_DTYPE_F32;
    c->max_buffer_bytes = (uint64_t)1 << 40;
    c->max_binding_bytes = (uint64_t)1 << 40;
    snprintf(c->device, sizeof c->device, "example C plugin (naive f32)");
    snprintf(c->kernels, sizeof c->kernels, "example-c-1");
    return FRUGAL_OK;
}

static FrugalStatus check(FrugalBackend p, FrugalError *err) { (void)p; (void)err; return FRUGAL_OK; }

static FrugalStatus alloc_arena(FrugalBackend p, uint64_t bytes, FrugalError *err) {
    Backend *b = p;
    free(b->arena);
    b->arena_len = (size_t)((bytes + 3) / 4);
    b->arena = calloc(b->arena_len ? b->arena_len : 1, sizeof(float));
    if (!b->arena) FAIL(err, "cannot allocate %llu bytes", (unsigned long long)bytes);
    return FRUGAL_OK;
}

static FrugalStatus upload(FrugalBackend p, const FrugalTensor *t, uint64_t *id, FrugalError *err) {
    Backend *b = p;
    if (t->dtype != FRUGAL_DTYPE_F32) FAIL(err, "only f32 weights");
    float **ws = realloc(b->weights, (b->nweights + 1) * sizeof *ws);
    if (!ws) FAIL(err, "out of memory");
    b->weights = ws;
    uint64_t *lens = realloc(b->weight_len, (b->nweights + 1) * sizeof *lens);
    if (!lens) FAIL(err, "out of memory");
    b->weight_len = lens;
    float *copy = malloc((t->len ? t->len : 1) * sizeof(float));
    if (!copy) FAIL(err, "out of memory");
    memcpy(copy, t->data, t->len * sizeof(float));
    b->weights[b->nweights] = copy;
    b->weight_len[b->nweights] = t->len;
    *id = b->nweights++;
    return FRUGAL_OK;
}

static FrugalStatus prepare(FrugalBackend p, const FrugalKernel *k, FrugalError *err) {
    (void)p; (void)k; (void)err;
    return FRUGAL_OK;
}

static FrugalStatus workspace_bytes(FrugalBackend p, const FrugalKernel *k, uint64_t *bytes, FrugalError *err) {
    (void)p; (void)k; (void)err;
    *bytes = 0;
    return FRUGAL_OK;
}

static FrugalStatus write_rows(FrugalBackend p, const FrugalWindow *dst, const float *src, uint64_t len,
                               uint64_t rows_begin, uint64_t rows_end, FrugalError *err) {
    Backend *b = p;
    size_t planes, h, wd, nrows = (size_t)(rows_end - rows_begin);
    geometry(dst, &planes, &h, &wd);
    if (!fits(b, dst) || len != planes * nrows * wd) FAIL(err, "write: bad window or length");
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t r = dst->first_row; r < dst->first_row + dst->rows; r++)
            memcpy(&b->arena[row_start(dst, pl, r)], &src[(pl * nrows + r - rows_begin) * wd], wd * sizeof(float));
    return FRUGAL_OK;
}

static FrugalStatus read_rows(FrugalBackend p, const FrugalWindow *src, float *dst, uint64_t len,
                         uint64_t rows_begin, uint64_t rows_end, FrugalError *err) {
    Backend *b = p;
    size_t planes, h, wd, nrows = (size_t)(rows_end - rows_begin);
    geometry(src, &planes, &h, &wd);
    if (!fits(b, src) || len != planes * nrows * wd) FAIL(err, "read: bad window or length");
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t r = src->first_row; r < src->first_row + src->rows; r++)
            memcpy(&dst[(pl * nrows + r - rows_begin) * wd], &b->arena[row_start(src, pl, r)], wd * sizeof(float));
    return FRUGAL_OK;
}

static FrugalStatus sync(FrugalBackend p, FrugalError *err) { (void)p; (void)err; return FRUGAL_OK; }

static uint64_t weight_bytes(FrugalBackend p) {
    Backend *b = p;
    uint64_t n = 0;
    for (size_t i = 0; i < b->nweights; i++) n += b->weight_len[i] * 4;
    return n;
}

/* y[n, m, oy, ox] = act(sum_{c, ky, kx} x[n, c, iy, ix] * w[m, c, ky, kx] + bias[m] + r[...]) */
static FrugalStatus conv(FrugalBackend p, const FrugalConv *k, FrugalScratch s, FrugalError *err) {
    Backend *b = p;
    (void)s;
    if (!fits(b, &k->x) || !fits(b, &k->y) || (k->has_residual && !fits(b, &k->r)))
        FAIL(err, "conv: window outside the arena or not f32");
    const float *w = weight(b, &k->w);
    const float *bias = k->has_bias ? weight(b, &k->b) : NULL;
    if (!w || (k->has_bias && !bias)) FAIL(err, "conv: unknown weight");
    size_t C = k->x.dims[1], H = k->x.dims[2], W = k->x.dims[3];
    size_t M = k->y.dims[1], OW = k->y.dims[3], g = k->groups;
    size_t cg = C / g, mg = M / g, kh = k->kernel[0], kw = k->kernel[1];
    size_t planes = k->y.dims[0] * M;
    for (size_t pl = 0; pl < planes; pl++) {
        size_t n = pl / M, m = pl % M, group = m / mg;
        for (size_t oy = k->y.first_row; oy < k->y.first_row + k->y.rows; oy++) {
            for (size_t ox = 0; ox < OW; ox++) {
                float acc = 0.0f;
                for (size_t ci = 0; ci < cg; ci++) {
                    size_t c = group * cg + ci;
                    for (size_t ky = 0; ky < kh; ky++) {
                        long iy = (long)(oy * k->strides[0] + ky * k->dilations[0]) - (long)k->pads[0];
                        if (iy < 0 || iy >= (long)H) continue;
                        const float *row = &b->arena[row_start(&k->x, n * C + c, (size_t)iy)];
                        for (size_t kx = 0; kx < kw; kx++) {
                            long ix = (long)(ox * k->strides[1] + kx * k->dilations[1]) - (long)k->pads[1];
                            if (ix < 0 || ix >= (long)W) continue;
                            acc += row[ix] * w[((m * cg + ci) * kh + ky) * kw + kx];
                        }
                    }
                }
                if (bias) acc += bias[m];
                if (k->has_residual) acc += b->arena[row_start(&k->r, pl, oy) + ox];
                b->arena[row_start(&k->y, pl, oy) + ox] = act(&k->act, acc);
            }
        }
    }
    return FRUGAL_OK;
}

static FrugalStatus unary(FrugalBackend p, const FrugalUnary *k, FrugalScratch s, FrugalError *err) {
    Backend *b = p;
    (void)s;
    if (!fits(b, &k->x) || !fits(b, &k->y)) FAIL(err, "unary: window outside the arena");
    size_t planes, h, wd;
    geometry(&k->y, &planes, &h, &wd);
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t r = k->y.first_row; r < k->y.first_row + k->y.rows; r++)
            for (size_t c = 0; c < wd; c++)
                b->arena[row_start(&k->y, pl, r) + c] = act(&k->act, b->arena[row_start(&k->x, pl, r) + c]);
    return FRUGAL_OK;
}

static FrugalStatus copy(FrugalBackend p, const FrugalCopy *k, FrugalScratch s, FrugalError *err) {
    Backend *b = p;
    (void)s;
    const float *w = NULL;
    if (!fits(b, &k->y)) FAIL(err, "copy: window outside the arena");
    if (k->x.kind == FRUGAL_OPERAND_WEIGHT) {
        if (!(w = weight(b, &k->x.weight))) FAIL(err, "copy: unknown weight");
    } else if (!fits(b, &k->x.window)) {
        FAIL(err, "copy: window outside the arena");
    }
    size_t planes, h, wd;
    geometry(&k->y, &planes, &h, &wd);
    for (size_t pl = 0; pl < planes; pl++)
        for (size_t r = k->y.first_row; r < k->y.first_row + k->y.rows; r++)
            for (size_t c = 0; c < wd; c++) {
                size_t f = (pl * h + r) * wd + c;
                b->arena[row_start(&k->y, pl, r) + c] = w ? w[f] : b->arena[index_of(&k->x.window, f)];
            }
    return FRUGAL_OK;
}

static const FrugalPluginModule MODULE = {
    .abi_version = FRUGAL_PLUGIN_ABI_VERSION,
    .struct_size = sizeof(FrugalPluginModule),
    .name = "example-c",
    .create = create,
    .release = release,
    .capabilities = capabilities,
    .check = check,
    .alloc_arena = alloc_arena,
    .upload = upload,
    .prepare = prepare,
    .workspace_bytes = workspace_bytes,
    .write = write_rows,
    .read = read_rows,
    .sync = sync,
    .weight_bytes = weight_bytes,
    .conv = conv,
    .unary = unary,
    .copy = copy,
    /* every other op family stays NULL: not supported */
};

const FrugalPluginModule *frugal_plugin_entry(void) { return &MODULE; }
