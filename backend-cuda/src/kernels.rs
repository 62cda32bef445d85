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

    #[test]
    fn contraction_is_off() {
        assert!(options("compute_87").contains(&"--fmad=false".to_string()));
    }
}
