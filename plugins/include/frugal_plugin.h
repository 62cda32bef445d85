/*
 * frugal_plugin.h: the C ABI of frugal backend plugins.
 *
 * The C twin of the Rust crate frugal-plugin-abi (plugins/abi/src/lib.rs); a test
 * (plugins/abi/tests/header.rs) checks that every constant, record, field and offset here
 * matches the Rust definitions. See plugins/README.md for the rules.
 *
 * A plugin is a shared library exporting
 *
 *     const FrugalPluginModule *frugal_plugin_entry(void);
 *
 * returning a pointer to a static record that starts with abi_version and struct_size.
 */
#ifndef FRUGAL_PLUGIN_H
#define FRUGAL_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FRUGAL_PLUGIN_ABI_VERSION 1
#define FRUGAL_MAX_RANK 6
#define FRUGAL_ERROR_CAPACITY 1024
#define FRUGAL_DEVICE_CAPACITY 256
#define FRUGAL_KERNELS_CAPACITY 64

/* Status of every fallible call. */
typedef uint32_t FrugalStatus;
#define FRUGAL_OK 0
#define FRUGAL_ERROR 1
#define FRUGAL_PANIC 2

/* Storage types. */
#define FRUGAL_DTYPE_F32 0
#define FRUGAL_DTYPE_F16 1
#define FRUGAL_DTYPE_I64 2
#define FRUGAL_DTYPE_I32 3
#define FRUGAL_DTYPE_U8 4

/* Op families. */
#define FRUGAL_FAMILY_CONV 0
#define FRUGAL_FAMILY_CONV_TRANSPOSE 1
#define FRUGAL_FAMILY_POOL 2
#define FRUGAL_FAMILY_GLOBAL_AVG_POOL 3
#define FRUGAL_FAMILY_AFFINE 4
#define FRUGAL_FAMILY_UNARY 5
#define FRUGAL_FAMILY_BINARY 6
#define FRUGAL_FAMILY_CONCAT 7
#define FRUGAL_FAMILY_RESIZE 8
#define FRUGAL_FAMILY_GEMM 9
#define FRUGAL_FAMILY_MATMUL 10
#define FRUGAL_FAMILY_REDUCE 11
#define FRUGAL_FAMILY_SOFTMAX 12
#define FRUGAL_FAMILY_TRANSPOSE 13
#define FRUGAL_FAMILY_COPY 14
#define FRUGAL_FAMILY_COUNT 15

/* Activations: p0, p1 as named. */
#define FRUGAL_ACT_NONE 0
#define FRUGAL_ACT_RELU 1
#define FRUGAL_ACT_CLIP 2          /* min(max(x, p0), p1) */
#define FRUGAL_ACT_LEAKY_RELU 3    /* x >= 0 ? x : p0 * x */
#define FRUGAL_ACT_SIGMOID 4
#define FRUGAL_ACT_HARD_SIGMOID 5  /* max(0, min(1, p0 * x + p1)) */
#define FRUGAL_ACT_HARD_SWISH 6
#define FRUGAL_ACT_TANH 7
#define FRUGAL_ACT_ERF 8

#define FRUGAL_POOL_MAX 0
#define FRUGAL_POOL_AVG 1

#define FRUGAL_BINARY_ADD 0
#define FRUGAL_BINARY_SUB 1
#define FRUGAL_BINARY_MUL 2
#define FRUGAL_BINARY_DIV 3
#define FRUGAL_BINARY_PRELU 4

#define FRUGAL_REDUCE_MEAN 0
#define FRUGAL_REDUCE_SUM 1
#define FRUGAL_REDUCE_MAX 2

#define FRUGAL_RESIZE_NEAREST 0
#define FRUGAL_RESIZE_LINEAR 1
#define FRUGAL_COORD_HALF_PIXEL 0
#define FRUGAL_COORD_PYTORCH_HALF_PIXEL 1
#define FRUGAL_COORD_ALIGN_CORNERS 2
#define FRUGAL_COORD_ASYMMETRIC 3
#define FRUGAL_COORD_TF_HALF_PIXEL_FOR_NEAREST 4
#define FRUGAL_NEAREST_ROUND_PREFER_FLOOR 0
#define FRUGAL_NEAREST_ROUND_PREFER_CEIL 1
#define FRUGAL_NEAREST_FLOOR 2
#define FRUGAL_NEAREST_CEIL 3

#define FRUGAL_OPERAND_ARENA 0
#define FRUGAL_OPERAND_WEIGHT 1

/* A host-owned buffer for an error message (UTF-8, NUL-terminated, truncated to fit). */
typedef struct FrugalError {
    char message[FRUGAL_ERROR_CAPACITY];
} FrugalError;

/* Options passed to create. */
typedef struct FrugalOptions {
    uint32_t struct_size;
    uint32_t threads;
} FrugalOptions;

