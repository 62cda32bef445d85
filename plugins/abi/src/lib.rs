//! # frugal-plugin-abi
//!
//! The stable C ABI a third-party frugal backend implements, with no dependency on frugal
//! itself: a plugin built against this crate (or against `plugins/include/frugal_plugin.h`, its
//! C twin) loads into any frugal that speaks the same [`FRUGAL_PLUGIN_ABI_VERSION`], whatever
//! compiler built either side.
//!
//! A plugin is a shared library exporting one symbol, [`FRUGAL_PLUGIN_ENTRY`]
//! (`frugal_plugin_entry`), an `extern "C"` function that returns a pointer to a static
//! [`FrugalPluginModule`]. The record starts with `abi_version` and `struct_size`, which the host
//! checks before it reads anything else. The rest is a table of `extern "C"` functions mirroring
//! frugal's `Backend` trait: create and release a backend instance, report capabilities, allocate
//! the arena, upload weights, prepare and size each kernel, run one kernel per op family over row
//! windows, copy rows in and out, sync.
//!
//! Rules of the ABI:
//! - Only `#[repr(C)]` data crosses, plus pointers with lengths. Enumerations are `u32` with
//!   named constants (`FRUGAL_FAMILY_*`, `FRUGAL_ACT_*`, ...), never Rust enums, so an unknown
//!   value is an error and never undefined behaviour.
//! - Every fallible function returns a [`FrugalStatus`] (`FRUGAL_OK` = 0) and, on failure,
//!   writes a NUL-terminated message into the host-owned [`FrugalError`] it is given. No
//!   allocation crosses the boundary.
//! - A null op-family function means the plugin does not run that family; the host refuses a
//!   model needing it when the session is created, naming the op and the plugin.
//! - Panics must not cross: the [`export_plugin!`] macro wraps every function in
//!   `catch_unwind` and reports a panic as `FRUGAL_PANIC` with its message.
//! - The host never calls one backend instance from two threads at once, but may call it from
//!   different threads over its life.
//! - The host never unloads a plugin library.
//!
//! Rust plugin authors implement [`PluginBackend`] (safe code) and call [`export_plugin!`];
//! `plugins/example` is a complete backend in a few hundred lines.

use std::ffi::{c_char, c_void, CStr};
use std::ops::Range;

mod export;

pub use export::{module, Call, Capabilities, PluginBackend, PluginError};

/// The version of this ABI. Any change to a record or a function signature increments it; the
/// host refuses plugins built for another version.
pub const FRUGAL_PLUGIN_ABI_VERSION: u32 = 1;

/// Name of the symbol every plugin exports, NUL-terminated:
/// `const FrugalPluginModule *frugal_plugin_entry(void)`.
pub const FRUGAL_PLUGIN_ENTRY: &[u8] = b"frugal_plugin_entry\0";

/// Most axes a tensor may have.
pub const FRUGAL_MAX_RANK: usize = 6;

/// Bytes of an error message, NUL included.
pub const FRUGAL_ERROR_CAPACITY: usize = 1024;

/// Bytes of the device description in [`FrugalCapabilities`], NUL included.
pub const FRUGAL_DEVICE_CAPACITY: usize = 256;

/// Bytes of the kernel identity in [`FrugalCapabilities`], NUL included.
pub const FRUGAL_KERNELS_CAPACITY: usize = 64;

/// Outcome of a call: `FRUGAL_OK`, `FRUGAL_ERROR` or `FRUGAL_PANIC`.
pub type FrugalStatus = u32;
/// Success.
pub const FRUGAL_OK: FrugalStatus = 0;
/// Failure; the message says why.
pub const FRUGAL_ERROR: FrugalStatus = 1;
/// The plugin panicked (caught at the boundary); the message has the panic's text.
pub const FRUGAL_PANIC: FrugalStatus = 2;

/// Storage types (`FrugalWindow::dtype`, `FrugalTensor::dtype`).
pub const FRUGAL_DTYPE_F32: u32 = 0;
/// 16-bit IEEE float.
pub const FRUGAL_DTYPE_F16: u32 = 1;
/// 64-bit signed integer.
pub const FRUGAL_DTYPE_I64: u32 = 2;
/// 32-bit signed integer.
pub const FRUGAL_DTYPE_I32: u32 = 3;
/// 8-bit unsigned integer / bool.
pub const FRUGAL_DTYPE_U8: u32 = 4;

