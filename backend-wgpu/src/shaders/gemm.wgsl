// Gemm: y = act(alpha * A'B' + beta * C), B (and C) weights; one invocation per output element,
// the product summed with fma over k in order.
//
// P: 0 n, 1 first_row, 2 rows, 3 A, 8 Y, 13 K, 14 N, 15 trans_a, 16 trans_b, 17 alpha,
//    18 beta, 19 has_c, 20 c row stride, 21 c column stride, 22 act

@group(0) @binding(1) var<storage, read_write> A: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(5) var<storage, read> B: array<f32>;
@group(0) @binding(6) var<storage, read> C: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let a = win(3u);
    let y = win(8u);
    let n = P[14];
    let row = P[1] + i / n;
    let j = i % n;
    let k = P[13];
    let ta = P[15] != 0u;
    let tb = P[16] != 0u;
    var acc = 0.0;
    for (var t = 0u; t < k; t++) {
        var av: f32;
        if (ta) {
            av = f32(A[at(a, 0u, t, row)]);
        } else {
            av = f32(A[at(a, 0u, row, t)]);
        }
        var bv: f32;
        if (tb) {
            bv = B[j * k + t];
        } else {
            bv = B[t * n + j];
        }
        acc = fma(av, bv, acc);
    }
    var v = pf(17u) * acc;
    if (P[19] != 0u) {
        v = v + pf(18u) * C[row * P[20] + j * P[21]];
    }
    Y[at(y, 0u, row, j)] = T2(act(22u, v));
}
