// Broadcasting binary arithmetic: y = act(a op b); each operand is an arena window or a
// weight, read at row 0 / column 0 where it is broadcast (as the CPU backend reads it).
//
// P: 0 n, 1 first_row, 2 rows, 3 Y, 8 act, 11 kind, 12 lead rank, 13..17 lead dims (4),
//    then per operand (A at 17, B at 29): 0 is_weight, 1 Win (5), 6 follows_rows, 7 follows_columns,
//    8..12 plane strides along the lead axes (4)

@group(0) @binding(1) var<storage, read_write> XA: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;
@group(0) @binding(3) var<storage, read_write> XB: array<T3>;
@group(0) @binding(5) var<storage, read> WA: array<f32>;
@group(0) @binding(6) var<storage, read> WB: array<f32>;

fn operand_at(o: u32, p: u32, r: u32, c: u32) -> u32 {
    // Plane of the operand: the output plane's lead index dotted with the operand's strides.
    var rest = p;
    var plane = 0u;
    let lead = P[12];
    for (var k = 0u; k < lead; k++) {
        let a = lead - 1u - k;
        let d = P[13u + a];
        plane += (rest % d) * P[o + 8u + a];
        rest = rest / d;
    }
    let v = win(o + 1u);
    let row = select(0u, r, P[o + 6u] != 0u);
    let col = select(0u, c, P[o + 7u] != 0u);
    return at(v, plane, row, col);
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let y = win(3u);
    let per = P[2] * y.w;
    let p = i / per;
    let r = P[1] + (i % per) / y.w;
    let c = i % y.w;
    let ia = operand_at(17u, p, r, c);
    let ib = operand_at(29u, p, r, c);
    var a: f32;
    var b: f32;
    if (P[17] != 0u) {
        a = WA[ia];
    } else {
        a = f32(XA[ia]);
    }
    if (P[29] != 0u) {
        b = WB[ib];
    } else {
        b = f32(XB[ib]);
    }
    var v: f32;
    switch P[11] {
        case 0u: { v = a + b; }
        case 1u: { v = a - b; }
        case 2u: { v = a * b; }
        case 3u: { v = a / b; }
        default: { v = select(a * b, a, a >= 0.0); }
    }
    Y[at(y, p, r, c)] = T2(act(8u, v));
}
