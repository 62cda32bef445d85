// y = act(x) over the output rows.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 act

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

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
    let r = P[1] + (i % per) / y.w;
    let c = i % y.w;
    Y[at(y, p, r, c)] = T2(act(13u, f32(X[at(x, p, r, c)])));
}

