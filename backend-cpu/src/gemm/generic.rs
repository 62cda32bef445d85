//! Portable microkernel: `acc += a * b` in k order (unfused, so it vectorises on any target).

use super::{TileEpilogue, TileOut, NR};

/// Computes a `rows x NR` tile (rows <= MR) of `A * B_panel` into `out`, reading the first
/// `cols` columns of each panel row (the others count as zero: a last partial panel read in
/// place).
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
    cols: usize,
    epi: TileEpilogue<'_>,
    out: TileOut,
) {
    let cols = cols.min(NR);
    for r in 0..rows {
        let mut acc = [0.0f32; NR];
        let arow = if k == 0 { &[][..] } else { &a[r * rs..] };
        for kk in 0..k {
            let b = &panel[kk * bs..kk * bs + cols];
            let av = arow[kk * cs];
            for c in 0..cols {
                acc[c] += av * b[c];
            }
        }
        if let Some(bias) = epi.bias {
            acc.iter_mut().for_each(|v| *v += bias[r]);
        }
        if let Some(act) = epi.act {
            acc.iter_mut().for_each(|v| *v = act.apply(*v));
        }
        // SAFETY: the drivers build `out` over memory holding `rows` rows of NR floats.
        unsafe { std::ptr::copy_nonoverlapping(acc.as_ptr(), out.ptr.add(r * out.ld), NR) };
    }
}
