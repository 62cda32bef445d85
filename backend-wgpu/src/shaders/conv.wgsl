// Direct convolution: one invocation per output element. The taps are summed with fma as four
// independent chains over the input channels (chain s takes ci = s, s + 4, ...; the channels
// left after the last group of four go to chain 0), each in (ci, ky, kx) order, added as
// (c0 + c1) + (c2 + c3): one chain of dependent fma made every output wait for its whole sum.
// Then bias, residual and activation (the unfused Conv -> Add -> act order). The order depends
// only on the layer, never on the rows a call produces.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 R, 18 cin, 19 m, 20 cg, 21 mg, 22 kh, 23 kw,
//    24 sh, 25 sw, 26 dh, 27 dw, 28 pt, 29 pl, 30 has_bias, 31 has_res, 32 act

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(3) var<storage, read_write> R: array<T3>;
@group(0) @binding(5) var<storage, read> W: array<f32>;
@group(0) @binding(6) var<storage, read> B: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let x = win(3u);
    let y = win(8u);
    let per = P[2] * y.w;
    let p = i / per;
    let oy = P[1] + (i % per) / y.w;
    let ox = i % y.w;
    let m = P[19];
    let cg = P[20];
    let kh = P[22];
    let kw = P[23];
    let b = p / m;
    let mo = p % m;
    let first = b * P[18] + (mo / P[21]) * cg;
    // Offsets of the tap rows inside a plane (-1: padding), worked out once: the ring's modulo
    // stays out of the inner loop.
    var roff: array<i32, 32>;
    let sh = P[24];
    let dh = P[26];
    let pt = i32(P[28]);
    let xh = i32(x.h);
    for (var ky = 0u; ky < kh; ky++) {
        let iy = i32(oy * sh + ky * dh) - pt;
        if (iy >= 0 && iy < xh) {
            roff[ky] = i32((u32(iy) % x.cap) * x.stride);
        } else {
            roff[ky] = -1;
        }
    }
    // Parameters in registers: the loops below read nothing from P.
    let plane = x.cap * x.stride;
    let ix0 = i32(ox * P[25]) - i32(P[29]);
    let dw = i32(P[27]);
    let xw = i32(x.w);
    let xbase = x.base + first * plane;
    let taps = kh * kw;
    var c0 = 0.0;
    var c1 = 0.0;
    var c2 = 0.0;
    var c3 = 0.0;
    var ci = 0u;
    for (; ci + 4u <= cg; ci += 4u) {
        let pbase = xbase + ci * plane;
        let wc = (mo * cg + ci) * taps;
        for (var ky = 0u; ky < kh; ky++) {
            let r = roff[ky];
            if (r >= 0) {
                let rbase = pbase + u32(r);
                let wk = wc + ky * kw;
                for (var kx = 0u; kx < kw; kx++) {
                    let ix = ix0 + i32(kx) * dw;
                    if (ix >= 0 && ix < xw) {
                        let o = rbase + u32(ix);
                        c0 = fma(W[wk + kx], f32(X[o]), c0);
                        c1 = fma(W[wk + taps + kx], f32(X[o + plane]), c1);
                        c2 = fma(W[wk + 2u * taps + kx], f32(X[o + 2u * plane]), c2);
                        c3 = fma(W[wk + 3u * taps + kx], f32(X[o + 3u * plane]), c3);
                    }
                }
            }
        }
    }
    var wi = (mo * cg + ci) * taps;
    for (; ci < cg; ci++) {
        let pbase = xbase + ci * plane;
        for (var ky = 0u; ky < kh; ky++) {
            let r = roff[ky];
            if (r >= 0) {
                let rbase = pbase + u32(r);
                for (var kx = 0u; kx < kw; kx++) {
                    let ix = ix0 + i32(kx) * dw;
                    if (ix >= 0 && ix < xw) {
                        c0 = fma(W[wi + kx], f32(X[rbase + u32(ix)]), c0);
                    }
                }
            }
            wi += kw;
        }
    }
    var acc = (c0 + c1) + (c2 + c3);
    if (P[30] != 0u) {
        acc = acc + B[mo];
    }
    if (P[31] != 0u) {
        acc = acc + f32(R[at(win(13u), p, oy, ox)]);
    }
    Y[at(y, p, oy, ox)] = T2(act(32u, acc));
}
