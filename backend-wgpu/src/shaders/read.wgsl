// A window's rows packed into O as f32, for the host.
//
// P: 0 n, 1 first_row, 2 rows, 3 X

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(4) var<storage, read_write> O: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let x = win(3u);
    let per = P[2] * x.w;
    O[i] = f32(X[at(x, i / per, P[1] + (i % per) / x.w, i % x.w)]);
}
