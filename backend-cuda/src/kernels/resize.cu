// Spatial resize, nearest and bilinear. Mirrors backend-cpu/src/ops/resize.rs. The taps come
// from a table the host fills with frugal_core's Resize::taps (one definition, no float
// re-derivation on the device): for each output row then each output column, three floats
// (i0 and i1 as bit patterns, the weight of the second).

struct ResizeParams {
    u64 arena;
    u64 taps;       // [3 * oh] row taps, then [3 * ow] column taps
    Win x;
    Win y;
    int linear;
    int pad_;
};

extern "C" __global__ void resize2d(ResizeParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    float* arena = (float*)p.arena;
    const float* taps = (const float*)p.taps;
    int ox = (int)(tid % w);
    i64 t = tid / w;
    int oy = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    const float* ry = taps + 3 * (i64)oy;
    const float* rx = taps + 3 * (i64)p.y.h + 3 * (i64)ox;
    int y0 = __float_as_int(ry[0]), y1 = __float_as_int(ry[1]);
    int x0 = __float_as_int(rx[0]), x1 = __float_as_int(rx[1]);
    i64 r0 = at(p.x, plane, y0, 0), r1 = at(p.x, plane, y1, 0);
    float out;
    if (!p.linear) {
        out = arena[r0 + x0];
    } else {
        float wy = ry[2], wx = rx[2];
        float top = arena[r0 + x0] * (1.0f - wx) + arena[r0 + x1] * wx;
        float bottom = arena[r1 + x0] * (1.0f - wx) + arena[r1 + x1] * wx;
        out = (1.0f - wy) * top + wy * bottom;
    }
    arena[at(p.y, plane, oy, ox)] = out;
}