/// Op families (`FrugalKernel::family`; bit `1 << family` in [`PluginBackend::FAMILIES`]).
pub const FRUGAL_FAMILY_CONV: u32 = 0;
/// Transposed convolution.
pub const FRUGAL_FAMILY_CONV_TRANSPOSE: u32 = 1;
/// Max or average pooling.
pub const FRUGAL_FAMILY_POOL: u32 = 2;
/// Global average pooling.
pub const FRUGAL_FAMILY_GLOBAL_AVG_POOL: u32 = 3;
/// Per-channel affine map.
pub const FRUGAL_FAMILY_AFFINE: u32 = 4;
/// Standalone activation.
pub const FRUGAL_FAMILY_UNARY: u32 = 5;
/// Broadcasting binary op.
pub const FRUGAL_FAMILY_BINARY: u32 = 6;
/// Concatenation.
pub const FRUGAL_FAMILY_CONCAT: u32 = 7;
/// Spatial resize.
pub const FRUGAL_FAMILY_RESIZE: u32 = 8;
/// Gemm with weight B.
pub const FRUGAL_FAMILY_GEMM: u32 = 9;
/// Batched matrix product.
pub const FRUGAL_FAMILY_MATMUL: u32 = 10;
/// Reduction.
pub const FRUGAL_FAMILY_REDUCE: u32 = 11;
/// Softmax.
pub const FRUGAL_FAMILY_SOFTMAX: u32 = 12;
/// Axis permutation.
pub const FRUGAL_FAMILY_TRANSPOSE: u32 = 13;
/// Element-order-preserving copy.
pub const FRUGAL_FAMILY_COPY: u32 = 14;
/// Number of op families.
pub const FRUGAL_FAMILY_COUNT: u32 = 15;

/// Family names, indexed by `FRUGAL_FAMILY_*` (the names frugal's errors use).
pub const FAMILY_NAMES: [&str; FRUGAL_FAMILY_COUNT as usize] = [
    "conv",
    "conv_transpose",
    "pool",
    "global_avg_pool",
    "affine",
    "unary",
    "binary",
    "concat",
    "resize",
    "gemm",
    "matmul",
    "reduce",
    "softmax",
    "transpose",
    "copy",
];

/// Activations (`FrugalActivation::kind`); `p0`, `p1` are the parameters named.
pub const FRUGAL_ACT_NONE: u32 = 0;
/// max(x, 0)
pub const FRUGAL_ACT_RELU: u32 = 1;
/// min(max(x, p0), p1)
pub const FRUGAL_ACT_CLIP: u32 = 2;
/// x if x >= 0 else p0 * x
pub const FRUGAL_ACT_LEAKY_RELU: u32 = 3;
/// 1 / (1 + exp(-x))
pub const FRUGAL_ACT_SIGMOID: u32 = 4;
/// max(0, min(1, p0 * x + p1))
pub const FRUGAL_ACT_HARD_SIGMOID: u32 = 5;
/// x * max(0, min(1, x / 6 + 1/2))
pub const FRUGAL_ACT_HARD_SWISH: u32 = 6;
/// tanh(x)
pub const FRUGAL_ACT_TANH: u32 = 7;
/// erf(x)
pub const FRUGAL_ACT_ERF: u32 = 8;

/// Pooling kinds.
pub const FRUGAL_POOL_MAX: u32 = 0;
/// Average pooling.
pub const FRUGAL_POOL_AVG: u32 = 1;

/// Binary kinds.
pub const FRUGAL_BINARY_ADD: u32 = 0;
/// a - b
pub const FRUGAL_BINARY_SUB: u32 = 1;
/// a * b
pub const FRUGAL_BINARY_MUL: u32 = 2;
/// a / b
pub const FRUGAL_BINARY_DIV: u32 = 3;
/// a if a >= 0 else a * b
pub const FRUGAL_BINARY_PRELU: u32 = 4;

/// Reduction kinds.
pub const FRUGAL_REDUCE_MEAN: u32 = 0;
/// Sum.
pub const FRUGAL_REDUCE_SUM: u32 = 1;
/// Maximum.
pub const FRUGAL_REDUCE_MAX: u32 = 2;

