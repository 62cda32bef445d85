//! Dense stride-1 convolutions (3x3 and the like) on AVX-512 without im2col: the microkernel
//! reads each tap's sixteen input columns straight from the input's rows, wherever the ring
//! holds them, with masked loads that give +0.0 for padding columns and rows, the values
//! im2col writes. A band then needs no packed B (no scratch) and no packing pass, which took
//! a quarter of a 3x3 layer's time (`perf record` of `kernel_min "conv3 64@56"` on a 2-core
//! Xeon VM: `panels_avx2` 23% beside the microkernels' 67%).
//!
//! Each output element's chain is the matrix product's: `acc = fma(w[m][k], x_k, acc)` over
//! `k = (ci, ky, kx)` in order from zero, then bias and activation through the microkernels'
//! epilogue, so the bits are those of im2col and `gemm` (`direct_products_are_the_fma_chain`).
//!
//! A tile is up to 12 output channels (one panel of the packed weights) by two vectors of
//! sixteen output columns ("strips", each inside one output row: a row of 56 columns is
//! strips of 16, 16, 16 and 8), 24 accumulators as in the matrix product's 12 x 32 tile.

use std::arch::x86_64::*;

use frugal_core::backend::RowWindow;
use frugal_core::ops::{Activation, Conv};

use super::{Geo, Weights};
use crate::arena::Io;
use crate::gemm::{self, Isa, MatA};
use crate::par::{Par, SharedMut};
use crate::simd;

/// Output columns per vector.
const LANES: usize = 16;
/// Largest kernel side handled (row offsets per tap row, masks per tap).
const MAX_K: usize = 8;
/// Most output channels per tile (a panel of the packed weights).
const MR: usize = gemm::AP;
/// Bytes of weights one block of output channels may take: the block stays in L2 while every
/// pair of strips passes over it (as `gemm`'s row blocks; ResNet-50's 3x3 layers at 14 x 14
/// hold 2.4 MB of weights).
const A_BLOCK_BYTES: usize = 256 * 1024;
/// Steps of `k` ahead at which a tile asks for its weights (as `gemm`'s AVX-512 tiles).
const PREFETCH_STEPS: usize = 64;

/// Whether a convolution call takes this path: AVX-512, one group, stride and dilation 1, a
/// kernel other than 1x1 (pointwise convolutions read their rows in place through `gemm`),
/// and rows that fill at least three quarters of their vectors (a 7-column map would use
/// 7 of 16 lanes; im2col's panels run across rows and fill them).
pub(super) fn applies(op: &Conv, g: &Geo, isa: Isa) -> bool {
    isa == Isa::Avx2Fma
        && gemm::avx512()
        && op.groups == 1
        && op.strides == [1, 1]
        && op.dilations == [1, 1]
        && op.kernel != [1, 1]
        && op.kernel[0] <= MAX_K
        && op.kernel[1] <= MAX_K
        && g.wout > 0
        && 4 * g.wout >= 3 * g.wout.div_ceil(LANES) * LANES
}

/// Sixteen (or fewer) output columns `ox ..` of output row `oy`.
#[derive(Clone, Copy)]
struct Strip {
    oy: usize,
    ox: usize,
    cols: usize,
}

/// Strip `s` of the output rows from `r0`, `per` strips per row.
fn strip(s: usize, r0: usize, per: usize, wout: usize) -> Strip {
    let ox = (s % per) * LANES;
    Strip { oy: r0 + s / per, ox, cols: LANES.min(wout - ox) }
}

/// Where a strip's taps read: per tap row, the offset in an input plane of the element lane 0
/// reads at tap column 0 (`None`: a padding row, read from [`ZEROS`]); per tap column, the
/// lanes whose input lies inside the row.
#[derive(Clone, Copy)]
struct Taps {
    at: [Option<isize>; MAX_K],
    masks: [u16; MAX_K],
}

/// What a padding row reads: +0.0, as im2col writes (lane `l` of tap column `kx` reads
/// element `kx + l`).
static ZEROS: [f32; LANES + MAX_K] = [0.0; LANES + MAX_K];

