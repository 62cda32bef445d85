// Softmax: one invocation per (outer, inner) position: the maximum, the sum of exponentials in
// axis order, then each exponential divided by the sum.
//
// P: 0 n, 1 X, 6 Y, 11 len, 12 inner

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let t = index(id, nw);
    if (t >= P[0]) {
        return;
    }
    let x = win(1u);
    let y = win(6u);
    let len = P[11];
    let inner = P[12];
    let base = (t / inner) * len * inner + t % inner;
    var m = bitcast<f32>(0xff800000u);
    for (var l = 0u; l < len; l++) {
        m = max(m, f32(X[flat(x, base + l * inner)]));
    }
    var sum = 0.0;
    for (var l = 0u; l < len; l++) {
        sum = sum + exp(f32(X[flat(x, base + l * inner)]) - m);
    }
    for (var l = 0u; l < len; l++) {
        let e = exp(f32(X[flat(x, base + l * inner)]) - m);
        Y[flat(y, base + l * inner)] = T2(e / sum);
    }
}