/// Resize modes.
pub const FRUGAL_RESIZE_NEAREST: u32 = 0;
/// (Bi)linear.
pub const FRUGAL_RESIZE_LINEAR: u32 = 1;
/// Resize coordinate transformations.
pub const FRUGAL_COORD_HALF_PIXEL: u32 = 0;
/// ONNX `pytorch_half_pixel`.
pub const FRUGAL_COORD_PYTORCH_HALF_PIXEL: u32 = 1;
/// ONNX `align_corners`.
pub const FRUGAL_COORD_ALIGN_CORNERS: u32 = 2;
/// ONNX `asymmetric`.
pub const FRUGAL_COORD_ASYMMETRIC: u32 = 3;
/// ONNX `tf_half_pixel_for_nearest`.
pub const FRUGAL_COORD_TF_HALF_PIXEL_FOR_NEAREST: u32 = 4;
/// Nearest rounding modes.
pub const FRUGAL_NEAREST_ROUND_PREFER_FLOOR: u32 = 0;
/// ONNX `round_prefer_ceil`.
pub const FRUGAL_NEAREST_ROUND_PREFER_CEIL: u32 = 1;
/// ONNX `floor`.
pub const FRUGAL_NEAREST_FLOOR: u32 = 2;
/// ONNX `ceil`.
pub const FRUGAL_NEAREST_CEIL: u32 = 3;

/// Operand kinds.
pub const FRUGAL_OPERAND_ARENA: u32 = 0;
/// An uploaded weight.
pub const FRUGAL_OPERAND_WEIGHT: u32 = 1;

/// A host-owned buffer the plugin writes an error message into (UTF-8, NUL-terminated,
/// truncated to fit).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrugalError {
    /// The message.
    pub message: [c_char; FRUGAL_ERROR_CAPACITY],
}

impl Default for FrugalError {
    fn default() -> Self {
        FrugalError { message: [0; FRUGAL_ERROR_CAPACITY] }
    }
}

impl std::fmt::Debug for FrugalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FrugalError({:?})", self.text())
    }
}

impl FrugalError {
    /// Writes `text`, truncated on a character boundary to fit, NUL-terminated.
    pub fn set(&mut self, text: &str) {
        let mut n = text.len().min(FRUGAL_ERROR_CAPACITY - 1);
        while !text.is_char_boundary(n) {
            n -= 1;
        }
        for (d, s) in self.message.iter_mut().zip(&text.as_bytes()[..n]) {
            *d = *s as c_char;
        }
        self.message[n] = 0;
    }

    /// The message up to its NUL (lossy UTF-8).
    pub fn text(&self) -> String {
        c_text(&self.message)
    }
}

/// A fixed-size C string field as text (up to the first NUL, lossy UTF-8).
pub fn c_text(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Writes `text` into a fixed-size C string field, truncated on a character boundary.
pub fn set_c_text(field: &mut [c_char], text: &str) {
    if field.is_empty() {
        return;
    }
    let mut n = text.len().min(field.len() - 1);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    for (d, s) in field.iter_mut().zip(&text.as_bytes()[..n]) {
        *d = *s as c_char;
    }
    field[n] = 0;
}

/// Options the host passes when creating a backend instance.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct FrugalOptions {
    /// `size_of::<FrugalOptions>()` as the host knows it.
    pub struct_size: u32,
    /// Threads the user asked for inside a kernel call (a hint).
    pub threads: u32,
}

/// What a backend can do, filled by the plugin into a zeroed record.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrugalCapabilities {
    /// Storage types its kernels read and write: bit `1 << FRUGAL_DTYPE_*`.
    pub storage_mask: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Largest single buffer it can allocate, in bytes.
    pub max_buffer_bytes: u64,
    /// Largest range one kernel may bind, in bytes.
    pub max_binding_bytes: u64,
    /// Human-readable device description (NUL-terminated).
    pub device: [c_char; FRUGAL_DEVICE_CAPACITY],
    /// Identity of the kernels' code (a version or hash; NUL-terminated, may be empty).
    pub kernels: [c_char; FRUGAL_KERNELS_CAPACITY],
}

impl Default for FrugalCapabilities {
    fn default() -> Self {
        FrugalCapabilities {
            storage_mask: 0,
            reserved: 0,
            max_buffer_bytes: 0,
            max_binding_bytes: 0,
            device: [0; FRUGAL_DEVICE_CAPACITY],
            kernels: [0; FRUGAL_KERNELS_CAPACITY],
        }
    }
}

