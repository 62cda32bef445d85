// Global average pooling: one invocation per (n, c), summing its rows in row-major order. A
// rank-4 input may come a few rows at a time: the running sum is kept in the output (started
// by the call holding row 0, divided by the call holding the last row), as on the CPU.
//
// P: 0 n, 1 X, 6 Y, 11 rows_per, 12 first, 13 end, 14 size, 15 whole_rows

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let nc = index(id, nw);
    if (nc >= P[0]) {
        return;
    }
    let x = win(1u);
    let y = win(6u);
    let o = flat(y, nc);
    let first = P[12];
    let end = P[13];
    var acc = 0.0;
    if (first != 0u) {
        acc = f32(Y[o]);
    }
    for (var j = first; j < end; j++) {
        let g = nc * P[11] + j;
        let row = at(x, g / x.h, g % x.h, 0u);
        for (var c = 0u; c < x.w; c++) {
            acc = acc + f32(X[row + c]);
        }
    }
    if (end == P[15]) {
        acc = acc / f32(P[14]);
    }
    Y[o] = T2(acc);
}
