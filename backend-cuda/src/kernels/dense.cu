// Gemm (alpha * A'B' + beta * C) and MatMul with batch broadcasting. Mirrors
// backend-cpu/src/ops/dense.rs: each output element is acc = fmaf(a[k], b[k], acc) for
// k = 0 .. K in order, the CPU gemm engine's reduction, whatever rows a call produces.
// (cuBLAS is not used: its kernels choose tilings and split-K by problem size, so a few rows
// at a time would not give the bits of the whole layer.)

struct GemmParams {
    u64 arena;
    u64 b;          // weight B: [K, N], or [N, K] when trans_b
    u64 c;          // weight C broadcast to [M, N], 0: none
    Win a;          // A: [M, K], or [K, M] when trans_a (then held whole)
    Win y;          // [M, N]
    Act act;
    float alpha, beta;
    int trans_a, trans_b;
    int k, n;
    int c_rs, c_cs; // C element (i, j) at c[i * c_rs + j * c_cs]
};

extern "C" __global__ void gemm(GemmParams p) {
    i64 n = p.n;
    THREAD_INDEX((i64)p.y.rows * n)
    const float* arena = (const float*)p.arena;
    const float* b = (const float*)p.b;
    int j = (int)(tid % n);
    int i = p.y.first + (int)(tid / n);
    float acc = 0.0f;
    for (int kk = 0; kk < p.k; ++kk) {
        float av = p.trans_a ? arena[at(p.a, 0, kk, i)] : arena[at(p.a, 0, i, kk)];
        float bv = p.trans_b ? b[(i64)j * p.k + kk] : b[(i64)kk * p.n + j];
        acc = fmaf(av, bv, acc);
    }
    float v;
    if (p.c) {
        float cv = ((const float*)p.c)[(i64)i * p.c_rs + (i64)j * p.c_cs];
        float l = p.alpha * acc, r = p.beta * cv;
        v = l + r;
    } else {
        v = p.alpha * acc;
    }
    ((float*)p.arena)[at(p.y, 0, i, j)] = activate(p.act, v);
}

struct MatMulParams {
    u64 arena;
    u64 a_ptr;      // arena or weight buffer
    u64 b_ptr;
    Win a;          // as a window (a weight: whole window at base 0); rank 1: one row
    Win b;
    Win y;
    Act act;
    int m, k, n;
    int nb;                 // batch axes
    int batch[MAX_RANK];    // broadcast batch dims
    int astr[MAX_RANK];     // plane stride of A along each batch axis (0: broadcast)
    int bstr[MAX_RANK];
    int row_lo;             // output rows produced: row_lo .. row_lo + rows of the [.., M, N] view
    int rows;
};

extern "C" __global__ void matmul(MatMulParams p) {
    i64 per = (i64)p.rows * p.n;
    i64 nbatch = 1;
    for (int a = 0; a < p.nb; ++a) nbatch *= p.batch[a];
    THREAD_INDEX(nbatch * per)
    const float* A = (const float*)p.a_ptr;
    const float* B = (const float*)p.b_ptr;
    i64 bi = tid / per;
    int i = p.row_lo + (int)((tid % per) / p.n);
    int j = (int)(tid % p.n);
    int idx[MAX_RANK];
    unravel(bi, p.batch, p.nb, idx);
    i64 pa = 0, pb = 0;
    for (int a = 0; a < p.nb; ++a) {
        pa += (i64)idx[a] * p.astr[a];
        pb += (i64)idx[a] * p.bstr[a];
    }
    int a_matrix = p.a.rank >= 2, b_matrix = p.b.rank >= 2;
    float acc = 0.0f;
    for (int kk = 0; kk < p.k; ++kk) {
        float av = a_matrix ? A[at(p.a, pa, i, kk)] : A[at(p.a, 0, 0, kk)];
        float bv = b_matrix ? B[at(p.b, pb, kk, j)] : B[at(p.b, 0, 0, kk)];
        acc = fmaf(av, bv, acc);
    }
    // The row-major index of (bi, i, j) is the same in the output (promoted axes are 1).
    i64 f = (bi * p.m + i) * p.n + j;
    ((float*)p.arena)[at_flat(p.y, f)] = activate(p.act, acc);
}
