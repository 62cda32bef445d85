// Element-order-preserving copy (reshape, or materialising a constant): output element with
// row-major index f takes input element f.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 source is a weight

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(5) var<storage, read> W: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let y = win(8u);
    let per = P[2] * y.w;
    let p = i / per;
    let r = P[1] + (i % per) / y.w;
    let c = i % y.w;
    let f = (p * y.h + r) * y.w + c;
    var v: f32;
    if (P[13] != 0u) {
        v = W[f];
    } else {
        v = f32(X[flat(win(3u), f)]);
    }
    Y[at(y, p, r, c)] = T2(v);
}
