//! The kernel sources (`kernels/*.cu`, embedded with `include_str!`), their NVRTC compilation
//! (once per process and GPU architecture, cached) and the names of the entry points.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

/// `(file, source)` in the order NVRTC compiles them as one program.
pub const SOURCES: &[(&str, &str)] = &[
    ("common.cuh", include_str!("kernels/common.cuh")),
    ("conv.cu", include_str!("kernels/conv.cu")),
    ("pool.cu", include_str!("kernels/pool.cu")),
    ("eltwise.cu", include_str!("kernels/eltwise.cu")),
    ("layout.cu", include_str!("kernels/layout.cu")),
    ("resize.cu", include_str!("kernels/resize.cu")),
    ("dense.cu", include_str!("kernels/dense.cu")),
    ("reduce.cu", include_str!("kernels/reduce.cu")),
];

/// Every `extern "C" __global__` entry point the backend loads.
pub const FUNCTIONS: &[&str] = &[
    "conv2d",
    "conv_transpose2d",
    "pool2d",
    "global_avg_pool",
    "unary",
    "affine",
    "binary",
    "concat_piece",
    "transpose",
    "copy_flat",
    "scatter_rows",
    "gather_rows",
    "resize2d",
    "gemm",
    "matmul",
    "reduce",
    "softmax",
];

/// The whole program: the sources concatenated, each introduced by its file name.
pub fn program() -> String {
    let mut s = String::new();
    for (name, src) in SOURCES {
        s.push_str(&format!("// ---- {name} ----\n"));
        s.push_str(src);
        s.push('\n');
    }
    s
}

/// Identity of the kernels' code (FNV-1a of the sources), for `Capabilities::kernels`.
pub fn identity() -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in program().bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cuda-{h:016x}")
}

/// NVRTC options: exact IEEE arithmetic, no contraction of `a * b + c` (fused multiply-adds
/// only where the sources write `fmaf`), code for the device's architecture.
pub fn options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--fmad=false".into(),
        "--ftz=false".into(),
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--std=c++14".into(),
    ]
}

type Cache = Mutex<HashMap<String, Result<String, String>>>;

/// PTX of the program for `arch` (e.g. `compute_87`), compiled on first use and cached for
/// the life of the process.
pub fn ptx(arch: &str) -> Result<String, String> {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    map.entry(arch.to_string())
        .or_insert_with(|| {
            let opts = cudarc::nvrtc::CompileOptions {
                options: options(arch),
                name: Some("frugal_kernels.cu".into()),
                ..Default::default()
            };
            cudarc::nvrtc::compile_ptx_with_opts(program(), opts)
                .map(|p| p.to_src())
                .map_err(|e| format!("NVRTC could not compile the kernels for {arch}: {e:?}"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_point_is_defined_once() {
        let src = program();
        for f in FUNCTIONS {
            let decl = format!("extern \"C\" __global__ void {f}(");
            assert_eq!(src.matches(&decl).count(), 1, "{f}");
        }
        assert_eq!(src.matches("extern \"C\" __global__").count(), FUNCTIONS.len());
    }

    #[test]
    fn the_identity_is_stable() {
        assert_eq!(identity(), identity());
        assert!(identity().starts_with("cuda-"));
    }

    /// Real NVRTC, where its library is loadable (it needs no GPU: e.g. the
    /// nvidia-cuda-nvrtc-cu12 wheel's lib directory on LD_LIBRARY_PATH): the program compiles
    /// for old and new architectures and defines every entry point.
    #[test]
    fn nvrtc_compiles_the_kernels_where_it_is_present() {
        // SAFETY: only tries to open the library.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            let line = "SKIPPED: NVRTC (libnvrtc.so) not loadable: the kernels were not compiled\n";
            let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
            return;
        }
        for arch in ["compute_52", "compute_75", "compute_87", "compute_90"] {
            let ptx = ptx(arch).unwrap_or_else(|e| panic!("{e}"));
            // For a look with ptxas: FRUGAL_PTX_DIR=dir, then ptxas -arch=sm_87 dir/compute_87.ptx
            if let Ok(dir) = std::env::var("FRUGAL_PTX_DIR") {
                std::fs::write(std::path::Path::new(&dir).join(format!("{arch}.ptx")), &ptx)
                    .unwrap();
            }
            for f in FUNCTIONS {
                assert!(ptx.contains(&format!(".entry {f}(")), "{arch}: no entry point {f}");
            }
            // No contraction: the only fused multiply-adds are the written fmaf calls.
            assert!(ptx.contains("fma.rn.f32"), "{arch}");
            // The CUDA compiler's size of each parameter struct is the Rust mirror's.
            use crate::params::*;
            use std::mem::size_of;
            let sizes = [
                ("conv2d", size_of::<ConvParams>()),
                ("conv_transpose2d", size_of::<ConvTransposeParams>()),
                ("pool2d", size_of::<PoolParams>()),
                ("global_avg_pool", size_of::<GapParams>()),
                ("unary", size_of::<UnaryParams>()),
                ("affine", size_of::<AffineParams>()),
                ("binary", size_of::<BinaryParams>()),
                ("concat_piece", size_of::<ConcatParams>()),
                ("transpose", size_of::<TransposeParams>()),
                ("copy_flat", size_of::<CopyParams>()),
                ("scatter_rows", size_of::<RowsParams>()),
                ("gather_rows", size_of::<RowsParams>()),
                ("resize2d", size_of::<ResizeParams>()),
                ("gemm", size_of::<GemmParams>()),
                ("matmul", size_of::<MatMulParams>()),
                ("reduce", size_of::<ReduceParams>()),
                ("softmax", size_of::<SoftmaxParams>()),
            ];
            assert_eq!(sizes.len(), FUNCTIONS.len());
            for (f, n) in sizes {
                let decl = format!(".param .align 8 .b8 {f}_param_0[{n}]");
                assert!(ptx.contains(&decl), "{arch}: {f} does not take {n} bytes");
            }
        }
    }

    #[test]
    fn contraction_is_off() {
        assert!(options("compute_87").contains(&"--fmad=false".to_string()));
    }
}