impl std::fmt::Debug for FrugalCapabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrugalCapabilities")
            .field("storage_mask", &self.storage_mask)
            .field("max_buffer_bytes", &self.max_buffer_bytes)
            .field("max_binding_bytes", &self.max_binding_bytes)
            .field("device", &c_text(&self.device))
            .field("kernels", &c_text(&self.kernels))
            .finish()
    }
}

/// A constant the host uploads once (always f32 data today: the host converts).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalTensor {
    /// Storage type of `data` (`FRUGAL_DTYPE_F32`).
    pub dtype: u32,
    /// Number of axes.
    pub rank: u32,
    /// Axes (the first `rank` are meaningful, the rest 1).
    pub dims: [u64; FRUGAL_MAX_RANK],
    /// The elements, row-major.
    pub data: *const c_void,
    /// Number of elements.
    pub len: u64,
}

/// What a kernel sees of one tensor in the arena: some of its rows, in a buffer that may be a
/// ring. With `(planes, height, width)` = (product of all axes but the last two, second-to-last
/// axis, last axis) (rank 1: `(1, 1, d0)`; rank 0: `(1, 1, 1)`), row `r` of plane `p` starts at
/// element `offset / dtype_size + (p * capacity + r % capacity) * row_stride` of the arena.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrugalWindow {
    /// Byte offset of the buffer in the arena.
    pub offset: u64,
    /// Storage type (`FRUGAL_DTYPE_*`).
    pub dtype: u32,
    /// Number of axes.
    pub rank: u32,
    /// Shape of the whole tensor (first `rank` entries; the rest are 1).
    pub dims: [u64; FRUGAL_MAX_RANK],
    /// Rows the buffer holds (the ring capacity; the tensor height when held whole).
    pub capacity: u64,
    /// Elements between the starts of consecutive rows.
    pub row_stride: u64,
    /// First tensor row of the window.
    pub first_row: u64,
    /// Rows in the window.
    pub rows: u64,
}

impl FrugalWindow {
    /// The tensor's shape.
    pub fn shape(&self) -> &[u64] {
        &self.dims[..(self.rank as usize).min(FRUGAL_MAX_RANK)]
    }

    /// Element count of the whole tensor.
    pub fn numel(&self) -> usize {
        self.shape().iter().product::<u64>() as usize
    }

    /// `(planes, height, width)` of the whole tensor.
    pub fn geometry(&self) -> (usize, usize, usize) {
        let d: Vec<usize> = self.shape().iter().map(|&v| v as usize).collect();
        match d.len() {
            0 => (1, 1, 1),
            1 => (1, 1, d[0]),
            r => (d[..r - 2].iter().product(), d[r - 2], d[r - 1]),
        }
    }

    /// Bytes per element.
    pub fn dtype_size(&self) -> usize {
        match self.dtype {
            FRUGAL_DTYPE_F16 => 2,
            FRUGAL_DTYPE_I64 => 8,
            FRUGAL_DTYPE_U8 => 1,
            _ => 4,
        }
    }

    /// Arena element index of row `row` of plane `plane` (rings wrap: `row % capacity`).
    pub fn row_start(&self, plane: usize, row: usize) -> usize {
        let cap = self.capacity.max(1) as usize;
        self.offset as usize / self.dtype_size()
            + (plane * cap + row % cap) * self.row_stride as usize
    }

    /// Arena element index of the element whose row-major index in the whole tensor is `f`.
    pub fn index(&self, f: usize) -> usize {
        let (_, h, w) = self.geometry();
        let (h, w) = (h.max(1), w.max(1));
        let g = f / w;
        self.row_start(g / h, g % h) + f % w
    }

    /// Tensor rows the window covers.
    pub fn row_range(&self) -> Range<usize> {
        self.first_row as usize..(self.first_row + self.rows) as usize
    }
}

/// An uploaded weight as a kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrugalWeight {
    /// The id `upload` returned.
    pub id: u64,
    /// Number of axes.
    pub rank: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Shape (first `rank` entries; the rest are 1).
    pub dims: [u64; FRUGAL_MAX_RANK],
}

