// Reductions over axes: one invocation per output element, folding its inputs in row-major
// order of the reduced axes; a mean divides the sum once.
//
// P: 0 n, 1 X, 6 Y, 11 kind (0 mean, 1 sum, 2 max), 12 count, 13 kept rank, 14..20 kept dims,
//    20..26 kept input strides, 26 reduced rank, 27..33 reduced dims, 33..39 reduced strides

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let f = index(id, nw);
    if (f >= P[0]) {
        return;
    }
    let x = win(1u);
    var rest = f;
    var base = 0u;
    let nk = P[13];
    for (var t = 0u; t < nk; t++) {
        let a = nk - 1u - t;
        base += (rest % P[14u + a]) * P[20u + a];
        rest = rest / P[14u + a];
    }
    let nr = P[26];
    var total = 1u;
    for (var t = 0u; t < nr; t++) {
        total *= P[27u + t];
    }
    let is_max = P[11] == 2u;
    var acc = select(0.0, bitcast<f32>(0xff800000u), is_max);
    for (var e = 0u; e < total; e++) {
        var r = e;
        var off = base;
        for (var t = 0u; t < nr; t++) {
            let a = nr - 1u - t;
            off += (r % P[27u + a]) * P[33u + a];
            r = r / P[27u + a];
        }
        let v = f32(X[flat(x, off)]);
        if (is_max) {
            acc = max(acc, v);
        } else {
            acc = acc + v;
        }
    }
    if (P[11] == 0u) {
        acc = acc / f32(P[12]);
    }
    Y[flat(win(6u), f)] = T2(acc);
}