/* Capabilities, filled by the plugin into a zeroed record. */
typedef struct FrugalCapabilities {
    uint32_t storage_mask; /* bit 1 << FRUGAL_DTYPE_* */
    uint32_t reserved;
    uint64_t max_buffer_bytes;
    uint64_t max_binding_bytes;
    char device[FRUGAL_DEVICE_CAPACITY];
    char kernels[FRUGAL_KERNELS_CAPACITY];
} FrugalCapabilities;

/* A constant to upload (f32 data today). */
typedef struct FrugalTensor {
    uint32_t dtype;
    uint32_t rank;
    uint64_t dims[FRUGAL_MAX_RANK];
    const void *data;
    uint64_t len; /* elements */
} FrugalTensor;

/*
 * Rows of a tensor in the arena, maybe a ring. With (planes, height, width) = (product of all
 * axes but the last two, second-to-last axis, last axis), row r of plane p starts at element
 * offset / dtype_size + (p * capacity + r % capacity) * row_stride.
 */
typedef struct FrugalWindow {
    uint64_t offset; /* bytes */
    uint32_t dtype;
    uint32_t rank;
    uint64_t dims[FRUGAL_MAX_RANK];
    uint64_t capacity;
    uint64_t row_stride;
    uint64_t first_row;
    uint64_t rows;
} FrugalWindow;

typedef struct FrugalWeight {
    uint64_t id;
    uint32_t rank;
    uint32_t reserved;
    uint64_t dims[FRUGAL_MAX_RANK];
} FrugalWeight;

typedef struct FrugalOperand {
    uint32_t kind; /* FRUGAL_OPERAND_* */
    uint32_t reserved;
    FrugalWindow window;
    FrugalWeight weight;
} FrugalOperand;

typedef struct FrugalActivation {
    uint32_t kind; /* FRUGAL_ACT_* */
    float p0;
    float p1;
    uint32_t reserved;
} FrugalActivation;

typedef struct FrugalScratch {
    uint64_t offset;
    uint64_t bytes;
} FrugalScratch;

/* y = act(conv(x, w) + b + r); pads: top, left, bottom, right. */
typedef struct FrugalConv {
    uint64_t kernel[2];
    uint64_t strides[2];
    uint64_t dilations[2];
    uint64_t pads[4];
    uint64_t groups;
    FrugalActivation act;
    uint32_t has_bias;
    uint32_t has_residual;
    FrugalWindow x;
    FrugalWeight w;
    FrugalWeight b;
    FrugalWindow r;
    FrugalWindow y;
} FrugalConv;

typedef struct FrugalConvTranspose {
    uint64_t kernel[2];
    uint64_t strides[2];
    uint64_t dilations[2];
    uint64_t pads[4];
    uint64_t output_padding[2];
    uint64_t groups;
    FrugalActivation act;
    uint32_t has_bias;
    uint32_t reserved;
    FrugalWindow x;
    FrugalWeight w;
    FrugalWeight b;
    FrugalWindow y;
} FrugalConvTranspose;

/* Pooling folds input rows into output rows across calls (see plugins/README.md). */
typedef struct FrugalPool {
    uint32_t kind; /* FRUGAL_POOL_* */
    uint32_t ceil_mode;
    uint32_t count_include_pad;
    uint32_t reserved;
    uint64_t kernel[2];
    uint64_t strides[2];
    uint64_t dilations[2];
    uint64_t pads[4];
    FrugalWindow x;
    FrugalWindow y;
} FrugalPool;

typedef struct FrugalGlobalAvgPool {
    FrugalWindow x;
    FrugalWindow y;
} FrugalGlobalAvgPool;

typedef struct FrugalAffine {
    FrugalActivation act;
    FrugalWindow x;
    FrugalWeight scale;
    FrugalWeight shift;
    FrugalWindow y;
} FrugalAffine;

typedef struct FrugalUnary {
    FrugalActivation act;
    FrugalWindow x;
    FrugalWindow y;
} FrugalUnary;

typedef struct FrugalBinary {
    uint32_t kind; /* FRUGAL_BINARY_* */
    uint32_t reserved;
    FrugalActivation act;
    FrugalOperand a;
    FrugalOperand b;
    FrugalWindow y;
} FrugalBinary;

typedef struct FrugalConcat {
    uint64_t axis;
    uint64_t count;
    const FrugalWindow *xs;
    FrugalWindow y;
} FrugalConcat;

typedef struct FrugalResize {
    uint32_t mode;    /* FRUGAL_RESIZE_* */
    uint32_t coord;   /* FRUGAL_COORD_* */
    uint32_t nearest; /* FRUGAL_NEAREST_* */
    uint32_t reserved;
    float scales[2];
    uint64_t size[2];
    FrugalWindow x;
    FrugalWindow y;
} FrugalResize;

