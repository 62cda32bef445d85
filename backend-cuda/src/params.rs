//! Host-side parameter packing: the `#[repr(C)]` mirrors of the structs the kernels take by
//! value (`kernels/*.cu`), built from row windows and op parameters, and the launch geometry.
//! None of this touches the GPU, so it is unit-tested everywhere.
//!
//! Layout rule shared with the `.cu` files: 8-byte fields (device pointers, windows) first,
//! then 4-byte ones, with explicit padding, so `#[repr(C)]` and the CUDA compiler agree; the
//! sizes are pinned by tests below and by `const` assertions.

use frugal_core::backend::{Dims, RowWindow, MAX_RANK};
use frugal_core::ops::Activation;
use frugal_core::{DType, Error, Result};

/// Threads per block of every launch.
pub const BLOCK: u32 = 256;

/// Blocks of a 1-D launch covering `n` threads (`None`: nothing to launch, or too many).
pub fn blocks(n: u64) -> Option<u32> {
    if n == 0 {
        return None;
    }
    u32::try_from(n.div_ceil(BLOCK as u64)).ok().filter(|&b| b <= i32::MAX as u32)
}

pub(crate) fn fail(op: &str, reason: impl Into<String>) -> Error {
    Error::Backend { backend: "cuda".into(), op: op.into(), reason: reason.into() }
}

fn i32_of(op: &str, v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| fail(op, format!("{v} does not fit the kernels' 32-bit indices")))
}

/// `Win` in `kernels/common.cuh`: one tensor as a kernel sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Win {
    /// Element index of the buffer in its allocation.
    pub base: i64,
    /// Ring capacity in rows.
    pub cap: i32,
    /// Elements between row starts.
    pub stride: i32,
    /// Planes (product of the axes before the row axis).
    pub planes: i32,
    /// Tensor height.
    pub h: i32,
    /// Tensor width.
    pub w: i32,
    /// First row of the window.
    pub first: i32,
    /// Rows in the window.
    pub rows: i32,
    /// Axes of the tensor.
    pub rank: i32,
    /// The shape (unused axes 1).
    pub dims: [i32; MAX_RANK],
    /// Padding to 8 bytes.
    pub pad_: i32,
}

const _: () = assert!(std::mem::size_of::<Win>() == 72);

impl Win {
    /// The kernel view of an arena window (f32 storage only).
    pub fn of(op: &str, w: &RowWindow) -> Result<Win> {
        if w.dtype != DType::F32 {
            return Err(fail(op, format!("{:?} storage: this backend stores f32 only", w.dtype)));
        }
        if !w.offset.is_multiple_of(4) {
            return Err(fail(op, format!("misaligned window offset {}", w.offset)));
        }
        let (planes, h, width) = w.geometry();
        let mut v = Win {
            base: i64::try_from(w.offset / 4).map_err(|_| fail(op, "offset too large"))?,
            cap: i32_of(op, w.capacity)?,
            stride: i32_of(op, w.row_stride)?,
            planes: i32_of(op, planes)?,
            h: i32_of(op, h)?,
            w: i32_of(op, width)?,
            first: i32_of(op, w.first_row)?,
            rows: i32_of(op, w.rows)?,
            ..Win::default()
        };
        v.set_dims(op, &w.dims)?;
        Ok(v)
    }

    /// A weight of shape `dims` seen as a whole contiguous window at the start of its buffer.
    pub fn weight(op: &str, dims: &Dims) -> Result<Win> {
        let (planes, h, width) = dims.rows();
        let mut v = Win {
            base: 0,
            cap: i32_of(op, h.max(1))?,
            stride: i32_of(op, width)?,
            planes: i32_of(op, planes)?,
            h: i32_of(op, h)?,
            w: i32_of(op, width)?,
            first: 0,
            rows: i32_of(op, h)?,
            ..Win::default()
        };
        v.set_dims(op, dims)?;
        Ok(v)
    }

    fn set_dims(&mut self, op: &str, dims: &Dims) -> Result<()> {
        self.rank = dims.rank() as i32;
        self.dims = [1; MAX_RANK];
        for (d, &s) in self.dims.iter_mut().zip(dims.as_slice()) {
            *d = i32_of(op, s)?;
        }
        Ok(())
    }