impl FrugalWeight {
    /// The weight's shape.
    pub fn shape(&self) -> &[u64] {
        &self.dims[..(self.rank as usize).min(FRUGAL_MAX_RANK)]
    }
}

/// An operand that is either rows of an activation (`FRUGAL_OPERAND_ARENA`: `window`) or an
/// uploaded constant (`FRUGAL_OPERAND_WEIGHT`: `weight`); the other field is zeroed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrugalOperand {
    /// `FRUGAL_OPERAND_ARENA` or `FRUGAL_OPERAND_WEIGHT`.
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The activation rows.
    pub window: FrugalWindow,
    /// The constant.
    pub weight: FrugalWeight,
}

impl FrugalOperand {
    /// The operand's whole shape.
    pub fn shape(&self) -> &[u64] {
        if self.kind == FRUGAL_OPERAND_WEIGHT {
            self.weight.shape()
        } else {
            self.window.shape()
        }
    }
}

/// A pointwise activation (`FRUGAL_ACT_*` with up to two parameters).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrugalActivation {
    /// `FRUGAL_ACT_*`.
    pub kind: u32,
    /// First parameter (Clip min, LeakyRelu alpha, HardSigmoid alpha).
    pub p0: f32,
    /// Second parameter (Clip max, HardSigmoid beta).
    pub p1: f32,
    /// Reserved, zero.
    pub reserved: u32,
}

/// A scratch region of the arena reserved for one kernel call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrugalScratch {
    /// Byte offset in the arena.
    pub offset: u64,
    /// Bytes available.
    pub bytes: u64,
}

/// Convolution with optional bias, fused residual and fused activation:
/// `y = act(conv(x, w) + b + r)`. Weight `[M, C/groups, kh, kw]`; pads top, left, bottom, right.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalConv {
    /// Kernel height and width.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Pads: top, left, bottom, right.
    pub pads: [u64; 4],
    /// Groups (C for depthwise).
    pub groups: u64,
    /// Fused activation.
    pub act: FrugalActivation,
    /// Whether `b` is set.
    pub has_bias: u32,
    /// Whether `r` is set (residual rows, the output's shape, read on the output's rows).
    pub has_residual: u32,
    /// Input rows.
    pub x: FrugalWindow,
    /// Weight.
    pub w: FrugalWeight,
    /// Bias `[M]`.
    pub b: FrugalWeight,
    /// Residual rows.
    pub r: FrugalWindow,
    /// Output rows to produce.
    pub y: FrugalWindow,
}

/// Transposed convolution, weight `[C, M/groups, kh, kw]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalConvTranspose {
    /// Kernel height and width.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Padding removed from the full output: top, left, bottom, right.
    pub pads: [u64; 4],
    /// Extra rows/columns at the bottom/right.
    pub output_padding: [u64; 2],
    /// Groups.
    pub groups: u64,
    /// Fused activation.
    pub act: FrugalActivation,
    /// Whether `b` is set.
    pub has_bias: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Input rows.
    pub x: FrugalWindow,
    /// Weight.
    pub w: FrugalWeight,
    /// Bias `[M]`.
    pub b: FrugalWeight,
    /// Output rows.
    pub y: FrugalWindow,
}

/// Max or average pooling. Pooling **folds**: a call may bring only some of an output row's
/// input rows; the call holding its first in-bounds tap row starts the row (-inf or 0), every
/// call adds the taps it holds, and the call holding the last tap row finishes it (averages
/// divide by the ONNX divisor).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalPool {
    /// `FRUGAL_POOL_MAX` or `FRUGAL_POOL_AVG`.
    pub kind: u32,
    /// ONNX `ceil_mode`.
    pub ceil_mode: u32,
    /// ONNX `count_include_pad`.
    pub count_include_pad: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Kernel height and width.
    pub kernel: [u64; 2],
    /// Strides.
    pub strides: [u64; 2],
    /// Dilations.
    pub dilations: [u64; 2],
    /// Pads: top, left, bottom, right.
    pub pads: [u64; 4],
    /// Input rows.
    pub x: FrugalWindow,
    /// Output rows.
    pub y: FrugalWindow,
}

/// Mean over the spatial axes per channel; output `[N, C, 1, 1]` held whole. A rank-4 input
/// may come a few rows at a time: the call bringing row 0 starts the sums, the one bringing the
/// last row divides.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalGlobalAvgPool {
    /// Input rows.
    pub x: FrugalWindow,
    /// Output.
    pub y: FrugalWindow,
}

