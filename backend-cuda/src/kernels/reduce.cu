// Reductions (mean, sum, max) over axes, and softmax, on whole tensors. Mirrors
// backend-cpu/src/ops/reduce.rs: each output folds its inputs in row-major order of the
// reduced axes (a mean divides the sum once); softmax subtracts the maximum, sums the
// exponentials in axis order, and divides each by the sum.

struct ReduceParams {
    u64 arena;
    Win x;
    Win y;
    int kind;               // 0 mean, 1 sum, 2 max
    int keepdims;
    int reduced[MAX_RANK];  // per input axis
    float count;            // elements per output (mean)
    int pad_;
};

extern "C" __global__ void reduce(ReduceParams p) {
    int r = p.x.rank;
    // Output element tid: its index over the kept axes (reduced axes of size 1 when keepdims).
    i64 total = 1;
    for (int a = 0; a < p.y.rank; ++a) total *= p.y.dims[a];
    THREAD_INDEX(total)
    float* arena = (float*)p.arena;
    int yi[MAX_RANK], xi[MAX_RANK];
    unravel(tid, p.y.dims, p.y.rank, yi);
    int rdims[MAX_RANK], raxis[MAX_RANK], nr = 0, j = 0;
    i64 span = 1;
    for (int a = 0; a < r; ++a) {
        if (p.reduced[a]) {
            xi[a] = 0;
            raxis[nr] = a;
            rdims[nr++] = p.x.dims[a];
            span *= p.x.dims[a];
            if (p.keepdims) ++j;
        } else {
            xi[a] = yi[j++];
        }
    }
    float acc = p.kind == 2 ? __int_as_float(0xff800000) : 0.0f;
    int ri[MAX_RANK];
    for (i64 s = 0; s < span; ++s) {
        unravel(s, rdims, nr, ri);
        for (int q = 0; q < nr; ++q) xi[raxis[q]] = ri[q];
        float v = arena[at_index(p.x, xi)];
        acc = p.kind == 2 ? fmaxf(acc, v) : acc + v;
    }
    if (p.kind == 0) acc = acc / p.count;
    arena[at_flat(p.y, tid)] = acc;
}

struct SoftmaxParams {
    u64 arena;
    Win x;
    Win y;
    int outer, len, inner;
    int pad_;
};

extern "C" __global__ void softmax(SoftmaxParams p) {
    THREAD_INDEX((i64)p.outer * p.inner)
    float* arena = (float*)p.arena;
    i64 o = tid / p.inner, i = tid % p.inner;
    float m = __int_as_float(0xff800000);
    for (int l = 0; l < p.len; ++l) m = fmaxf(m, arena[at_flat(p.x, (o * p.len + l) * p.inner + i)]);
    float sum = 0.0f;
    for (int l = 0; l < p.len; ++l) {
        i64 f = (o * p.len + l) * p.inner + i;
        float e = expf(arena[at_flat(p.x, f)] - m);
        arena[at_flat(p.y, f)] = e;
        sum = sum + e;
    }
    for (int l = 0; l < p.len; ++l) {
        i64 f = (o * p.len + l) * p.inner + i;
        i64 q = at_flat(p.y, f);
        arena[q] = arena[q] / sum;
    }
}
