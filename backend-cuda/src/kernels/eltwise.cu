// Pointwise kernels: standalone activation, per-channel affine map (inference batch norm) and
// broadcasting binary arithmetic. Mirrors backend-cpu/src/ops/eltwise.rs. One thread per
// output element of the window; output row r reads row r of its inputs.

struct UnaryParams {
    u64 arena;
    Win x;
    Win y;
    Act act;
};

extern "C" __global__ void unary(UnaryParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    float* arena = (float*)p.arena;
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    arena[at(p.y, plane, row, col)] = activate(p.act, arena[at(p.x, plane, row, col)]);
}

struct AffineParams {
    u64 arena;
    u64 scale;      // [C]
    u64 shift;      // [C]
    Win x;
    Win y;
    Act act;
    int channels;   // C = dims[1]
    int inner;      // planes per channel (rank >= 4)
};

// y = x * scale[c] + shift[c] (no fused multiply-add, as on the CPU), then the activation.
extern "C" __global__ void affine(AffineParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    float* arena = (float*)p.arena;
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int c;
    if (p.y.rank == 2) c = col;
    else if (p.y.rank == 3) c = row;
    else c = (int)((plane / p.inner) % p.channels);
    float v = arena[at(p.x, plane, row, col)];
    float s = ((const float*)p.scale)[c], sh = ((const float*)p.shift)[c];
    float prod = v * s;
    arena[at(p.y, plane, row, col)] = activate(p.act, prod + sh);
}

struct BinaryParams {
    u64 arena;
    u64 a_ptr;      // arena or weight buffer of operand a
    u64 b_ptr;
    Win a;          // operand a: a window, or a weight seen as a whole window at base 0
    Win b;
    Win y;
    Act act;
    int kind;       // 0 add, 1 sub, 2 mul, 3 div, 4 prelu
    int pad_;
};

__device__ __forceinline__ float binary_op(int kind, float a, float b) {
    switch (kind) {
    case 0: return a + b;
    case 1: return a - b;
    case 2: return a * b;
    case 3: return a / b;
    default: return a >= 0.0f ? a : a * b;
    }
}

// Index of the output element `idx` (y.rank axes) in a broadcast operand (numpy rules: axes
// aligned at the end, size-1 axes read at 0).
__device__ __forceinline__ i64 broadcast_at(const Win& o, const int* idx, int ry) {
    int oi[MAX_RANK];
    int ro = o.rank;
    for (int a = 0; a < ro; ++a) oi[a] = o.dims[a] == 1 ? 0 : idx[a + ry - ro];
    return at_index(o, oi);
}

extern "C" __global__ void binary(BinaryParams p) {
    i64 w = p.y.w;
    THREAD_INDEX((i64)p.y.planes * p.y.rows * w)
    int col = (int)(tid % w);
    i64 t = tid / w;
    int row = p.y.first + (int)(t % p.y.rows);
    i64 plane = t / p.y.rows;
    int idx[MAX_RANK];
    index_of(p.y, plane, row, col, idx);
    float a = ((const float*)p.a_ptr)[broadcast_at(p.a, idx, p.y.rank)];
    float b = ((const float*)p.b_ptr)[broadcast_at(p.b, idx, p.y.rank)];
    ((float*)p.arena)[at(p.y, plane, row, col)] = activate(p.act, binary_op(p.kind, a, b));
}