/// `y = act(x * scale[c] + shift[c])`, `c` along axis 1.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalAffine {
    /// Fused activation.
    pub act: FrugalActivation,
    /// Input rows.
    pub x: FrugalWindow,
    /// Scale `[C]`.
    pub scale: FrugalWeight,
    /// Shift `[C]`.
    pub shift: FrugalWeight,
    /// Output rows.
    pub y: FrugalWindow,
}

/// `y = act(x)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalUnary {
    /// The activation.
    pub act: FrugalActivation,
    /// Input rows.
    pub x: FrugalWindow,
    /// Output rows.
    pub y: FrugalWindow,
}

/// Broadcasting `y = act(a op b)` (numpy broadcasting).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalBinary {
    /// `FRUGAL_BINARY_*`.
    pub kind: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Fused activation.
    pub act: FrugalActivation,
    /// Left operand.
    pub a: FrugalOperand,
    /// Right operand.
    pub b: FrugalOperand,
    /// Output rows.
    pub y: FrugalWindow,
}

/// Concatenation of `count` windows along `axis`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalConcat {
    /// Axis.
    pub axis: u64,
    /// Number of inputs.
    pub count: u64,
    /// The inputs, in order.
    pub xs: *const FrugalWindow,
    /// Output rows.
    pub y: FrugalWindow,
}

impl FrugalConcat {
    /// The inputs as a slice.
    ///
    /// # Safety
    /// `xs` must point to `count` windows (the host guarantees it for the call's duration).
    pub unsafe fn inputs(&self) -> &[FrugalWindow] {
        if self.count == 0 || self.xs.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees `xs` holds `count` windows.
        unsafe { std::slice::from_raw_parts(self.xs, self.count as usize) }
    }
}

/// Spatial resize of the last two axes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalResize {
    /// `FRUGAL_RESIZE_*`.
    pub mode: u32,
    /// `FRUGAL_COORD_*`.
    pub coord: u32,
    /// `FRUGAL_NEAREST_*`.
    pub nearest: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Scales along H and W.
    pub scales: [f32; 2],
    /// Output H and W.
    pub size: [u64; 2],
    /// Input rows.
    pub x: FrugalWindow,
    /// Output rows.
    pub y: FrugalWindow,
}

/// `y = act(alpha * op(A) * op(B) + beta * C)`, `op` transposing when asked.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalGemm {
    /// alpha.
    pub alpha: f32,
    /// beta.
    pub beta: f32,
    /// Transpose A.
    pub trans_a: u32,
    /// Transpose B.
    pub trans_b: u32,
    /// Fused activation.
    pub act: FrugalActivation,
    /// Whether `c` is set.
    pub has_c: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// A (rank 2, held whole).
    pub a: FrugalWindow,
    /// B.
    pub b: FrugalWeight,
    /// C (broadcast to the output).
    pub c: FrugalWeight,
    /// Output.
    pub y: FrugalWindow,
}

/// Batched matrix product with broadcasting over the leading axes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalMatMul {
    /// Fused activation.
    pub act: FrugalActivation,
    /// Left.
    pub a: FrugalOperand,
    /// Right.
    pub b: FrugalOperand,
    /// Output.
    pub y: FrugalWindow,
}

/// Reduction over `axes[..naxes]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalReduce {
    /// `FRUGAL_REDUCE_*`.
    pub kind: u32,
    /// Keep reduced axes as 1.
    pub keepdims: u32,
    /// Number of axes.
    pub naxes: u64,
    /// The axes.
    pub axes: [u64; FRUGAL_MAX_RANK],
    /// Input.
    pub x: FrugalWindow,
    /// Output.
    pub y: FrugalWindow,
}

/// Softmax over `axis` (over every axis from `axis` on when `coerce_2d`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalSoftmax {
    /// Axis.
    pub axis: u64,
    /// ONNX opset < 13 semantics.
    pub coerce_2d: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// Input (held whole).
    pub x: FrugalWindow,
    /// Output (held whole).
    pub y: FrugalWindow,
}