    /// Elements of the whole buffer behind the window, from `base` (every plane, every ring
    /// slot): what must lie inside the allocation.
    pub fn extent(&self) -> std::ops::Range<i64> {
        self.base..self.base + self.planes as i64 * self.cap as i64 * self.stride as i64
    }

    /// Threads of a launch with one thread per element of the window's rows.
    pub fn threads(&self) -> u64 {
        self.planes as u64 * self.rows as u64 * self.w as u64
    }
}

/// `Act` in `kernels/common.cuh`: a fused activation, kind 0 for none.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Act {
    /// Which function (see `activate` in common.cuh).
    pub kind: i32,
    /// First parameter.
    pub a: f32,
    /// Second parameter.
    pub b: f32,
    /// Padding.
    pub pad_: i32,
}

impl Act {
    /// The kernel encoding of an optional activation.
    pub fn of(act: Option<&Activation>) -> Act {
        let (kind, a, b) = match act {
            None => (0, 0.0, 0.0),
            Some(Activation::Relu) => (1, 0.0, 0.0),
            Some(&Activation::Clip { min, max }) => (2, min, max),
            Some(&Activation::LeakyRelu { alpha }) => (3, alpha, 0.0),
            Some(Activation::Sigmoid) => (4, 0.0, 0.0),
            Some(&Activation::HardSigmoid { alpha, beta }) => (5, alpha, beta),
            Some(Activation::HardSwish) => (6, 0.0, 0.0),
            Some(Activation::Tanh) => (7, 0.0, 0.0),
            Some(Activation::Erf) => (8, 0.0, 0.0),
        };
        Act { kind, a, b, pad_: 0 }
    }
}

/// Declares a parameter struct and lets cudarc pass it by value.
macro_rules! params {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident : $t:ty),* $(,)? } = $size:expr) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default)]
        #[allow(missing_docs)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }
        impl $name {
            /// Field names and Rust types in order (checked against the `.cu` declaration).
            #[allow(dead_code)]
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($f), stringify!($t))),*];
        }
        // SAFETY: plain old data, laid out as the struct of the same name in kernels/*.cu.
        unsafe impl cudarc::driver::DeviceRepr for $name {}
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
    };
}

params!(
    /// `conv2d`.
    ConvParams {
        arena: u64, w: u64, b: u64, x: Win, y: Win, r: Win, act: Act, has_r: i32,
        kh: i32, kw: i32, sh: i32, sw: i32, dh: i32, dw: i32, ph: i32, pw: i32,
        cin: i32, m: i32, cg: i32, mg: i32, pad_: i32,
    } = 312
);

params!(
    /// `conv_transpose2d`.
    ConvTransposeParams {
        arena: u64, w: u64, b: u64, x: Win, y: Win, act: Act,
        kh: i32, kw: i32, sh: i32, sw: i32, dh: i32, dw: i32, ph: i32, pw: i32,
        c: i32, m: i32, cg: i32, mg: i32,
    } = 232
);

params!(
    /// `pool2d`.
    PoolParams {
        arena: u64, x: Win, y: Win, is_max: i32, count_include_pad: i32,
        kh: i32, kw: i32, sh: i32, sw: i32, dh: i32, dw: i32,
        pt: i32, pl: i32, pb: i32, pr: i32,
    } = 200
);

params!(
    /// `global_avg_pool`.
    GapParams { arena: u64, x: Win, y: Win, streaming: i32, size: i32, rows_per: i32, pad_: i32 } = 168
);

params!(
    /// `unary`.
    UnaryParams { arena: u64, x: Win, y: Win, act: Act } = 168
);

params!(
    /// `affine`.
    AffineParams {
        arena: u64, scale: u64, shift: u64, x: Win, y: Win, act: Act, channels: i32, inner: i32,
    } = 192
);

params!(
    /// `binary`.
    BinaryParams {
        arena: u64, a_ptr: u64, b_ptr: u64, a: Win, b: Win, y: Win, act: Act, kind: i32, pad_: i32,
    } = 264
);

