// Nearest and bilinear resize. The taps (input indices and weights) are worked out on the host
// by core's `Resize::taps`, the CPU backend's single definition, and passed in P.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 linear, 14 ow, 15.. per window row (y0, y1, wy),
//    then per output column (x0, x1, wx)

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
    let j = (i % per) / y.w;
    let c = i % y.w;
    let rt = 15u + 3u * j;
    let ct = 15u + 3u * P[2] + 3u * c;
    let y0 = P[rt];
    let x0 = P[ct];
    var v: f32;
    if (P[13] == 0u) {
        v = f32(X[at(x, p, y0, x0)]);
    } else {
        let y1 = P[rt + 1u];
        let wy = pf(rt + 2u);
        let x1 = P[ct + 1u];
        let wx = pf(ct + 2u);
        let top = f32(X[at(x, p, y0, x0)]) * (1.0 - wx) + f32(X[at(x, p, y0, x1)]) * wx;
        let bottom = f32(X[at(x, p, y1, x0)]) * (1.0 - wx) + f32(X[at(x, p, y1, x1)]) * wx;
        v = (1.0 - wy) * top + wy * bottom;
    }
    Y[at(y, p, P[1] + j, c)] = T2(v);
}