/// Axis permutation: output axis `i` is input axis `perm[i]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalTranspose {
    /// Number of axes.
    pub rank: u64,
    /// The permutation.
    pub perm: [u64; FRUGAL_MAX_RANK],
    /// Input.
    pub x: FrugalWindow,
    /// Output.
    pub y: FrugalWindow,
}

/// Element-order-preserving copy (reshape, flatten, materialising a constant): output element
/// `f` (row-major over the whole output) is input element `f`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalCopy {
    /// Source.
    pub x: FrugalOperand,
    /// Output rows.
    pub y: FrugalWindow,
}

/// A kernel of any family, for `prepare` and `workspace_bytes`: `call` points to the family's
/// record (`FrugalConv` for `FRUGAL_FAMILY_CONV`, ...).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalKernel {
    /// `FRUGAL_FAMILY_*`.
    pub family: u32,
    /// Reserved, zero.
    pub reserved: u32,
    /// The family's record.
    pub call: *const c_void,
}

/// An opaque backend instance made by `create`.
pub type FrugalBackend = *mut c_void;

/// Creates a backend instance into `*out`.
pub type CreateFn = unsafe extern "C" fn(
    options: *const FrugalOptions,
    out: *mut FrugalBackend,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Releases an instance (frees everything it holds).
pub type ReleaseFn = unsafe extern "C" fn(backend: FrugalBackend);
/// Fills a zeroed capabilities record.
pub type CapabilitiesFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    out: *mut FrugalCapabilities,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Checks the device is usable.
pub type CheckFn =
    unsafe extern "C" fn(backend: FrugalBackend, err: *mut FrugalError) -> FrugalStatus;
/// Allocates the arena (replacing any previous one).
pub type AllocArenaFn =
    unsafe extern "C" fn(backend: FrugalBackend, bytes: u64, err: *mut FrugalError) -> FrugalStatus;
/// Uploads a constant; writes its id.
pub type UploadFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    tensor: *const FrugalTensor,
    id: *mut u64,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Prepares a node's kernel (once per node, at session creation).
pub type PrepareFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    kernel: *const FrugalKernel,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Scratch bytes a kernel needs.
pub type WorkspaceFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    kernel: *const FrugalKernel,
    bytes: *mut u64,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Copies host rows `rows_begin..rows_end` of every plane (plane after plane, `len` floats)
/// into the window's rows.
pub type WriteFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    dst: *const FrugalWindow,
    src: *const f32,
    len: u64,
    rows_begin: u64,
    rows_end: u64,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Copies the window's rows to host rows laid out as in `write`.
pub type ReadFn = unsafe extern "C" fn(
    backend: FrugalBackend,
    src: *const FrugalWindow,
    dst: *mut f32,
    len: u64,
    rows_begin: u64,
    rows_end: u64,
    err: *mut FrugalError,
) -> FrugalStatus;
/// Waits for queued work.
pub type SyncFn =
    unsafe extern "C" fn(backend: FrugalBackend, err: *mut FrugalError) -> FrugalStatus;
/// Bytes held for uploaded weights.
pub type WeightBytesFn = unsafe extern "C" fn(backend: FrugalBackend) -> u64;
/// Runs one kernel of family `T` (`FrugalConv`, `FrugalPool`, ...).
pub type ExecFn<T> = unsafe extern "C" fn(
    backend: FrugalBackend,
    call: *const T,
    scratch: FrugalScratch,
    err: *mut FrugalError,
) -> FrugalStatus;

/// The first two fields of every module record, whatever its version: what the host reads
/// first.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalPluginHeader {
    /// [`FRUGAL_PLUGIN_ABI_VERSION`] the plugin was built for.
    pub abi_version: u32,
    /// `size_of` the whole record as the plugin built it.
    pub struct_size: u32,
}

