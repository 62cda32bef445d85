// Convolution (groups, depthwise, dilation, strides, pads), bias, fused residual and fused
// activation; transposed convolution in gather form. Mirrors backend-cpu/src/ops/conv and
// conv_transpose.rs.

struct ConvParams {
    u64 arena;      // float* of the arena
    u64 w;          // weight [M, C/g, kh, kw]
    u64 b;          // bias [M], 0: none
    Win x;          // input rows
    Win y;          // output rows to produce
    Win r;          // residual rows (y's shape), used when has_r
    Act act;
    int has_r;
    int kh, kw, sh, sw, dh, dw, ph, pw;
    int cin, m, cg, mg;
    int pad_;
};

// One thread per output element of the window: (plane = n * M + m, row, col), columns fastest
// so that a warp shares its weights and reads neighbouring inputs. The sum over (ci, ky, kx)
// runs as four independent fmaf chains (input channels ci = s, s + 4, ... in chain s; the
// channels left over after the last group of four in chain 0), added as (c0 + c1) + (c2 + c3):
// a one-row firing has few threads, and a single chain of hundreds of dependent fmaf made
// each firing cost the chain's latency. The order depends only on the layer, never on which
// rows a call produces, so by parts stays bit-identical to layer by layer. Taps in the padding
// are skipped; then bias, residual, activation.
extern "C" __global__ void conv2d(ConvParams p) {
    i64 wout = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * wout)
    const float* arena = (const float*)p.arena;
    const float* wt = (const float*)p.w;
    int ox = (int)(tid % wout);
    i64 t = tid / wout;
    int oy = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int m = (int)(plane % p.m);
    i64 n = plane / p.m;
    int g = m / p.mg;
    int hin = p.x.h, win = p.x.w;
    int taps = p.kh * p.kw;
    i64 xbase = n * p.cin + (i64)g * p.cg;
    const float* wm = wt + (i64)m * p.cg * taps;
    float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;
    int ci = 0;
    for (; ci + 4 <= p.cg; ci += 4) {
        for (int ky = 0; ky < p.kh; ++ky) {
            int iy = oy * p.sh + ky * p.dh - p.ph;
            if (iy < 0 || iy >= hin) continue;
            i64 r0 = at(p.x, xbase + ci, iy, 0);
            i64 r1 = at(p.x, xbase + ci + 1, iy, 0);
            i64 r2 = at(p.x, xbase + ci + 2, iy, 0);
            i64 r3 = at(p.x, xbase + ci + 3, iy, 0);
            const float* w0 = wm + (i64)ci * taps + ky * p.kw;
            for (int kx = 0; kx < p.kw; ++kx) {
                int ix = ox * p.sw + kx * p.dw - p.pw;
                if (ix < 0 || ix >= win) continue;
                c0 = fmaf(arena[r0 + ix], w0[kx], c0);
                c1 = fmaf(arena[r1 + ix], w0[taps + kx], c1);
                c2 = fmaf(arena[r2 + ix], w0[2 * taps + kx], c2);
                c3 = fmaf(arena[r3 + ix], w0[3 * taps + kx], c3);
            }
        }
    }
    for (; ci < p.cg; ++ci) {
        const float* wrow = wm + (i64)ci * taps;
        for (int ky = 0; ky < p.kh; ++ky) {
            int iy = oy * p.sh + ky * p.dh - p.ph;
            if (iy < 0 || iy >= hin) continue;
            i64 row = at(p.x, xbase + ci, iy, 0);
            for (int kx = 0; kx < p.kw; ++kx) {
                int ix = ox * p.sw + kx * p.dw - p.pw;
                if (ix < 0 || ix >= win) continue;
                c0 = fmaf(arena[row + ix], wrow[ky * p.kw + kx], c0);
            }
        }
    }
    float acc = (c0 + c1) + (c2 + c3);
    if (p.b) acc = acc + ((const float*)p.b)[m];
    if (p.has_r) acc = acc + arena[at(p.r, plane, oy, ox)];
    ((float*)p.arena)[at(p.y, plane, oy, ox)] = activate(p.act, acc);
}

struct ConvTransposeParams {
    u64 arena;
    u64 w;          // weight [C, M/g, kh, kw]
    u64 b;          // bias [M], 0: none
    Win x;
    Win y;
    Act act;
    int kh, kw, sh, sw, dh, dw, ph, pw;
    int c, m, cg, mg;
};

// Output (oy, ox) receives input (iy, ix) through tap (ky, kx) when
// iy * sh + ky * dh == oy + ph (same for columns). Sum over (ci, ky, kx) as `acc + v * w`,
// then bias and activation: the CPU's gather order.
extern "C" __global__ void conv_transpose2d(ConvTransposeParams p) {
    i64 wout = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * wout)
    const float* arena = (const float*)p.arena;
    const float* wt = (const float*)p.w;
    int ox = (int)(tid % wout);
    i64 t = tid / wout;
    int oy = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int m = (int)(plane % p.m);
    i64 n = plane / p.m;
    int grp = m / p.mg, mm = m % p.mg;
    float acc = 0.0f;
    for (int ci = grp * p.cg; ci < (grp + 1) * p.cg; ++ci) {
        for (int ky = 0; ky < p.kh; ++ky) {
            int ty = oy + p.ph - ky * p.dh;
            if (ty < 0 || ty % p.sh != 0) continue;
            int iy = ty / p.sh;
            if (iy >= p.x.h) continue;
            i64 row = at(p.x, n * p.c + ci, iy, 0);
            const float* taps = wt + (((i64)ci * p.mg + mm) * p.kh + ky) * p.kw;
            for (int kx = 0; kx < p.kw; ++kx) {
                int tx = ox + p.pw - kx * p.dw;
                if (tx < 0 || tx % p.sw != 0) continue;
                int ix = tx / p.sw;
                if (ix >= p.x.w) continue;
                acc = acc + arena[row + ix] * taps[kx];
            }
        }
    }
    float bv = p.b ? ((const float*)p.b)[m] : 0.0f;
    acc = acc + bv;
    ((float*)p.arena)[at(p.y, plane, oy, ox)] = activate(p.act, acc);
}
