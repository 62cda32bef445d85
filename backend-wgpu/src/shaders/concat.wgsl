// Concatenation, one launch per input piece (its elements copied to their place in the output
// rows being produced).
//
// P: 0 n, 1 mode (0 plane axis, 1 row axis, 2 last axis), 2 X, 7 Y, 12 first_row, 13 rows,
//    14 off, 15 cx, 16 cy, 17 inner, 18 width of the launch

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = index(id, nw);
    if (i >= P[0]) {
        return;
    }
    let x = win(2u);
    let y = win(7u);
    let w = P[18];
    let per = P[13] * w;
    let q = i / per;
    let r = P[12] + (i % per) / w;
    let c = i % w;
    let off = P[14];
    switch P[1] {
        case 0u: {
            let cx = P[15];
            let inner = P[17];
            let p = ((q / (cx * inner)) * P[16] + off + (q / inner) % cx) * inner + q % inner;
            Y[at(y, p, r, c)] = T2(f32(X[at(x, q, r, c)]));
        }
        case 1u: {
            Y[at(y, q, r, c)] = T2(f32(X[at(x, q, r - off, c)]));
        }
        default: {
            Y[at(y, q, r, off + c)] = T2(f32(X[at(x, q, r, c)]));
        }
    }
}
