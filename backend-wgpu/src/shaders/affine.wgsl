// Per-channel y = act(x * scale[c] + shift[c]) (inference batch norm).
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 act, 16 mode (0 rank 2: channel = column,
//    1 rank 3: channel = row, 2: channel = (plane / inner) % channels), 17 inner, 18 channels

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(5) var<storage, read> S: array<f32>;
@group(0) @binding(6) var<storage, read> T: array<f32>;

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
    var ch: u32;
    switch P[16] {
        case 0u: { ch = c; }
        case 1u: { ch = r; }
        default: { ch = (p / P[17]) % P[18]; }
    }
    let v = f32(X[at(x, p, r, c)]) * S[ch] + T[ch];
    Y[at(y, p, r, c)] = T2(act(13u, v));
}
