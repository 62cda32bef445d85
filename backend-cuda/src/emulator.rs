//! Feature `emulator`: the kernel sources built for the host by a C++ compiler, each launch run
//! as a loop over the thread indices of its grid. It checks, on machines without a GPU, the
//! kernels' logic and everything the backend does around them (windows, rings, parameter
//! packing, staging) through the same code path as a GPU; it does not check what only a GPU
//! can show (the CUDA compiler, the device's math library, concurrency, speed). Threads of a
//! launch never write what another thread of the same launch reads (inputs and outputs are
//! disjoint), so running them one after another is one of the orders a GPU may take.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use cudarc::driver::DeviceRepr;
use frugal_core::Result;

use crate::kernels;
use crate::params::{blocks, fail, BLOCK};

/// Lets the CUDA sources compile as C++: qualifiers vanish, the thread indices are
/// thread-local globals set by the launch loops, intrinsics map to the C library.
const SHIM: &str = r#"
#include <math.h>
#include <string.h>
struct frugal_uint3 { unsigned x, y, z; };
static thread_local frugal_uint3 blockIdx, threadIdx;
static const frugal_uint3 blockDim = {FRUGAL_BLOCK, 1, 1};
#define __global__
#define __device__
#define __forceinline__ inline
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
"#;

/// The C++ program: shim, kernel sources, and per kernel a loop `emu_NAME(params, threads)`.
pub(crate) fn program() -> String {
    let mut s = SHIM.replace("FRUGAL_BLOCK", &BLOCK.to_string());
    s.push_str(&kernels::program());
    for line in kernels::program().lines() {
        let Some(rest) = line.strip_prefix("extern \"C\" __global__ void ") else { continue };
        let (name, args) = rest.split_once('(').expect("kernel declaration");
        let ty = args.split_whitespace().next().expect("parameter type");
        s.push_str(&format!(
            "extern \"C\" void emu_{name}({ty} p, long long threads) {{\n\
             \tfor (long long i = 0; i < threads; ++i) {{\n\
             \t\tblockIdx.x = (unsigned)(i / {BLOCK}); threadIdx.x = (unsigned)(i % {BLOCK});\n\
             \t\t{name}(p);\n\
             \t}}\n}}\n"
        ));
    }
    s
}

/// Builds the shared library once per process; its path, or why it could not be built.
fn library() -> std::result::Result<PathBuf, String> {
    static LIB: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!(
            "frugal-cuda-emu-{}-{}",
            std::process::id(),
            kernels::identity()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let src = dir.join("kernels.cpp");
        let lib = dir.join("libfrugal_cuda_emu.so");
        std::fs::write(&src, program()).map_err(|e| format!("{}: {e}", src.display()))?;
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let out = Command::new(&cxx)
            .args(["-std=c++14", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-o"])
            .arg(&lib)
            .arg(&src)
            .output()
            .map_err(|e| format!("cannot run the C++ compiler '{cxx}': {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "the kernels do not compile as C++:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(lib)
    })
    .clone()
}

/// The host build of the kernels.
pub(crate) struct Emu {
    lib: libloading::Library,
}

impl Emu {
    pub(crate) fn new() -> Result<Emu> {
        let path = library().map_err(|e| fail("emulator", e))?;
        // SAFETY: a library we just built from our own sources; it has no initialisers.
        let lib = unsafe { libloading::Library::new(&path) }
            .map_err(|e| fail("emulator", format!("{}: {e}", path.display())))?;
        Ok(Emu { lib })
    }

    /// Runs every thread of the grid covering `n` threads, one after another.
    pub(crate) fn launch<P: DeviceRepr>(&self, name: &str, n: u64, p: &P) -> Result<()> {
        let grid = blocks(n).ok_or_else(|| fail(name, "bad launch size"))?;
        let symbol = format!("emu_{name}");
        // SAFETY: emu_NAME takes the kernel's parameter struct by value, which P mirrors
        // (#[repr(C)], checked against the sources by tests), and a thread count.
        unsafe {
            let f: libloading::Symbol<'_, unsafe extern "C" fn(P, i64)> = self
                .lib
                .get(symbol.as_bytes())
                .map_err(|e| fail(name, format!("emulator: {e}")))?;
            f(std::ptr::read(p), grid as i64 * BLOCK as i64);
        }
        Ok(())
    }
}
