//! AVX2 + FMA microkernel: 6 rows x 16 columns in twelve 8-lane accumulators,
//! `acc = fma(a[k], b[k], acc)` in k order.

use std::arch::x86_64::*;

use super::{TileEpilogue, TileOut, NR};
use crate::simd::act8;

/// Computes a `rows x NR` tile (rows <= MR) of `A * B_panel` into `out`.
///
/// # Safety
/// `out` must point at memory holding `rows` rows of `NR` floats, `out.ld` apart.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile(
    rows: usize,
    k: usize,
    a: &[f32],
    rs: usize,
    cs: usize,
    panel: &[f32],
    bs: usize,
    epi: TileEpilogue,
    out: TileOut,
) {
    // Bounds the kernel relies on, checked once per tile.
    assert!(bs >= NR && (k == 0 || (k - 1) * bs + NR <= panel.len()));
    assert!(k == 0 || rows == 0 || (rows - 1) * rs + (k - 1) * cs < a.len());
    // SAFETY: `Isa::Avx2Fma` is only selected after run-time detection of AVX2 and FMA, the
    // asserts above keep every pointer read in bounds, and the drivers build `out` over memory
    // holding `rows` rows of NR floats.
    unsafe {
        match rows {
            1 => tile_n::<1>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
            2 => tile_n::<2>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
            3 => tile_n::<3>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
            4 => tile_n::<4>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
            5 => tile_n::<5>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
            _ => tile_n::<6>(k, a.as_ptr(), rs, cs, panel.as_ptr(), bs, epi, out),
        }
    }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile_n<const R: usize>(
    k: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    bs: usize,
    epi: TileEpilogue,
    out: TileOut,
) {
    let mut lo = [_mm256_setzero_ps(); R];
    let mut hi = [_mm256_setzero_ps(); R];
    for kk in 0..k {
        // SAFETY: the caller checked `b` holds NR floats at every kk * bs and `a` every
        // (r, kk) element.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(kk * bs));
            let b1 = _mm256_loadu_ps(b.add(kk * bs + 8));
            for r in 0..R {
                let av = _mm256_set1_ps(*a.add(r * rs + kk * cs));
                lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
            }
        }
    }
    if let Some(bias) = epi.bias {
        for r in 0..R {
            let bv = _mm256_set1_ps(bias[r]);
            lo[r] = _mm256_add_ps(lo[r], bv);
            hi[r] = _mm256_add_ps(hi[r], bv);
        }
    }
    if let Some(act) = epi.act {
        for r in 0..R {
            // SAFETY: AVX is available (`tile_n` is only called with it).
            unsafe {
                lo[r] = act8(act, lo[r]);
                hi[r] = act8(act, hi[r]);
            }
        }
    }
    for r in 0..R {
        // SAFETY: each output row holds NR = 16 floats (see `tile`).
        unsafe {
            let dst = out.ptr.add(r * out.ld);
            _mm256_storeu_ps(dst, lo[r]);
            _mm256_storeu_ps(dst.add(8), hi[r]);
        }
    }
}