/// The record `frugal_plugin_entry` returns (static, never freed). Every function but the op
/// families is required; an op family left null is one the plugin does not run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FrugalPluginModule {
    /// [`FRUGAL_PLUGIN_ABI_VERSION`].
    pub abi_version: u32,
    /// `size_of::<FrugalPluginModule>()`.
    pub struct_size: u32,
    /// Short name of the backend (NUL-terminated, static).
    pub name: *const c_char,
    /// Creates an instance.
    pub create: Option<CreateFn>,
    /// Releases an instance.
    pub release: Option<ReleaseFn>,
    /// Capabilities.
    pub capabilities: Option<CapabilitiesFn>,
    /// Device check.
    pub check: Option<CheckFn>,
    /// Arena allocation.
    pub alloc_arena: Option<AllocArenaFn>,
    /// Weight upload.
    pub upload: Option<UploadFn>,
    /// Per-node preparation.
    pub prepare: Option<PrepareFn>,
    /// Scratch sizing.
    pub workspace_bytes: Option<WorkspaceFn>,
    /// Host to arena rows.
    pub write: Option<WriteFn>,
    /// Arena rows to host.
    pub read: Option<ReadFn>,
    /// Wait for queued work.
    pub sync: Option<SyncFn>,
    /// Weight bytes held.
    pub weight_bytes: Option<WeightBytesFn>,
    /// Convolution.
    pub conv: Option<ExecFn<FrugalConv>>,
    /// Transposed convolution.
    pub conv_transpose: Option<ExecFn<FrugalConvTranspose>>,
    /// Pooling.
    pub pool: Option<ExecFn<FrugalPool>>,
    /// Global average pooling.
    pub global_avg_pool: Option<ExecFn<FrugalGlobalAvgPool>>,
    /// Affine.
    pub affine: Option<ExecFn<FrugalAffine>>,
    /// Unary.
    pub unary: Option<ExecFn<FrugalUnary>>,
    /// Binary.
    pub binary: Option<ExecFn<FrugalBinary>>,
    /// Concat.
    pub concat: Option<ExecFn<FrugalConcat>>,
    /// Resize.
    pub resize: Option<ExecFn<FrugalResize>>,
    /// Gemm.
    pub gemm: Option<ExecFn<FrugalGemm>>,
    /// MatMul.
    pub matmul: Option<ExecFn<FrugalMatMul>>,
    /// Reduce.
    pub reduce: Option<ExecFn<FrugalReduce>>,
    /// Softmax.
    pub softmax: Option<ExecFn<FrugalSoftmax>>,
    /// Transpose.
    pub transpose: Option<ExecFn<FrugalTranspose>>,
    /// Copy.
    pub copy: Option<ExecFn<FrugalCopy>>,
}

// SAFETY: the record is immutable static data (function pointers and a pointer to a static
// string), so sharing it between threads is sound.
unsafe impl Sync for FrugalPluginModule {}
// SAFETY: as above.
unsafe impl Send for FrugalPluginModule {}

impl FrugalPluginModule {
    /// Whether the op family `family` (`FRUGAL_FAMILY_*`) has a function.
    pub fn has_family(&self, family: u32) -> bool {
        match family {
            FRUGAL_FAMILY_CONV => self.conv.is_some(),
            FRUGAL_FAMILY_CONV_TRANSPOSE => self.conv_transpose.is_some(),
            FRUGAL_FAMILY_POOL => self.pool.is_some(),
            FRUGAL_FAMILY_GLOBAL_AVG_POOL => self.global_avg_pool.is_some(),
            FRUGAL_FAMILY_AFFINE => self.affine.is_some(),
            FRUGAL_FAMILY_UNARY => self.unary.is_some(),
            FRUGAL_FAMILY_BINARY => self.binary.is_some(),
            FRUGAL_FAMILY_CONCAT => self.concat.is_some(),
            FRUGAL_FAMILY_RESIZE => self.resize.is_some(),
            FRUGAL_FAMILY_GEMM => self.gemm.is_some(),
            FRUGAL_FAMILY_MATMUL => self.matmul.is_some(),
            FRUGAL_FAMILY_REDUCE => self.reduce.is_some(),
            FRUGAL_FAMILY_SOFTMAX => self.softmax.is_some(),
            FRUGAL_FAMILY_TRANSPOSE => self.transpose.is_some(),
            FRUGAL_FAMILY_COPY => self.copy.is_some(),
            _ => false,
        }
    }

    /// The plugin's name (lossy UTF-8; empty when null).
    ///
    /// # Safety
    /// `name` must be null or point to a NUL-terminated string.
    pub unsafe fn name_text(&self) -> String {
        if self.name.is_null() {
            return String::new();
        }
        // SAFETY: guaranteed by the caller.
        unsafe { CStr::from_ptr(self.name) }.to_string_lossy().into_owned()
    }
}

/// The type of the entry symbol.
pub type EntryFn = unsafe extern "C" fn() -> *const FrugalPluginModule;
