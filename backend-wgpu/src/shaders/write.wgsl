// Host rows into a window: S holds the window's rows of every plane, packed, as f32.
//
// P: 0 n, 1 first_row, 2 rows, 3 Y

@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(5) var<storage, read> S: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let y = win(3u);
    let per = P[2] * y.w;
    Y[at(y, i / per, P[1] + (i % per) / y.w, i % y.w)] = T2(S[i]);
}
