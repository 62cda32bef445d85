// Shared definitions of frugal's CUDA kernels. NVRTC compiles this file followed by every op
// family's file as one program (no #include: NVRTC needs no header search path).
//
// Determinism: every output element is computed by one thread, which visits its inputs in a
// fixed order that does not depend on the rows a call produces. Whatever window a call covers,
// an element gets the same bits, so execution by parts equals layer by layer bit for bit.
// The program is compiled with --fmad=false: a * b + c is never contracted, fused
// multiply-adds appear only where written (fmaf), as in the CPU reference.

#define MAX_RANK 6

typedef long long i64;
typedef unsigned long long u64;

// What a kernel sees of one tensor (mirrors frugal_core::RowWindow; see params.rs, `Win`).
// Row `r` of plane `p` starts at element `base + (p * cap + r % cap) * stride`. A weight is a
// window with base 0, cap = height and stride = width over its own buffer.
struct Win {
    i64 base;      // element index of the buffer in its allocation
    int cap;       // rows the buffer holds (ring capacity)
    int stride;    // elements between consecutive rows
    int planes;    // product of the axes before the row axis
    int h;         // rows of the tensor
    int w;         // width of a row
    int first;     // first row of the window
    int rows;      // rows in the window
    int rank;      // axes of the tensor
    int dims[MAX_RANK];
    int pad_;
};

// A fused activation (mirrors frugal_core::ops::Activation; kind 0: none).
struct Act {
    int kind;
    float a;
    float b;
    int pad_;
};

__device__ __forceinline__ i64 at(const Win& v, i64 plane, i64 row, i64 col) {
    return v.base + (plane * (i64)v.cap + row % (i64)v.cap) * (i64)v.stride + col;
}

// Element `f` of the tensor in row-major order.
__device__ __forceinline__ i64 at_flat(const Win& v, i64 f) {
    i64 w = v.w > 0 ? v.w : 1;
    i64 h = v.h > 0 ? v.h : 1;
    i64 g = f / w;
    return at(v, g / h, g % h, f % w);
}

// Element at multi-index `idx` (v.rank axes): rows are axis rank-2, columns axis rank-1.
__device__ __forceinline__ i64 at_index(const Win& v, const int* idx) {
    int r = v.rank;
    if (r == 0) return at(v, 0, 0, 0);
    if (r == 1) return at(v, 0, 0, idx[0]);
    i64 plane = 0;
    for (int a = 0; a < r - 2; ++a) plane = plane * v.dims[a] + idx[a];
    return at(v, plane, idx[r - 2], idx[r - 1]);
}

// Splits `i` into a row-major multi-index over `dims[0..r]`.
__device__ __forceinline__ void unravel(i64 i, const int* dims, int r, int* idx) {
    for (int a = r - 1; a >= 0; --a) {
        int d = dims[a] > 0 ? dims[a] : 1;
        idx[a] = (int)(i % d);
        i /= d;
    }
}

// Multi-index of (plane, row, col) of a window's tensor.
__device__ __forceinline__ void index_of(const Win& v, i64 plane, int row, int col, int* idx) {
    int r = v.rank;
    if (r == 1) { idx[0] = col; return; }
    if (r < 1) return;
    unravel(plane, v.dims, r - 2, idx);
    idx[r - 2] = row;
    idx[r - 1] = col;
}

__device__ __forceinline__ float max_of(float x, float y) { return x > y ? x : y; }
__device__ __forceinline__ float min_of(float x, float y) { return x < y ? x : y; }
__device__ __forceinline__ float unit_clamp(float x) { return min_of(max_of(x, 0.0f), 1.0f); }

// Activation::apply, case by case.
__device__ __forceinline__ float activate(const Act& act, float x) {
    switch (act.kind) {
    case 1: return max_of(x, 0.0f);                               // Relu
    case 2: return min_of(max_of(x, act.a), act.b);               // Clip {min, max}
    case 3: return x >= 0.0f ? x : act.a * x;                     // LeakyRelu {alpha}
    case 4:                                                       // Sigmoid
        if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
        else { float e = expf(x); return e / (1.0f + e); }
    case 5: return unit_clamp(act.a * x + act.b);                 // HardSigmoid {alpha, beta}
    case 6: return x * unit_clamp(x * (1.0f / 6.0f) + 0.5f);      // HardSwish
    case 7: return tanhf(x);                                      // Tanh
    case 8: return erff(x);                                       // Erf
    default: return x;
    }
}

// The global index of this thread, and whether it has work (1-D launches).
#define THREAD_INDEX(n) \
    i64 tid = (i64)blockIdx.x * (i64)blockDim.x + (i64)threadIdx.x; \
    if (tid >= (i64)(n)) return;
