// Max and average pooling as a fold over the input rows a call holds, and global average
// pooling. Mirrors backend-cpu/src/ops/pool.rs: an output row is started by the call holding
// its first in-bounds tap row, takes every tap row the call holds, and is finished (averages
// divided) by the call holding its last; the output element is the accumulator between calls.

struct PoolParams {
    u64 arena;
    Win x;          // input rows present: x.first .. x.first + x.rows
    Win y;          // output rows to fold into
    int is_max;
    int count_include_pad;
    int kh, kw, sh, sw, dh, dw;
    int pt, pl, pb, pr;   // pads: top, left, bottom, right
};

// Taps of one output position along an axis that land in padded coordinates [lo, hi).
__device__ int pool_count(int o, int k, int s, int d, int lo, int hi) {
    int c = 0;
    for (int t = 0; t < k; ++t) {
        int q = o * s + t * d;
        if (q >= lo && q < hi) ++c;
    }
    return c;
}

extern "C" __global__ void pool2d(PoolParams p) {
    i64 wout = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * wout)
    float* arena = (float*)p.arena;
    int ox = (int)(tid % wout);
    i64 t = tid / wout;
    int oy = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int h = p.x.h, w = p.x.w;
    int a = p.x.first, b = p.x.first + p.x.rows;
    int first = -1, last = -1, any = 0;
    for (int ky = 0; ky < p.kh; ++ky) {
        int iy = oy * p.sh + ky * p.dh - p.pt;
        if (iy < 0 || iy >= h) continue;
        if (first < 0) first = iy;
        last = iy;
        if (iy >= a && iy < b) any = 1;
    }
    // The host checks every output row has a tap; a call holding none of its taps skips it.
    if (first < 0 || !any) return;
    i64 o = at(p.y, plane, oy, ox);
    float acc = first >= a ? (p.is_max ? __int_as_float(0xff800000) : 0.0f) : arena[o];
    for (int ky = 0; ky < p.kh; ++ky) {
        int iy = oy * p.sh + ky * p.dh - p.pt;
        if (iy < 0 || iy >= h || iy < a || iy >= b) continue;
        i64 row = at(p.x, plane, iy, 0);
        for (int kx = 0; kx < p.kw; ++kx) {
            int ix = ox * p.sw + kx * p.dw - p.pl;
            if (ix < 0 || ix >= w) continue;
            float v = arena[row + ix];
            acc = p.is_max ? fmaxf(acc, v) : acc + v;
        }
    }
    if (last < b && !p.is_max) {
        int ch, cw;
        if (p.count_include_pad) {
            ch = pool_count(oy, p.kh, p.sh, p.dh, 0, h + p.pt + p.pb);
            cw = pool_count(ox, p.kw, p.sw, p.dw, 0, w + p.pl + p.pr);
        } else {
            ch = pool_count(oy, p.kh, p.sh, p.dh, p.pt, h + p.pt);
            cw = pool_count(ox, p.kw, p.sw, p.dw, p.pl, w + p.pl);
        }
        acc = acc / (float)(ch * cw);
    }
    arena[o] = acc;
}

struct GapParams {
    u64 arena;
    Win x;
    Win y;          // [N, C, 1, ...] held whole
    int streaming;  // rank-4 input, rows x.first .. x.first + x.rows folded into running sums
    int size;       // elements per channel
    int rows_per;   // tensor rows per channel (whole inputs of rank != 4)
    int pad_;
};

// One thread per (n, c); sums in row-major order, divided once (by the call with the last row).
extern "C" __global__ void global_avg_pool(GapParams p) {
    THREAD_INDEX((i64)p.x.dims[0] * p.x.dims[1])
    float* arena = (float*)p.arena;
    i64 o = at_flat(p.y, tid);
    int h = p.x.h, w = p.x.w;
    if (p.streaming) {
        int first = p.x.first, end = p.x.first + p.x.rows;
        float acc = first == 0 ? 0.0f : arena[o];
        for (int r = first; r < end; ++r) {
            i64 row = at(p.x, tid, r, 0);
            for (int c = 0; c < w; ++c) acc = acc + arena[row + c];
        }
        arena[o] = end == h ? acc / (float)p.size : acc;
        return;
    }
    float acc = 0.0f;
    for (i64 g = tid * p.rows_per; g < (tid + 1) * p.rows_per; ++g) {
        i64 row = at(p.x, g / h, g % h, 0);
        for (int c = 0; c < w; ++c) acc = acc + arena[row + c];
    }
    arena[o] = acc / (float)p.size;
}