params!(
    /// `concat_piece`.
    ConcatParams { arena: u64, x: Win, y: Win, axis: i32, off: i32, row_lo: i32, row_hi: i32 } = 168
);

params!(
    /// `transpose`.
    TransposeParams { arena: u64, x: Win, y: Win, perm: [i32; MAX_RANK] } = 176
);

params!(
    /// `copy_flat`.
    CopyParams { arena: u64, src: u64, x: Win, y: Win } = 160
);

params!(
    /// `scatter_rows` and `gather_rows`.
    RowsParams { arena: u64, host: u64, v: Win, host_lo: i32, host_rows: i32 } = 96
);

params!(
    /// `resize2d`.
    ResizeParams { arena: u64, taps: u64, x: Win, y: Win, linear: i32, pad_: i32 } = 168
);

params!(
    /// `gemm`.
    GemmParams {
        arena: u64, b: u64, c: u64, a: Win, y: Win, act: Act, alpha: f32, beta: f32,
        trans_a: i32, trans_b: i32, k: i32, n: i32, c_rs: i32, c_cs: i32,
    } = 216
);

params!(
    /// `matmul`.
    MatMulParams {
        arena: u64, a_ptr: u64, b_ptr: u64, a: Win, b: Win, y: Win, act: Act,
        m: i32, k: i32, n: i32, nb: i32,
        batch: [i32; MAX_RANK], astr: [i32; MAX_RANK], bstr: [i32; MAX_RANK],
        row_lo: i32, rows: i32,
    } = 352
);

params!(
    /// `reduce`.
    ReduceParams {
        arena: u64, x: Win, y: Win, kind: i32, keepdims: i32, reduced: [i32; MAX_RANK],
        count: f32, pad_: i32,
    } = 192
);