typedef struct FrugalGemm {
    float alpha;
    float beta;
    uint32_t trans_a;
    uint32_t trans_b;
    FrugalActivation act;
    uint32_t has_c;
    uint32_t reserved;
    FrugalWindow a;
    FrugalWeight b;
    FrugalWeight c;
    FrugalWindow y;
} FrugalGemm;

typedef struct FrugalMatMul {
    FrugalActivation act;
    FrugalOperand a;
    FrugalOperand b;
    FrugalWindow y;
} FrugalMatMul;

typedef struct FrugalReduce {
    uint32_t kind; /* FRUGAL_REDUCE_* */
    uint32_t keepdims;
    uint64_t naxes;
    uint64_t axes[FRUGAL_MAX_RANK];
    FrugalWindow x;
    FrugalWindow y;
} FrugalReduce;

typedef struct FrugalSoftmax {
    uint64_t axis;
    uint32_t coerce_2d;
    uint32_t reserved;
    FrugalWindow x;
    FrugalWindow y;
} FrugalSoftmax;

typedef struct FrugalTranspose {
    uint64_t rank;
    uint64_t perm[FRUGAL_MAX_RANK];
    FrugalWindow x;
    FrugalWindow y;
} FrugalTranspose;

typedef struct FrugalCopy {
    FrugalOperand x;
    FrugalWindow y;
} FrugalCopy;

/* Any kernel, for prepare and workspace_bytes: call points to the family's record. */
typedef struct FrugalKernel {
    uint32_t family; /* FRUGAL_FAMILY_* */
    uint32_t reserved;
    const void *call;
} FrugalKernel;

/* An opaque backend instance. */
typedef void *FrugalBackend;

/* What every version of the module record starts with. */
typedef struct FrugalPluginHeader {
    uint32_t abi_version;
    uint32_t struct_size;
} FrugalPluginHeader;

/* The module record. Every function but the op families is required; a null op family is one
 * the plugin does not run. */
typedef struct FrugalPluginModule {
    uint32_t abi_version; /* FRUGAL_PLUGIN_ABI_VERSION */
    uint32_t struct_size; /* sizeof(FrugalPluginModule) */
    const char *name;
    FrugalStatus (*create)(const FrugalOptions *options, FrugalBackend *out, FrugalError *err);
    void (*release)(FrugalBackend backend);
    FrugalStatus (*capabilities)(FrugalBackend backend, FrugalCapabilities *out, FrugalError *err);
    FrugalStatus (*check)(FrugalBackend backend, FrugalError *err);
    FrugalStatus (*alloc_arena)(FrugalBackend backend, uint64_t bytes, FrugalError *err);
    FrugalStatus (*upload)(FrugalBackend backend, const FrugalTensor *tensor, uint64_t *id, FrugalError *err);
    FrugalStatus (*prepare)(FrugalBackend backend, const FrugalKernel *kernel, FrugalError *err);
    FrugalStatus (*workspace_bytes)(FrugalBackend backend, const FrugalKernel *kernel, uint64_t *bytes, FrugalError *err);
    FrugalStatus (*write)(FrugalBackend backend, const FrugalWindow *dst, const float *src, uint64_t len, uint64_t rows_begin, uint64_t rows_end, FrugalError *err);
    FrugalStatus (*read)(FrugalBackend backend, const FrugalWindow *src, float *dst, uint64_t len, uint64_t rows_begin, uint64_t rows_end, FrugalError *err);
    FrugalStatus (*sync)(FrugalBackend backend, FrugalError *err);
    uint64_t (*weight_bytes)(FrugalBackend backend);
    FrugalStatus (*conv)(FrugalBackend backend, const FrugalConv *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*conv_transpose)(FrugalBackend backend, const FrugalConvTranspose *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*pool)(FrugalBackend backend, const FrugalPool *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*global_avg_pool)(FrugalBackend backend, const FrugalGlobalAvgPool *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*affine)(FrugalBackend backend, const FrugalAffine *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*unary)(FrugalBackend backend, const FrugalUnary *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*binary)(FrugalBackend backend, const FrugalBinary *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*concat)(FrugalBackend backend, const FrugalConcat *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*resize)(FrugalBackend backend, const FrugalResize *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*gemm)(FrugalBackend backend, const FrugalGemm *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*matmul)(FrugalBackend backend, const FrugalMatMul *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*reduce)(FrugalBackend backend, const FrugalReduce *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*softmax)(FrugalBackend backend, const FrugalSoftmax *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*transpose)(FrugalBackend backend, const FrugalTranspose *call, FrugalScratch scratch, FrugalError *err);
    FrugalStatus (*copy)(FrugalBackend backend, const FrugalCopy *call, FrugalScratch scratch, FrugalError *err);
} FrugalPluginModule;

/* The entry point every plugin exports. */
typedef const FrugalPluginModule *(*FrugalPluginEntry)(void);
#define FRUGAL_PLUGIN_ENTRY "frugal_plugin_entry"

#ifdef __cplusplus
}
#endif

#endif /* FRUGAL_PLUGIN_H */
