// Transposed convolution in gather form: each output element sums x * w over (ci, ky, kx) in
// that order (the CPU backend's order), then adds the bias and applies the activation.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 c, 14 m, 15 cg, 16 mg, 17 kh, 18 kw, 19 sh,
//    20 sw, 21 dh, 22 dw, 23 pt, 24 pl, 25 has_bias, 26 act

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
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
    let m = P[14];
    let cg = P[15];
    let mg = P[16];
    let kh = P[17];
    let kw = P[18];
    let b = p / m;
    let mo = p % m;
    let grp = mo / mg;
    let mm = mo % mg;
    let sh = P[19];
    let sw = P[20];
    let dh = P[21];
    let dw = P[22];
    let pt = P[23];
    let pl = P[24];
    let xc = P[13];
    var acc = 0.0;
    for (var ci = grp * cg; ci < (grp + 1u) * cg; ci++) {
        for (var ky = 0u; ky < kh; ky++) {
            let ty = i32(oy + pt) - i32(ky * dh);
            if (ty < 0 || u32(ty) % sh != 0u || u32(ty) / sh >= x.h) {
                continue;
            }
            let iy = u32(ty) / sh;
            for (var kx = 0u; kx < kw; kx++) {
                let tx = i32(ox + pl) - i32(kx * dw);
                if (tx < 0 || u32(tx) % sw != 0u || u32(tx) / sw >= x.w) {
                    continue;
                }
                let wv = W[((ci * mg + mm) * kh + ky) * kw + kx];
                acc += f32(X[at(x, b * xc + ci, iy, u32(tx) / sw)]) * wv;
            }
        }
    }
    if (P[25] != 0u) {
        acc += B[mo];
    }
    Y[at(y, p, oy, ox)] = T2(act(26u, acc));
}
