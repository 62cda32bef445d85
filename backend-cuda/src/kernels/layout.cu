// Data movement: concatenation (one launch per input), axis permutation, row-major copy.
// Mirrors backend-cpu/src/ops/layout.rs. Pure copies: no arithmetic, bit-exact by definition.

struct ConcatParams {
    u64 arena;
    Win x;          // one input
    Win y;          // the output
    int axis;
    int off;        // where this input starts along `axis` in the output
    int row_lo;     // input rows to copy: row_lo .. row_hi of every plane
    int row_hi;
};

extern "C" __global__ void concat_piece(ConcatParams p) {
    i64 w = p.x.w;
    i64 nrows = p.row_hi - p.row_lo;
    THREAD_INDEX((i64)p.x.planes * nrows * w)
    float* arena = (float*)p.arena;
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.row_lo + (int)(t % nrows);
    i64 plane = t / nrows;
    int idx[MAX_RANK];
    index_of(p.x, plane, row, col, idx);
    float v = arena[at(p.x, plane, row, col)];
    idx[p.axis] += p.off;
    arena[at_index(p.y, idx)] = v;
}

struct TransposeParams {
    u64 arena;
    Win x;
    Win y;
    int perm[MAX_RANK];     // output axis i is input axis perm[i]
};

extern "C" __global__ void transpose(TransposeParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    float* arena = (float*)p.arena;
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int oi[MAX_RANK], xi[MAX_RANK];
    index_of(p.y, plane, row, col, oi);
    for (int i = 0; i < p.y.rank; ++i) xi[p.perm[i]] = oi[i];
    arena[at(p.y, plane, row, col)] = arena[at_index(p.x, xi)];
}

struct CopyParams {
    u64 arena;
    u64 src;        // arena or weight buffer
    Win x;          // source (a weight: a whole window at base 0)
    Win y;
};

// Output element of row-major index f takes the source element of the same index.
extern "C" __global__ void copy_flat(CopyParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    i64 f = (plane * p.y.h + row) * w + col;
    ((float*)p.arena)[at(p.y, plane, row, col)] = ((const float*)p.src)[at_flat(p.x, f)];
}

struct RowsParams {
    u64 arena;
    u64 host;       // staging: rows host_lo .. host_lo + host_rows of every plane, packed
    Win v;          // the window written or read
    int host_lo;
    int host_rows;
};

// Host rows -> window rows (Backend::write).
extern "C" __global__ void scatter_rows(RowsParams p) {
    i64 w = p.v.w;
    THREAD_INDEX((i64)p.v.planes * p.v.rows * w)
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.v.first + (int)(t % p.v.rows);
    i64 plane = t / p.v.rows;
    i64 s = (plane * p.host_rows + (row - p.host_lo)) * w + col;
    ((float*)p.arena)[at(p.v, plane, row, col)] = ((const float*)p.host)[s];
}

// Window rows -> host rows (Backend::read).
extern "C" __global__ void gather_rows(RowsParams p) {
    i64 w = p.v.w;
    THREAD_INDEX((i64)p.v.planes * p.v.rows * w)
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.v.first + (int)(t % p.v.rows);
    i64 plane = t / p.v.rows;
    i64 s = (plane * p.host_rows + (row - p.host_lo)) * w + col;
    ((float*)p.host)[s] = ((const float*)p.arena)[at(p.v, plane, row, col)];
}
