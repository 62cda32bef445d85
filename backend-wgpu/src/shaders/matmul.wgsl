// Batched matrix product with numpy broadcasting of the batch axes; either operand an arena
// window or a weight. One invocation per output element, fma over k in order.
//
// P: 0 n, 1 r0, 2 rows, 3 A, 8 B, 13 Y, 18 m, 19 k, 20 n, 21 a is weight, 22 b is weight,
//    23 b is 1-D, 24 batch rank, 25..29 batch dims, 29..33 A plane strides, 33..37 B plane
//    strides, 37 act

@group(0) @binding(1) var<storage, read_write> XA: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(3) var<storage, read_write> XB: array<T3>;
@group(0) @binding(5) var<storage, read> WA: array<f32>;
@group(0) @binding(6) var<storage, read> WB: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let m = P[18];
    let k = P[19];
    let n = P[20];
    let per = P[2] * n;
    let bi = i / per;
    let ii = P[1] + (i % per) / n;
    let j = i % n;
    var rest = bi;
    var pa = 0u;
    var pb = 0u;
    let nb = P[24];
    for (var t = 0u; t < nb; t++) {
        let ax = nb - 1u - t;
        let d = P[25u + ax];
        pa += (rest % d) * P[29u + ax];
        pb += (rest % d) * P[33u + ax];
        rest = rest / d;
    }
    let a = win(3u);
    let b = win(8u);
    let wa = P[21] != 0u;
    let wb = P[22] != 0u;
    let b1 = P[23] != 0u;
    var acc = 0.0;
    for (var t = 0u; t < k; t++) {
        var av: f32;
        if (wa) {
            av = WA[(pa * m + ii) * k + t];
        } else {
            av = f32(XA[at(a, pa, ii, t)]);
        }
        var bv: f32;
        if (wb) {
            bv = WB[(pb * k + t) * n + j];
        } else if (b1) {
            bv = f32(XB[at(b, 0u, 0u, t)]);
        } else {
            bv = f32(XB[at(b, pb, t, j)]);
        }
        acc = fma(av, bv, acc);
    }
    Y[flat(win(13u), (bi * m + ii) * n + j)] = T2(act(37u, acc));
}