params!(
    /// `softmax`.
    SoftmaxParams { arena: u64, x: Win, y: Win, outer: i32, len: i32, inner: i32, pad_: i32 } = 168
);

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(s: &[usize]) -> Dims {
        Dims::new(s).unwrap()
    }

    #[test]
    fn windows_pack_their_geometry() {
        let w = RowWindow {
            offset: 256,
            dtype: DType::F32,
            dims: dims(&[1, 3, 10, 7]),
            capacity: 4,
            row_stride: 8,
            first_row: 5,
            rows: 2,
        };
        let v = Win::of("t", &w).unwrap();
        assert_eq!((v.base, v.cap, v.stride, v.planes, v.h, v.w), (64, 4, 8, 3, 10, 7));
        assert_eq!((v.first, v.rows, v.rank), (5, 2, 4));
        assert_eq!(v.dims, [1, 3, 10, 7, 1, 1]);
        assert_eq!(v.extent(), 64..64 + 3 * 4 * 8);
        assert_eq!(v.threads(), 3 * 2 * 7);
        // The kernels' address of (plane 2, row 9) equals RowWindow::row_start.
        let at = v.base + (2 * v.cap as i64 + 9 % v.cap as i64) * v.stride as i64;
        assert_eq!(at as usize, w.row_start(2, 9));
    }

    #[test]
    fn f16_windows_and_huge_sizes_are_refused() {
        let mut w = RowWindow::whole(0, DType::F16, dims(&[1, 2, 3, 4]));
        assert!(Win::of("t", &w).unwrap_err().to_string().contains("f32 only"));
        w.dtype = DType::F32;
        w.row_stride = usize::MAX / 2;
        assert!(Win::of("t", &w).is_err());
    }

    #[test]
    fn weights_are_whole_row_major_windows() {
        for s in [&[][..], &[5][..], &[4, 6][..], &[2, 3, 4][..]] {
            let d = dims(s);
            let v = Win::weight("t", &d).unwrap();
            let (planes, h, w) = d.rows();
            // Element (p, r, c) sits at its row-major index.
            for p in 0..planes {
                for r in 0..h {
                    for c in 0..w {
                        let at = (p as i64 * v.cap as i64 + r as i64 % v.cap as i64)
                            * v.stride as i64
                            + c as i64;
                        assert_eq!(at as usize, (p * h + r) * w + c, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn activations_encode_their_parameters() {
        assert_eq!(Act::of(None).kind, 0);
        let c = Act::of(Some(&Activation::Clip { min: -1.0, max: 6.0 }));
        assert_eq!((c.kind, c.a, c.b), (2, -1.0, 6.0));
        let h = Act::of(Some(&Activation::HardSigmoid { alpha: 0.2, beta: 0.5 }));
        assert_eq!((h.kind, h.a, h.b), (5, 0.2, 0.5));
        assert_eq!(Act::of(Some(&Activation::Erf)).kind, 8);
    }

    /// Every parameter struct declared in the kernel sources, field by field: the C type of
    /// each field mapped to its Rust mirror.
    fn cu_structs() -> Vec<(String, Vec<(String, String)>)> {
        let mut out = Vec::new();
        let src = crate::kernels::SOURCES.iter().map(|(_, s)| *s).collect::<Vec<_>>().join("\n");
        let mut lines = src.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line.strip_prefix("struct ").and_then(|l| l.strip_suffix(" {")) else {
                continue;
            };
            let mut fields = Vec::new();
            for l in lines.by_ref() {
                let l = l.split("//").next().unwrap().trim();
                if l.starts_with("};") {
                    break;
                }
                let Some(decl) = l.strip_suffix(';') else { continue };
                let (ty, names) = decl.split_once(' ').unwrap();
                for n in names.split(',') {
                    let n = n.trim();
                    let (n, rust) = match n.strip_suffix("[MAX_RANK]") {
                        Some(n) => (n, "[i32; MAX_RANK]".to_string()),
                        None => {
                            let t = match ty {
                                "u64" => "u64",
                                "i64" => "i64",
                                "int" => "i32",
                                "float" => "f32",
                                other => other,
                            };
                            (n, t.to_string())
                        }
                    };
                    fields.push((n.to_string(), rust));
                }
            }
            out.push((name.to_string(), fields));
        }
        out
    }

    #[test]
    fn rust_parameter_structs_mirror_the_kernel_sources() {
        let cu = cu_structs();
        let rust: &[(&str, &[(&str, &str)])] = &[
            ("ConvParams", ConvParams::FIELDS),
            ("ConvTransposeParams", ConvTransposeParams::FIELDS),
            ("PoolParams", PoolParams::FIELDS),
            ("GapParams", GapParams::FIELDS),
            ("UnaryParams", UnaryParams::FIELDS),
            ("AffineParams", AffineParams::FIELDS),
            ("BinaryParams", BinaryParams::FIELDS),
            ("ConcatParams", ConcatParams::FIELDS),
            ("TransposeParams", TransposeParams::FIELDS),
            ("CopyParams", CopyParams::FIELDS),
            ("RowsParams", RowsParams::FIELDS),
            ("ResizeParams", ResizeParams::FIELDS),
            ("GemmParams", GemmParams::FIELDS),
            ("MatMulParams", MatMulParams::FIELDS),
            ("ReduceParams", ReduceParams::FIELDS),
            ("SoftmaxParams", SoftmaxParams::FIELDS),
        ];
        for (name, fields) in rust {
            let (_, c) = cu
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("struct {name} not in the kernel sources"));
            let c: Vec<(&str, &str)> = c.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            assert_eq!(&c[..], *fields, "{name}");
        }
        // Win and Act too.
        let win = &cu.iter().find(|(n, _)| n == "Win").unwrap().1;
        let names: Vec<&str> = win.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["base", "cap", "stride", "planes", "h", "w", "first", "rows", "rank", "dims", "pad_"]
        );
        assert_eq!(std::mem::size_of::<Act>(), 16);
        assert_eq!(cu.iter().filter(|(n, _)| n.ends_with("Params")).count(), rust.len());
    }

    #[test]
    fn launch_geometry_covers_every_thread_once() {
        assert_eq!(blocks(0), None);
        assert_eq!(blocks(1), Some(1));
        assert_eq!(blocks(256), Some(1));
        assert_eq!(blocks(257), Some(2));
        assert_eq!(blocks(1 << 40), None);
    }
}
