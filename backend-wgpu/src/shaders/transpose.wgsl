// Axis permutation: output element (multi-index idx) reads input element with row-major
// index sum(idx[i] * xstride[perm[i]]).
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 rank, 14..20 output dims, 20..26 input strides seen
//    along each output axis

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

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
    var rest = (p * y.h + r) * y.w + c;
    var fx = 0u;
    let rank = P[13];
    for (var k = 0u; k < rank; k++) {
        let a = rank - 1u - k;
        let d = P[14u + a];
        fx += (rest % d) * P[20u + a];
        rest = rest / d;
    }
    Y[at(y, p, r, c)] = T2(f32(X[flat(win(3u), fx)]));
}