impl Taps {
    fn new(op: &Conv, x: &RowWindow, g: &Geo, s: Strip) -> Taps {
        let [kh, kw] = op.kernel;
        let (pt, pl) = (op.pads[0] as isize, op.pads[1] as isize);
        // Lane l of tap column kx reads input column ox + l + kx - pl: inside the row for
        // pl - ox - kx <= l < w + pl - ox - kx, and only the strip's lanes count.
        let mut t = Taps { at: [None; MAX_K], masks: [0; MAX_K] };
        for (kx, m) in t.masks.iter_mut().enumerate().take(kw) {
            let shift = s.ox as isize + kx as isize - pl;
            let lo = (-shift).clamp(0, s.cols as isize) as u32;
            let hi = (g.w as isize - shift).clamp(0, s.cols as isize) as u32;
            *m = (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16;
        }
        for ky in 0..kh {
            let iy = (s.oy + ky) as isize - pt;
            if iy >= 0 && (iy as usize) < g.h {
                t.at[ky] = Some((x.slot(iy as usize) * x.row_stride) as isize + s.ox as isize - pl);
            }
        }
        t
    }
}

/// What a tile reads besides its weights: the input planes of the image, two strips' taps.
struct Tile<'t> {
    planes: *const f32,
    plane: usize,
    cg: usize,
    kh: usize,
    kw: usize,
    taps: [&'t Taps; 2],
}

/// Runs the convolution of output rows `y.first_row ..` (bias and `op.act` included) with the
/// threads split by strips (`columns`) or by output channels (`channels`); `None` picks
/// strips where there are at least two pairs per thread. The caller checked the rows, the
/// sizes and that [`applies`] holds.
#[allow(clippy::too_many_arguments)]
pub(super) fn conv(
    op: &Conv,
    x: &RowWindow,
    weight: Weights<'_>,
    bias: Option<&[f32]>,
    y: &RowWindow,
    io: Io<'_>,
    g: &Geo,
    par: Par<'_>,
    variant: Option<&str>,
) {
    let a = if weight.packed {
        MatA::panels(weight.data, g.m, g.k)
    } else {
        MatA::strided(weight.data, g.k, 1)
    };
    let per = g.wout.div_ceil(LANES);
    let pairs = (y.rows * per).div_ceil(2);
    let (plane, out_plane) = (x.capacity * x.row_stride, y.capacity * y.row_stride);
    let act = simd::in_registers(op.act);
    let post = simd::after_store(&op.act);
    // Tiles of output channels: the weights' panels when packed, else even tiles of <= 12.
    let tile_rows = |i: usize| match a.is_packed() {
        true => a.at(i).3.min(g.m) - i,
        false => (g.m - i).div_ceil((g.m - i).div_ceil(MR)),
    };
    let tiles = {
        let (mut i, mut n) = (0, 0);
        while i < g.m {
            i += tile_rows(i);
            n += 1;
        }
        n
    };
    let columns = match variant {
        Some(v) => v == "columns",
        None => pairs >= 2 * par.threads(),
    };
    let (units, total) =
        if columns { (par.split(pairs, 1), pairs) } else { (par.split(tiles, 1), tiles) };
    assert!(g.n * g.m * out_plane <= io.out.len(), "conv: output planes outside the region");
    let out = SharedMut::new(io.out);
    for b in 0..g.n {
        let planes = io.src.slice(x.row_start(b * g.cin, 0), g.cin * plane);
        // Task t: pairs or tiles `t * units ..`, all of the other.
        par.each(total.div_ceil(units), |t| {
            let out_b = out.ptr().wrapping_add(b * g.m * out_plane);
            let (lo, hi) = (t * units, ((t + 1) * units).min(total));
            let (pairs, tiles) = if columns { (lo..hi, 0..tiles) } else { (0..pairs, lo..hi) };
            // First output channel of tile `tiles.start` and the end of tile `tiles.end - 1`.
            let (mut c0, mut n) = (0, 0);
            while n < tiles.start {
                c0 += tile_rows(c0);
                n += 1;
            }
            let mut c1 = c0;
            while n < tiles.end {
                c1 += tile_rows(c1);
                n += 1;
            }
            // Blocks of output channels whose weights stay in L2 while the pairs pass.
            let block = (A_BLOCK_BYTES / (g.k.max(1) * 4)).max(1);
            let mut i0 = c0;
            while i0 < c1 {
                let mut i1 = i0;
                while i1 < c1 && (i1 == i0 || i1 - i0 + tile_rows(i1) <= block) {
                    i1 += tile_rows(i1);
                }
                for p in pairs.clone() {
                    let s0 = strip(2 * p, y.first_row, per, g.wout);
                    let s1 = (2 * p + 1 < y.rows * per)
                        .then(|| strip(2 * p + 1, y.first_row, per, g.wout));
                    let taps = [Taps::new(op, x, g, s0), Taps::new(op, x, g, s1.unwrap_or(s0))];
                    let tile = Tile {
                        planes: planes.as_ptr(),
                        plane,
                        cg: g.cg,
                        kh: op.kernel[0],
                        kw: op.kernel[1],
                        taps: [&taps[0], &taps[1]],
                    };
                    // Output offset and stored lanes of each strip.
                    let at = |s: Strip| {
                        (y.slot(s.oy) * y.row_stride + s.ox, ((1u32 << s.cols) - 1) as u16)
                    };
                    let ((o0, m0), (o1, m1)) = (at(s0), s1.map_or((0, 0), at));
                    let mut i = i0;
                    while i < i1 {
                        let rows = tile_rows(i);
                        let (w, rs, cs, _) = a.at(i);
                        let out = [o0, o1].map(|o| out_b.wrapping_add(i * out_plane + o));
                        let bias = bias.map(|b| &b[i..i + rows]);
                        // SAFETY: AVX-512 is available (`applies`). Every unmasked load is
                        // inside `planes`: channels < cg, ring slots < capacity, columns
                        // inside the row (`Taps::new`); the weights of rows i .. i + rows
                        // span k steps (`MatA::at`). The stores go to this task's own
                        // strips of its own channels, inside `io.out` (asserted above),
                        // which is borrowed mutably for the whole call.
                        unsafe {
                            run_tile(
                                rows,
                                w.as_ptr(),
                                rs,
                                cs,
                                a.is_packed(),
                                &tile,
                                bias,
                                act,
                                out,
                                out_plane,
                                [m0, m1],
                                s1.is_some(),
                            )
                        };
                        if let Some(post) = post {
                            for (o, s) in out.iter().zip([Some(s0), s1]) {
                                let Some(s) = s else { continue };
                                for r in 0..rows {
                                    // SAFETY: as above, this task's own elements.
                                    let run = unsafe {
                                        std::slice::from_raw_parts_mut(o.add(r * out_plane), s.cols)
                                    };
                                    post.apply_slice(run);
                                }
                            }
                        }
                        i += rows;
                    }
                }
                i0 = i1;
            }
        });
    }
}

/// `f::<rows, ...>(args)` for a tile of 1 to [`MR`] rows.
macro_rules! by_rows {
    ($rows:expr, $f:ident::<$($g:tt),*>($($arg:expr),*)) => {
        match $rows {
            1 => $f::<1, $($g),*>($($arg),*),
            2 => $f::<2, $($g),*>($($arg),*),
            3 => $f::<3, $($g),*>($($arg),*),
            4 => $f::<4, $($g),*>($($arg),*),
            5 => $f::<5, $($g),*>($($arg),*),
            6 => $f::<6, $($g),*>($($arg),*),
            7 => $f::<7, $($g),*>($($arg),*),
            8 => $f::<8, $($g),*>($($arg),*),
            9 => $f::<9, $($g),*>($($arg),*),
            10 => $f::<10, $($g),*>($($arg),*),
            11 => $f::<11, $($g),*>($($arg),*),
            _ => $f::<12, $($g),*>($($arg),*),
        }
    };
}

/// One tile of `rows` (<= 12) output channels by one strip or two (`pair`): weight `(r, k)`
/// at `w[r * rs + k * cs]` (`packed`: `rs` is 1), output row `r` of strip `v` at
/// `out[v] + r * ld`, the lanes of `stores[v]`. Packed weights and three tap columns (most
/// of them) take kernels with the loop over tap columns unrolled and its masks in registers.
///
/// # Safety
/// AVX-512 F and DQ, AVX2 and FMA must be available; the tile's reads and writes must be in
/// bounds as [`conv`] ensures.
#[allow(clippy::too_many_arguments)]
unsafe fn run_tile(
    rows: usize,
    w: *const f32,
    rs: usize,
    cs: usize,
    packed: bool,
    t: &Tile<'_>,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    out: [*mut f32; 2],
    ld: usize,
    stores: [u16; 2],
    pair: bool,
) {
    assert!((1..=MR).contains(&rows) && (!packed || rs == 1) && t.kw <= MAX_K);
    let a = TileWeights { w, rs, cs };
    // SAFETY (all): the function's contract.
    unsafe {
        match (packed, pair, t.kw == 3) {
            (true, true, true) => {
                by_rows!(rows, kernel::<true, 2, 3>(a, t, bias, act, out, ld, stores))
            }
            (true, false, true) => {
                by_rows!(rows, kernel::<true, 1, 3>(a, t, bias, act, out, ld, stores))
            }
            (true, true, false) => {
                by_rows!(rows, kernel::<true, 2, 0>(a, t, bias, act, out, ld, stores))
            }
            (true, false, false) => {
                by_rows!(rows, kernel::<true, 1, 0>(a, t, bias, act, out, ld, stores))
            }
            (false, true, _) => {
                by_rows!(rows, kernel::<false, 2, 0>(a, t, bias, act, out, ld, stores))
            }
            (false, false, _) => {
                by_rows!(rows, kernel::<false, 1, 0>(a, t, bias, act, out, ld, stores))
            }
        }
    }
}

/// A tile's weights: `(r, k)` at `w[r * rs + k * cs]`.
#[derive(Clone, Copy)]
struct TileWeights {
    w: *const f32,
    rs: usize,
    cs: usize,
}

/// [`run_tile`] for `R` rows and `V` strips (`KW`: the tap columns when 3, else 0 for
/// `t.kw`): the steps, then bias, activation and the masked stores.
///
/// # Safety
/// As [`run_tile`]'s.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
unsafe fn kernel<const R: usize, const PACKED: bool, const V: usize, const KW: usize>(
    a: TileWeights,
    t: &Tile<'_>,
    bias: Option<&[f32]>,
    act: Option<Activation>,
    out: [*mut f32; 2],
    ld: usize,
    stores: [u16; 2],
) {
    let mut acc = [[_mm512_setzero_ps(); R]; V];
    // SAFETY: the function's contract.
    unsafe { steps::<R, PACKED, V, KW>(&mut acc, a, t) };
    for (v, acc) in acc.iter().enumerate() {
        for (r, &acc) in acc.iter().enumerate() {
            let b = bias.map(|b| _mm512_set1_ps(b[r]));
            let y = gemm::finish16(acc, b, act);
            // SAFETY: the function's contract; masked lanes are not written.
            unsafe { _mm512_mask_storeu_ps(out[v].add(r * ld), stores[v], y) };
        }
    }
}

/// The `cg * kh * kw` steps of a tile into `acc`: a function of its own, never inlined, so
/// the accumulators stay in registers (as `gemm`'s `steps2`).
///
/// # Safety
/// As [`run_tile`]'s.
#[inline(never)]
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
#[allow(clippy::needless_range_loop)] // `r` indexes the weights and every strip's accumulators
unsafe fn steps<const R: usize, const PACKED: bool, const V: usize, const KW: usize>(
    acc: &mut [[__m512; R]; V],
    a: TileWeights,
    t: &Tile<'_>,
) {
    let mut c = *acc;
    let kw = if KW == 0 { t.kw } else { KW };
    let masks: [[u16; MAX_K]; V] = std::array::from_fn(|v| t.taps[v].masks);
    let (mut w, rs, cs) = (a.w, a.rs, a.cs);
    for ci in 0..t.cg {
        let pc = t.planes.wrapping_add(ci * t.plane);
        for ky in 0..t.kh {
            let p: [*const f32; V] = std::array::from_fn(|v| match t.taps[v].at[ky] {
                Some(at) => pc.wrapping_offset(at),
                None => ZEROS.as_ptr(),
            });
            for kx in 0..kw {
                // SAFETY: see the function's contract: masked loads read only their lanes
                // (kx < kw <= MAX_K), a prefetch never faults.
                unsafe {
                    _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(PREFETCH_STEPS * cs).cast());
                    let b: [__m512; V] = std::array::from_fn(|v| {
                        _mm512_maskz_loadu_ps(*masks[v].get_unchecked(kx), p[v].wrapping_add(kx))
                    });
                    for r in 0..R {
                        let av = _mm512_set1_ps(*w.add(if PACKED { r } else { r * rs }));
                        for v in 0..V {
                            c[v][r] = _mm512_fmadd_ps(av, b[v], c[v][r]);
                        }
                    }
                }
                w = w.wrapping_add(cs);
            }
        }
    }
    *acc = c;
}
