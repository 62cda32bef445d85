// Max and average pooling, streaming like the CPU backend: an output row is started by the
// call holding its first in-bounds tap row, takes the tap rows the call holds (in ky, kx
// order, the running value kept in the output between calls) and is finished (divided) by the
// call holding its last. Output rows whose taps the call does not hold are left untouched.
//
// P: 0 n, 1 first_row, 2 rows, 3 X, 8 Y, 13 x_first, 14 x_end, 15 kind (0 max, 1 avg),
//    16 kh, 17 kw, 18 sh, 19 sw, 20 dh, 21 dw, 22 pt, 23 pl, 24 pb, 25 pr, 26 count_include_pad

@group(0) @binding(1) var<storage, read_write> X: array<T1>;
@group(0) @binding(2) var<storage, read_write> Y: array<T2>;

// Taps k of output o along one axis that land inside the counted range [lo, hi) (padded
// coordinates).
fn count(o: u32, k: u32, s: u32, d: u32, lo: u32, hi: u32) -> u32 {
    var n = 0u;
    for (var t = 0u; t < k; t++) {
        let q = o * s + t * d;
        if (q >= lo && q < hi) {
            n++;
        }
    }
    return n;
}

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
    let oy = P[1] + (i % per) / y.w;
    let ox = i % y.w;
    let a = P[13];
    let e = P[14];
    let kh = P[16];
    let kw = P[17];
    let sh = P[18];
    let sw = P[19];
    let dh = P[20];
    let dw = P[21];
    let pt = P[22];
    let pl = P[23];
    // First and last in-bounds tap rows, and whether the call holds any.
    var first = 0xffffffffu;
    var last = 0u;
    var any = false;
    for (var ky = 0u; ky < kh; ky++) {
        let t = i32(oy * sh + ky * dh) - i32(pt);
        if (t >= 0 && u32(t) < x.h) {
            first = min(first, u32(t));
            last = max(last, u32(t));
            if (u32(t) >= a && u32(t) < e) {
                any = true;
            }
        }
    }
    if (!any) {
        return;
    }
    let avg = P[15] == 1u;
    let o = at(y, p, oy, ox);
    var acc: f32;
    if (first >= a) {
        acc = select(bitcast<f32>(0xff800000u), 0.0, avg);
    } else {
        acc = f32(Y[o]);
    }
    for (var ky = 0u; ky < kh; ky++) {
        let t = i32(oy * sh + ky * dh) - i32(pt);
        if (t < 0 || u32(t) >= x.h || u32(t) < a || u32(t) >= e) {
            continue;
        }
        for (var kx = 0u; kx < kw; kx++) {
            let s = i32(ox * sw + kx * dw) - i32(pl);
            if (s < 0 || u32(s) >= x.w) {
                continue;
            }
            let v = f32(X[at(x, p, u32(t), u32(s))]);
            if (avg) {
                acc += v;
            } else {
                acc = max(acc, v);
            }
        }
    }
    if (last < e && avg) {
        var ch: u32;
        var cw: u32;
        if (P[26] != 0u) {
            ch = count(oy, kh, sh, dh, 0u, x.h + pt + P[24]);
            cw = count(ox, kw, sw, dw, 0u, x.w + pl + P[25]);
        } else {
            ch = count(oy, kh, sh, dh, pt, x.h + pt);
            cw = count(ox, kw, sw, dw, pl, x.w + pl);
        }
        acc = acc / f32(ch * cw);
    }
    Y[o] = T2(acc);
}
