// Shared by every kernel: the parameter block, row-window addressing, the invocation index and
// the activations (the same definitions as core's `Activation::apply`).

@group(0) @binding(0) var<storage, read> P: array<u32>;

fn pf(i: u32) -> f32 {
    return bitcast<f32>(P[i]);
}

// A row window inside its binding: row r of plane p starts at base + (p * cap + r % cap) * stride.
struct Win {
    base: u32,
    cap: u32,
    stride: u32,
    h: u32,
    w: u32,
}

fn win(o: u32) -> Win {
    return Win(P[o], P[o + 1u], P[o + 2u], P[o + 3u], P[o + 4u]);
}

fn at(v: Win, p: u32, r: u32, c: u32) -> u32 {
    return v.base + (p * v.cap + r % v.cap) * v.stride + c;
}

// Element f of the whole tensor in row-major order.
fn flat(v: Win, f: u32) -> u32 {
    let g = f / v.w;
    return at(v, g / v.h, g % v.h, f % v.w);
}

// Invocation number of a 1-D launch spread over a 2-D grid of 64-wide workgroups.
fn index(id: vec3<u32>, nw: vec3<u32>) -> u32 {
    return id.y * nw.x * 64u + id.x;
}

fn max_of(x: f32, y: f32) -> f32 {
    return select(y, x, x > y);
}

fn min_of(x: f32, y: f32) -> f32 {
    return select(y, x, x < y);
}

fn unit_clamp(x: f32) -> f32 {
    return min_of(max_of(x, 0.0), 1.0);
}

// erf: Taylor series near 0 (relative accuracy), Numerical Recipes' erfc elsewhere.
fn erf_(x: f32) -> f32 {
    let z = abs(x);
    if (z < 0.5) {
        let x2 = x * x;
        var term = x;
        var sum = x;
        for (var n = 1u; n < 12u; n++) {
            term = -term * x2 / f32(n);
            sum += term / f32(2u * n + 1u);
        }
        return 1.1283791670955126 * sum;
    }
    let t = 1.0 / (1.0 + 0.5 * z);
    let e = t * exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418
        + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587
        + t * (-0.82215223 + t * 0.17087277)))))))));
    return sign(x) * (1.0 - e);
}

// Activation stored at P[o..o + 3]: kind, then two f32 parameters.
fn act(o: u32, x: f32) -> f32 {
    let a = pf(o + 1u);
    let b = pf(o + 2u);
    switch P[o] {
        case 1u: { return max_of(x, 0.0); }
        case 2u: { return min_of(max_of(x, a), b); }
        case 3u: { return select(a * x, x, x >= 0.0); }
        case 4u: {
            if (x >= 0.0) {
                return 1.0 / (1.0 + exp(-x));
            }
            let e = exp(x);
            return e / (1.0 + e);
        }
        case 5u: { return unit_clamp(a * x + b); }
        case 6u: { return x * unit_clamp(x * (1.0 / 6.0) + 0.5); }
        case 7u: { return tanh(clamp(x, -20.0, 20.0)); }
        case 8u: { return erf_(x); }
        default: { return x; }
    }
}
