//! A small matrix-product engine with a fixed per-element order of operations.
//!
//! `C[m][j] = sum_k A[m][k] * B[k][j]`, computed as `acc = fma(A[m][k], B[k][j], acc)` for
//! `k = 0, 1, ..., K-1` starting from zero, whatever `M` and `N` are and wherever the element
//! falls in the tiling. General-purpose BLAS libraries switch algorithms and K blocking with the
//! matrix shape (and allocate packing buffers per call); frugal cannot use that, because a part
//! of a layer must produce exactly the bits of the whole layer. A is read in place (any row and
//! column stride); B is packed in panels of [`NR`] columns by the caller (im2col writes this
//! layout directly) into memory it owns, so the engine allocates nothing.

use frugal_core::ops::Activation;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod generic;

/// Columns per packed B panel (and per microkernel tile).
pub const NR: usize = 16;
/// Rows per microkernel tile.
pub const MR: usize = 6;
/// Panels of at most this many columns take the narrow AVX2 microkernel...
const NARROW: usize = 8;
/// ...which computes this many rows per tile.
const MR_NARROW: usize = 12;

/// Instruction sets the CPU kernels are compiled for, picked at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// Portable Rust (SSE2 on x86-64, NEON on aarch64 through auto-vectorisation).
    Generic,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
}

impl Isa {
    /// The best instruction set this processor supports.
    pub fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Isa::Avx2Fma;
            }
        }
        Isa::Generic
    }

    /// Name for reports (`+avx512` where whole panels of the matrix products use it).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2Fma if avx512() => "avx2+fma+avx512",
            Isa::Avx2Fma => "avx2+fma",
        }
    }
}

// The AVX-512 tiles go through the same stack tile as the narrow ones.
#[cfg(target_arch = "x86_64")]
const _: () = assert!(avx512::MR == MR_NARROW);

/// `act(acc + bias)` on sixteen lanes, the activation through the AVX2 code on each half: the
/// microkernels' epilogue, for other kernels that must give their bits (a `target_feature`
/// function: AVX-512 F and DQ, AVX2 and FMA must be available).
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::finish_v as finish16;

/// Whether whole panels of `Isa::Avx2Fma` products take the AVX-512 microkernel (same bits);
/// other kernels with an AVX-512 form ask the same (`FRUGAL_NO_AVX512` turns them all off).
pub(crate) fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Floats a packed B of `k` rows and `n` columns occupies.
pub fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(NR) * NR * k
}

/// Index of element `(k, j)` in a packed B of depth `depth`.
#[inline(always)]
pub fn packed_index(depth: usize, k: usize, j: usize) -> usize {
    (j / NR) * NR * depth + k * NR + j % NR
}

/// Packs `B[k][j] = src[k * rs + j * cs]` (`k < depth`, `j < n`) into panels, zero padding.
pub fn pack_b(src: &[f32], rs: usize, cs: usize, depth: usize, n: usize, dst: &mut [f32]) {
    for p in 0..n.div_ceil(NR) {
        let panel = &mut dst[p * NR * depth..(p + 1) * NR * depth];
        let cols = NR.min(n - p * NR);
        for k in 0..depth {
            let row = &mut panel[k * NR..(k + 1) * NR];
            for (c, v) in row.iter_mut().enumerate() {
                *v = if c < cols { src[k * rs + (p * NR + c) * cs] } else { 0.0 };
            }
        }
    }
}

/// [`Epilogue`] for one tile of at most [`MR`] rows: `bias` holds the tile's rows' values.
#[derive(Clone, Copy, Debug)]
struct TileEpilogue<'a> {
    bias: Option<&'a [f32]>,
    act: Option<Activation>,
}

/// The A operand: strided (element `(i, k)` at `data[i * rs + k * cs]`, read in place) or
/// packed by [`pack_a`] in panels of at most [`AP`] rows.
#[derive(Clone, Copy, Debug)]
pub struct MatA<'a> {
    data: &'a [f32],
    layout: ALayout,
}

#[derive(Clone, Copy, Debug)]
enum ALayout {
    Strided {
        rs: usize,
        cs: usize,
    },
    /// [`pack_a`]'s layout of an `m x k` matrix, viewed from row `row0` on.
    Panels {
        m: usize,
        k: usize,
        row0: usize,
    },
}

/// Panels of A per column-kernel tile (one 16-lane vector each).
const COLUMN_PARTS: usize = 3;
/// Most rows of any tile (the column kernel's).
const TILE_ROWS: usize = COLUMN_PARTS * AP;

/// Most rows per panel of a packed A: one 12-row microkernel tile.
pub const AP: usize = MR_NARROW;

/// The panel of a packed `m`-row A holding row `i`: `(start, rows)`. `ceil(m / AP)` panels,
/// as even as they go (16 rows: 8 + 8, not 12 + 4: a short tile has too few accumulators to
/// hide the multiply-add latency).
#[inline]
fn panel_of(m: usize, i: usize) -> (usize, usize) {
    let count = m.div_ceil(AP);
    let (base, extra) = (m / count, m % count);
    let big = extra * (base + 1);
    if i < big {
        (i - i % (base + 1), base + 1)
    } else {
        (i - (i - big) % base, base)
    }
}

impl<'a> MatA<'a> {
    /// Element `(i, k)` at `data[i * rs + k * cs]`.
    pub fn strided(data: &'a [f32], rs: usize, cs: usize) -> MatA<'a> {
        MatA { data, layout: ALayout::Strided { rs, cs } }
    }

    /// An `m x k` matrix packed by [`pack_a`].
    pub fn panels(data: &'a [f32], m: usize, k: usize) -> MatA<'a> {
        assert!(data.len() >= m * k, "packed A too small");
        MatA { data, layout: ALayout::Panels { m, k, row0: 0 } }
    }

    /// The same matrix from row `i0` on.
    pub fn rows_from(self, i0: usize) -> MatA<'a> {
        match self.layout {
            ALayout::Strided { rs, .. } => MatA { data: &self.data[i0 * rs..], ..self },
            ALayout::Panels { m, k, row0 } => {
                assert!(row0 + i0 <= m, "rows past the packed A");
                MatA { layout: ALayout::Panels { m, k, row0: row0 + i0 }, ..self }
            }
        }
    }

    /// Row `i` on: `(a, rs, cs, end)`, element `(i + r, kk)` at `a[r * rs + kk * cs]` for
    /// rows `i + r < end` (the end of `i`'s panel; unbounded when strided).
    #[inline]
    pub(crate) fn at(&self, i: usize) -> (&'a [f32], usize, usize, usize) {
        match self.layout {
            ALayout::Strided { rs, cs } => (&self.data[i * rs..], rs, cs, usize::MAX),
            ALayout::Panels { m, k, row0 } => {
                let abs = row0 + i;
                let (start, width) = panel_of(m, abs);
                // (Depth 0: nothing is read, the data may be empty.)
                let a = self.data.get(start * k + abs - start..).unwrap_or(&[]);
                (a, 1, width, start + width - row0)
            }
        }
    }

    /// Panics unless rows `..m` at depth `k` are inside the data.
    fn check(&self, m: usize, k: usize) {
        if m == 0 || k == 0 {
            return;
        }
        match self.layout {
            ALayout::Strided { rs, cs } => {
                assert!((m - 1) * rs + (k - 1) * cs < self.data.len(), "A too small")
            }
            ALayout::Panels { m: total, k: depth, row0 } => {
                assert!(row0 + m <= total && k == depth, "A is packed for other shapes")
            }
        }
    }

    /// Rows in place, `rs` apart at unit column stride (the single-column kernel's reads).
    fn row_major(&self) -> Option<usize> {
        match self.layout {
            ALayout::Strided { rs, cs: 1 } => Some(rs),
            _ => None,
        }
    }

    pub(crate) fn is_packed(&self) -> bool {
        matches!(self.layout, ALayout::Panels { .. })
    }
}

/// Whether products on `isa` run faster with A packed by [`pack_a`]: with the AVX-512 tiles
/// (which prefetch the panels) and the column kernel. The AVX2 and portable tiles read A's
/// rows in place as fast or faster (`FRUGAL_NO_AVX512=1 cargo run --release -p frugal-cpu
/// --example gemm_rate -- 2048 49 512 [strided]`: 1154 us packed, 1062 strided; one column,
/// `1280 1 320`: 71 against 57 us, where rows in place take eight rows per vector).
pub fn packs_a(isa: Isa) -> bool {
    isa == Isa::Avx2Fma && avx512()
}

/// Packs a row-major `m x k` matrix into panels of at most [`AP`] rows, each column-major:
/// element `(i, kk)` of the panel of rows `start .. start + width` at
/// `start * k + kk * width + i - start`. The same `m * k` floats, no padding; a microkernel
/// tile reads its rows as one contiguous run per step of `k`.
pub fn pack_a(src: &[f32], m: usize, k: usize, dst: &mut [f32]) {
    assert!(src.len() >= m * k && dst.len() >= m * k);
    let mut start = 0;
    while start < m {
        let (_, width) = panel_of(m, start);
        let panel = &mut dst[start * k..(start + width) * k];
        for (kk, col) in panel.chunks_exact_mut(width).enumerate() {
            for (r, v) in col.iter_mut().enumerate() {
                *v = src[(start + r) * k + kk];
            }
        }
        start += width;
    }
}

/// What the microkernel applies to a finished tile, in registers: `act(acc + bias[i])`, each
/// step optional. The same operations in the same order as the scalar bias-then-
/// [`Activation::apply`] path, so the bits do not change.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per row of C.
    pub bias: Option<&'a [f32]>,
    /// A piecewise-linear activation ([`Activation::is_piecewise_linear`]).
    pub act: Option<Activation>,
    /// A matrix added to each stored tile while it is still in L1, then an activation (of
    /// any kind): `C = then(C + R)`, in that order, element by element. `act` must be `None`.
    pub residual: Option<Residual<'a>>,
}

/// `R[i][j] = data[i * ld + j]`, added to C after the product and its bias.
#[derive(Clone, Copy, Debug)]
pub struct Residual<'a> {
    /// Backing memory, from `R[0][0]`.
    pub data: &'a [f32],
    /// Distance between rows.
    pub ld: usize,
    /// Applied to each element after the add ([`Activation::apply_slice`]).
    pub then: Option<&'a Activation>,
}

impl Residual<'_> {
    /// Adds rows `i .. i + rows`, columns `j .. j + cols` of R to C (at `c`, `ldc` apart) and
    /// applies `then`.
    ///
    /// # Safety
    /// Those elements of C must be valid for reads and writes, and no other reference may
    /// touch them during the call.
    unsafe fn apply(&self, c: *mut f32, ldc: usize, i: usize, j: usize, rows: usize, cols: usize) {
        for r in i..i + rows {
            let res = &self.data[r * self.ld + j..r * self.ld + j + cols];
            // SAFETY: the caller's contract.
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(r * ldc + j), cols) };
            for (o, &v) in out.iter_mut().zip(res) {
                *o += v;
            }
            if let Some(act) = self.then {
                act.apply_slice(out);
            }
        }
    }
}

/// Computes `C = A * B` for `m x n` with depth `k`, applies `epi`, and hands each tile row to
/// `store(i, j, values)`, where `values` holds `C[i][j..j + values.len()]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b_packed: &[f32],
    epi: Epilogue<'_>,
    mut store: impl FnMut(usize, usize, &[f32]),
) {
    assert!(epi.residual.is_none(), "residual products store through `gemm_into`");
    let mut tile = [[0.0f32; 2 * NR]; TILE_ROWS];
    tiles(isa, m, n, k, a, BSrc::Packed(b_packed), epi, |i, j, rows, cols, _, kernel| {
        kernel(tile.as_mut_ptr().cast(), 2 * NR);
        for (r, vals) in tile.iter().take(rows).enumerate() {
            store(i + r, j, &vals[..cols]);
        }
    });
}

/// Computes `C = A * B` for `m x n` with depth `k`, applies `epi`, and writes `C[i][j]` to
/// `c[i * ldc + j]`: full tiles go from the microkernel's registers straight to `c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b_packed: &[f32],
    epi: Epilogue<'_>,
    c: &mut [f32],
    ldc: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(ldc >= n && (m - 1) * ldc + n <= c.len(), "C too small");
    // SAFETY: `c` holds every element written (asserted above) and is borrowed mutably.
    unsafe { gemm_into_raw(isa, m, n, k, a, b_packed, epi, c.as_mut_ptr(), ldc) }
}

/// [`gemm_into`] through a raw pointer, for threads writing disjoint columns of the same rows.
///
/// # Safety
/// `c.add(i * ldc + j)` for `i < m`, `j < n` must be valid for writes, and no other reference
/// may touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_into_raw(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b_packed: &[f32],
    epi: Epilogue<'_>,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: as this function's.
    unsafe { into_raw(isa, m, n, k, a, BSrc::Packed(b_packed), epi, c, ldc) }
}

/// The product into `c` with `ldc` between rows: whole tiles from the microkernel's registers
/// straight to `c`, partial ones (last rows or columns) through a tile on the stack.
///
/// # Safety
/// As [`gemm_into_raw`].
#[allow(clippy::too_many_arguments)]
unsafe fn into_raw(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b: BSrc<'_>,
    epi: Epilogue<'_>,
    c: *mut f32,
    ldc: usize,
) {
    assert!(ldc >= n, "C rows overlap");
    if let Some(r) = epi.residual {
        assert!(epi.act.is_none(), "the activation of a residual product comes after the add");
        assert!(
            m == 0 || n == 0 || (r.ld >= n && (m - 1) * r.ld + n <= r.data.len()),
            "R too small"
        );
    }
    // Only tiles with columns past C's come here, at most 12 rows (the column kernel's,
    // up to 36 rows, store exactly C's columns), so the buffer zeroed per call stays small.
    let mut tile = [[0.0f32; 2 * NR]; MR_NARROW];
    tiles(isa, m, n, k, a, b, epi, |i, j, rows, cols, width, kernel| {
        // SAFETY (all three): rows i .. i + rows, columns j .. j + cols are in C (caller).
        if cols == width {
            kernel(unsafe { c.add(i * ldc + j) }, ldc);
        } else {
            assert!(rows <= MR_NARROW, "a partial tile of {rows} rows");
            kernel(tile.as_mut_ptr().cast(), 2 * NR);
            for (r, vals) in tile.iter().take(rows).enumerate() {
                unsafe {
                    std::ptr::copy_nonoverlapping(vals.as_ptr(), c.add((i + r) * ldc + j), cols)
                };
            }
        }
        if let Some(r) = epi.residual {
            unsafe { r.apply(c, ldc, i, j, rows, cols) };
        }
    });
}

/// Where the microkernels read B.
#[derive(Clone, Copy)]
enum BSrc<'a> {
    /// Packed in panels of [`NR`] columns ([`packed_index`]).
    Packed(&'a [f32]),
    /// In place: `B[k][j] = data[k * ld + j]`; a last partial panel is read masked.
    Rows { data: &'a [f32], ld: usize },
}

/// [`gemm_into_raw`] with B read in place, `B[k][j] = b[k * ldb + j]` (rows of a feature map:
/// a pointwise convolution needs no im2col). The microkernels are the packed path's, so the
/// bits are too; a last partial panel is loaded masked (never past column `n`) and stored
/// through a tile on the stack.
///
/// # Safety
/// As [`gemm_into_raw`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_rows_into_raw(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b: &[f32],
    ldb: usize,
    epi: Epilogue<'_>,
    c: *mut f32,
    ldc: usize,
) {
    // SAFETY: as this function's.
    unsafe { into_raw(isa, m, n, k, a, BSrc::Rows { data: b, ld: ldb }, epi, c, ldc) }
}

/// Walks the `MR x NR` tiles of C (in blocks of rows of A, panel by panel inside a block, rows
/// inside a panel; `MR_NARROW x NARROW` in a panel of at most NARROW columns with AVX2,
/// `MR_NARROW x 2 NR` over two panels with AVX-512) and hands each to
/// `visit(i, j, rows, cols, width, kernel)`, where `kernel(dst, ld)` computes the tile and
/// stores its `rows x width` values at `dst + r * ld + c`, of which `cols` are C's.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tiles(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: MatA<'_>,
    b: BSrc<'_>,
    epi: Epilogue<'_>,
    mut visit: impl FnMut(usize, usize, usize, usize, usize, &mut dyn FnMut(*mut f32, usize)),
) {
    match b {
        BSrc::Packed(p) => assert!(p.len() >= packed_len(k, n), "packed B too small"),
        BSrc::Rows { data, ld } => {
            assert!(k == 0 || n == 0 || (k - 1) * ld + n <= data.len(), "B too small");
        }
    }
    a.check(m, k);
    if let Some(b) = epi.bias {
        assert!(b.len() >= m, "bias shorter than the rows of C");
    }
    assert!(epi.act.is_none_or(|a| a.is_piecewise_linear()), "activation not for registers");
    // Twelve rows of A 4 KB apart (depth 1024, 2048) fall in one set of the 8-way L1 cache
    // and evict each other at every step: narrow panels take 6-row tiles then (`cargo run
    // --release --example kernel_min "pw 2048"`, by parts, where every panel is narrow: 2995
    // -> 1590 us; 2 KB apart, two sets, 12-row tiles stay faster).
    let aliased = a.row_major().is_some_and(|rs| (rs * 4).is_multiple_of(4096));
    if k <= SHALLOW && n > 2 * NR {
        // A shallow product writes far more than it reads: one tile of rows at a time across
        // a block of columns, so C is written as a few sequential runs. Panel by panel, every
        // row of C was a store stream of its own (96 rows of MobileNetV2's first expansion,
        // 4.8 MB at 112 x 112: 1.08 -> 0.51 ms on one thread, `cargo run --release -p
        // frugal-cpu --example gemm_rate -- 96 12544 16`).
        let step = (B_BLOCK_BYTES / (k.max(1) * 4) / (2 * NR)).max(1) * 2 * NR;
        for j0 in (0..n).step_by(step) {
            let cols = j0..(j0 + step).min(n);
            let mut i = 0;
            while i < m {
                // Tiles of rows never cross a panel of a packed A.
                let end = a.at(i).3.min(m);
                let rows = (end - i).div_ceil((end - i).div_ceil(MR_NARROW));
                panels(isa, i..i + rows, cols.clone(), k, a, b, epi, aliased, false, &mut visit);
                i += rows;
            }
        }
        return;
    }
    let block = row_block(m, k);
    let mut i0 = 0;
    while i0 < m {
        // A packed A's blocks end where a panel does.
        let end = (i0 + block).min(m);
        let end = if a.is_packed() { a.at(end - 1).3.min(m) } else { end };
        panels(isa, i0..end, 0..n, k, a, b, epi, aliased, true, &mut visit);
        i0 = end;
    }
}

/// Depth up to which a product counts as shallow (its B pair of panels is at most 16 KB).
const SHALLOW: usize = 128;

/// Bytes of B a block of columns of a shallow product may take (re-read from L2 per tile of
/// rows).
const B_BLOCK_BYTES: usize = 128 * 1024;

/// Bytes of A one row block may take: it is read from memory once and then stays in L2 while
/// every panel of B passes over it (half of a 512 KB L2, the smallest of the machines this
/// runs on, so the B panel in use fits beside it).
const A_BLOCK_BYTES: usize = 256 * 1024;

/// Rows of A per block: all of them when A fits in [`A_BLOCK_BYTES`], else the most that do,
/// in whole tiles of every height (6, 8, 12) and at least 24 (a packed A's blocks end at
/// its panels' ends instead). Without blocks, a weight matrix
/// larger than L2 (ResNet-50's last stage: 2-9 MB) came from memory once per panel of 16
/// columns.
fn row_block(m: usize, k: usize) -> usize {
    if m * k * 4 <= A_BLOCK_BYTES {
        return m;
    }
    (A_BLOCK_BYTES / (k.max(1) * 4) / 24 * 24).max(24)
}

/// [`tiles`] over rows `rows` and columns `cols` (from a panel's start) of C: panel by panel,
/// rows inside a panel. With `prefetch`, the first tile of a pair of panels of B read in place
/// asks for the next pair's rows in L2: they are `ld` apart (a pointwise convolution's input
/// planes, 256 of them 12.5 KB apart in ResNet-50's 56x56 stage), more streams than the
/// hardware prefetchers follow, so the next pair's first tile otherwise waits on each row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn panels(
    isa: Isa,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    k: usize,
    a: MatA<'_>,
    b: BSrc<'_>,
    epi: Epilogue<'_>,
    aliased: bool,
    prefetch: bool,
    visit: &mut impl FnMut(usize, usize, usize, usize, usize, &mut dyn FnMut(*mut f32, usize)),
) {
    let (row0, m, n) = (rows.start, rows.end, cols.end);
    let mut count = n.div_ceil(NR);
    let mut p = cols.start / NR;
    // A last panel of at most NARROW columns that pairs would leave alone, A packed,
    // AVX-512: its tiles ride along with the previous pair's (the column kernel over that
    // tile's rows, right after it, A's rows still in L1), instead of a pass of their own that
    // streams all of A again for a few columns. After an unpaired panel it is that panel's
    // pair instead (masked: one pass, 24 accumulators; riding after a single panel measured
    // slower, `gemm_rate 512 21 4608`: 1002-1022 us against 939-967 as a pair).
    let rider = (cfg!(target_arch = "x86_64")
        && isa == Isa::Avx2Fma
        && a.is_packed()
        && avx512()
        && count >= p + 3
        && (count - 1 - p).is_multiple_of(2)
        && n - (count - 1) * NR <= NARROW)
        .then(|| {
            count -= 1;
            count
        });
    #[cfg(not(target_arch = "x86_64"))]
    let _ = rider;
    while p < count {
        let j = p * NR;
        let cols = NR.min(n - j);
        // Columns the microkernel loads: packed panels are zero padded, rows in place are not.
        let panel_at = |p: usize| match b {
            BSrc::Packed(b) => (&b[p * NR * k..(p + 1) * NR * k], NR, NR),
            BSrc::Rows { data, ld } => (data.get(p * NR..).unwrap_or(&[]), ld, NR.min(n - p * NR)),
        };
        let (panel, bs, loads) = panel_at(p);
        // A panel of at most NARROW columns: 12 rows x 8 columns per tile with AVX2 (no half
        // empty vectors); the tile's stored width is then NARROW, of which `cols` are C's.
        let narrow = cfg!(target_arch = "x86_64") && isa == Isa::Avx2Fma && cols <= NARROW;
        // One column, A's rows in place: eight rows per vector (`avx2::column8`).
        let column = narrow && cols == 1 && a.row_major().is_some();
        // A packed A on AVX-512: output channels in the vectors, a tile of up to three panels
        // of A (one vector each, 36 rows) by up to 8 columns, each column's value broadcast
        // (`avx512::columns`): 12 of 16 lanes useful where the narrow kernel used `cols` of 8.
        let transposed = narrow && a.is_packed() && avx512();
        // Wider panels on AVX-512: 12 rows x 16 columns, one vector per row (6 rows where A's
        // rows alias in L1, as above)...
        let z = !narrow && isa == Isa::Avx2Fma && avx512();
        // ...and a whole panel with the next one as one 12 x 32 tile: two vectors per row,
        // 24 accumulators, one broadcast of A per two multiply-adds instead of one.
        let pair = z && cols == NR && p + 1 < count;
        let (second, cols, width) = if pair {
            (Some(panel_at(p + 1)), NR + NR.min(n - j - NR), 2 * NR)
        } else if transposed {
            (None, cols, cols)
        } else {
            (None, cols, if narrow { NARROW } else { NR })
        };
        let mr = if column {
            8
        } else if (narrow || z) && !aliased {
            MR_NARROW
        } else {
            MR
        };
        let mut i = rows.start;
        while i < m {
            let (a_tile, rs, cs, end) = a.at(i);
            let end = end.min(m);
            // The column kernel takes up to three panels of A (one per vector), the others
            // tiles of even height inside a panel (16 rows: 8 + 8, not 12 + 4: a short tile
            // has too few accumulators to hide the multiply-add latency); eight-row vectors
            // of one column take whole tiles of eight.
            let mut parts = [(a_tile, cs, 0); COLUMN_PARTS];
            let mut nparts = 1;
            let rows = if transposed {
                parts[0].2 = end - i;
                let mut rows = end - i;
                while nparts < COLUMN_PARTS && i + rows < m {
                    let (a, _, cs, end) = a.at(i + rows);
                    parts[nparts] = (a, cs, end.min(m) - i - rows);
                    rows += parts[nparts].2;
                    nparts += 1;
                }
                rows
            } else if column {
                mr.min(end - i)
            } else {
                (end - i).div_ceil((end - i).div_ceil(mr))
            };
            // The bias read in place (a copy per tile cost a store-forwarding stall).
            let ep = TileEpilogue { bias: epi.bias.map(|b| &b[i..i + rows]), act: epi.act };
            let mut kernel = |dst: *mut f32, ld: usize| {
                let out = TileOut { ptr: dst, ld };
                // SAFETY: `visit` passes memory holding the tile (see `gemm` and `gemm_into`).
                unsafe {
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma if transposed => {
                            avx512::columns(&parts[..nparts], k, panel, bs, cols, ep, out)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma if column && rows == 8 => {
                            avx2::column8(k, a_tile, rs, panel, bs, ep, out)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma if pair => {
                            let (panel2, _, loads2) = second.expect("a pair has two panels");
                            let next = match b {
                                BSrc::Rows { data, .. }
                                    if prefetch && i == row0 && p + 2 < count =>
                                {
                                    data.as_ptr().wrapping_add((p + 2) * NR)
                                }
                                _ => std::ptr::null(),
                            };
                            avx512::tile2(
                                rows, k, a_tile, rs, cs, panel, panel2, bs, loads2, next, ep, out,
                            )
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma if z => {
                            avx512::tile(rows, k, a_tile, rs, cs, panel, bs, loads, ep, out)
                        }
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2Fma => {
                            avx2::tile(rows, k, a_tile, rs, cs, panel, bs, loads, narrow, ep, out)
                        }
                        _ => generic::tile(rows, k, a_tile, rs, cs, panel, bs, loads, ep, out),
                    }
                }
            };
            visit(i, j, rows, cols, width, &mut kernel);
            #[cfg(target_arch = "x86_64")]
            if let Some(last) = rider.filter(|&last| p + usize::from(pair) + 1 == last) {
                let (panel, bs, _) = panel_at(last);
                let cols = n - last * NR;
                let parts = [(a_tile, cs, rows)];
                let mut kernel = |dst: *mut f32, ld: usize| {
                    let out = TileOut { ptr: dst, ld };
                    // SAFETY: AVX-512 is available (`rider`); `visit` passes memory holding
                    // the tile.
                    unsafe { avx512::columns(&parts, k, panel, bs, cols, ep, out) }
                };
                visit(i, last * NR, rows, cols, cols, &mut kernel);
            }
            i += rows;
        }
        p += if pair { 2 } else { 1 };
    }
}

/// What an x86 microkernel reads: `a[r * rs + kk * cs]`, and `cols` floats of B at
/// `b + kk * bs`, for `kk < k`.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Geometry {
    k: usize,
    a: *const f32,
    rs: usize,
    cs: usize,
    b: *const f32,
    bs: usize,
    cols: usize,
}

#[cfg(target_arch = "x86_64")]
impl Geometry {
    /// The reads of a tile of `rows` rows, checked once here: the kernels then read through
    /// raw pointers.
    #[allow(clippy::too_many_arguments)]
    fn checked(
        rows: usize,
        k: usize,
        a: &[f32],
        rs: usize,
        cs: usize,
        panel: &[f32],
        bs: usize,
        cols: usize,
    ) -> Geometry {
        assert!(bs >= cols && (k == 0 || (k - 1) * bs + cols <= panel.len()));
        assert!(k == 0 || rows == 0 || (rows - 1) * rs + (k - 1) * cs < a.len());
        Geometry { k, a: a.as_ptr(), rs, cs, b: panel.as_ptr(), bs, cols }
    }
}

/// Where a microkernel stores its `rows x NR` tile: row `r` at `ptr + r * ld`. The drivers
/// above only build it over memory that holds the whole tile.
#[derive(Clone, Copy)]
struct TileOut {
    ptr: *mut f32,
    ld: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], fused: bool) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f32;
                for kk in 0..k {
                    acc = if fused {
                        a[i * k + kk].mul_add(b[kk * n + j], acc)
                    } else {
                        acc + a[i * k + kk] * b[kk * n + j]
                    };
                }
                c[i * n + j] = acc;
            }
        }
        c
    }

    fn run(isa: Isa, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut packed = vec![f32::NAN; packed_len(k, n)];
        pack_b(b, n, 1, k, n, &mut packed);
        let mut c = vec![f32::NAN; m * n];
        let a = MatA::strided(a, k, 1);
        gemm(isa, m, n, k, a, &packed, Epilogue::default(), |i, j, v| {
            c[i * n + j..i * n + j + v.len()].copy_from_slice(v)
        });
        c
    }

    fn run_packed(isa: Isa, m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut packed = vec![f32::NAN; packed_len(k, n)];
        pack_b(b, n, 1, k, n, &mut packed);
        let mut c = vec![f32::NAN; m * n];
        gemm_into(isa, m, n, k, MatA::panels(a, m, k), &packed, Epilogue::default(), &mut c, n);
        c
    }

    #[test]
    fn panels_cover_every_row_once_and_evenly() {
        for m in 1..200 {
            let mut i = 0;
            let mut widths = vec![];
            while i < m {
                let (start, width) = panel_of(m, i);
                assert_eq!(start, i, "m = {m}");
                for r in i..i + width {
                    assert_eq!(panel_of(m, r), (start, width), "m = {m}, row {r}");
                }
                widths.push(width);
                i += width;
            }
            assert_eq!(i, m);
            assert_eq!(widths.len(), m.div_ceil(AP));
            let (lo, hi) = (widths.iter().min().unwrap(), widths.iter().max().unwrap());
            assert!(hi - lo <= 1 && *hi <= AP, "m = {m}: {widths:?}");
        }
    }

    /// A residual in the epilogue gives the bits of the unfused order: the product with its
    /// bias stored, then `then(c + r)` element by element.
    #[test]
    fn residual_epilogue_gives_the_unfused_bits() {
        let thens = [None, Some(Activation::Relu), Some(Activation::Clip { min: 0.0, max: 6.0 })];
        for &(m, k) in &[(10, 5), (12, 64), (37, 70), (64, 256)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let mut panels = vec![f32::NAN; m * k];
            pack_a(&a, m, k, &mut panels);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
            for n in [16, 32, 48, 57, 96] {
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
                let r: Vec<f32> = (0..m * n).map(|i| ((i * 29 % 83) as f32 - 41.0) / 3.0).collect();
                let mut bp = vec![f32::NAN; packed_len(k, n)];
                pack_b(&b, n, 1, k, n, &mut bp);
                for isa in [Isa::Generic, Isa::detect()] {
                    let am = MatA::panels(&panels, m, k);
                    let plain = Epilogue { bias: Some(&bias), act: None, residual: None };
                    let mut product = vec![f32::NAN; m * n];
                    gemm_into(isa, m, n, k, am, &bp, plain, &mut product, n);
                    for then in &thens {
                        let want: Vec<u32> = product
                            .iter()
                            .zip(&r)
                            .map(|(c, r)| then.map_or(c + r, |t| t.apply(c + r)).to_bits())
                            .collect();
                        let residual = Some(Residual { data: &r, ld: n, then: then.as_ref() });
                        let epi = Epilogue { residual, ..plain };
                        let mut got = vec![f32::NAN; m * n];
                        gemm_into(isa, m, n, k, am, &bp, epi, &mut got, n);
                        let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                        assert_eq!(got, want, "{isa:?} {m}x{n}x{k} then {then:?}");
                    }
                }
            }
        }
    }

    /// A packed A gives the bits of the same A read in place, through every driver, with the
    /// epilogue (bias, activation, residual), from any first row (threads split the rows):
    /// the column kernel (up to 8 columns, up to three panels per tile), a last narrow panel
    /// riding along with the one before it, row blocks ending at panel ends.
    #[test]
    fn packed_a_gives_the_strided_bits() {
        let acts = [None, Some(Activation::Relu), Some(Activation::HardSwish)];
        for &(m, k) in &[(1, 5), (12, 3), (13, 37), (16, 0), (37, 64), (100, 700), (50, 300)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
            let mut panels = vec![f32::NAN; m * k];
            pack_a(&a, m, k, &mut panels);
            let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
            for n in [1, 3, 7, 8, 9, 16, 23, 40, 49, 56, 57] {
                let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
                let r: Vec<f32> = (0..m * n).map(|i| ((i * 29 % 83) as f32 - 41.0) / 3.0).collect();
                let mut bp = vec![f32::NAN; packed_len(k, n)];
                pack_b(&b, n, 1, k, n, &mut bp);
                for isa in [Isa::Generic, Isa::detect()] {
                    for (t, act) in acts.iter().enumerate() {
                        let residual = (t == 2).then_some(Residual { data: &r, ld: n, then: None });
                        let epi = Epilogue {
                            bias: Some(&bias),
                            act: if residual.is_some() { None } else { *act },
                            residual,
                        };
                        let mut want = vec![f32::NAN; m * n];
                        gemm_into(isa, m, n, k, MatA::strided(&a, k, 1), &bp, epi, &mut want, n);
                        for i0 in [0, m / 3, m - 1] {
                            let am = MatA::panels(&panels, m, k).rows_from(i0);
                            let epi = Epilogue {
                                bias: Some(&bias[i0..]),
                                residual: residual
                                    .map(|r| Residual { data: &r.data[i0 * n..], ..r }),
                                ..epi
                            };
                            let mut got = vec![f32::NAN; (m - i0) * n];
                            // B read in place as well as packed.
                            // SAFETY: `got` holds m - i0 rows of n floats, borrowed mutably.
                            unsafe {
                                gemm_rows_into_raw(
                                    isa,
                                    m - i0,
                                    n,
                                    k,
                                    am,
                                    &b,
                                    n,
                                    epi,
                                    got.as_mut_ptr(),
                                    n,
                                )
                            };
                            let bits =
                                |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                            let case = format!("{isa:?} {m}x{n}x{k} from row {i0}, {act:?}");
                            assert_eq!(bits(&got), bits(&want[i0 * n..]), "{case}");
                            if epi.residual.is_none() {
                                let mut cb = vec![f32::NAN; (m - i0) * n];
                                gemm(isa, m - i0, n, k, am, &bp, epi, |i, j, v| {
                                    cb[i * n + j..i * n + j + v.len()].copy_from_slice(v)
                                });
                                assert_eq!(bits(&cb), bits(&want[i0 * n..]), "callback {case}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_the_fixed_order_reference_bit_for_bit() {
        let mut s = 7u32;
        let mut rnd = || {
            s = s.wrapping_mul(1664525).wrapping_add(1013904223);
            (s >> 8) as f32 / (1 << 24) as f32 - 0.5
        };
        for &(m, n, k) in
            // 13 x 7 x 1024: narrow panels with A's rows 4 KB apart (6-row tiles).
            &[
                (1, 1, 1),
                (6, 16, 9),
                (7, 17, 33),
                (13, 40, 300),
                (2, 5, 0),
                (64, 3, 27),
                (13, 7, 1024),
                // One column (8-row vectors, a rest of rows), 49 columns (a 7x7 map's last
                // panel is one column), depth not a multiple of 8.
                (19, 1, 37),
                (17, 49, 20),
                (8, 1, 3),
                // A larger than a row block (200 KB blocks of 72 rows), pairs of panels and
                // a last single one; shallow products (columns in blocks, rows outer).
                (100, 41, 700),
                (16, 75, 9),
                (30, 4200, 16),
            ]
        {
            let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rnd()).collect();
            let g = run(Isa::Generic, m, n, k, &a, &b);
            assert_eq!(g, reference(m, n, k, &a, &b, false), "generic {m}x{n}x{k}");
            let mut panels = vec![f32::NAN; m * k];
            pack_a(&a, m, k, &mut panels);
            assert_eq!(run_packed(Isa::Generic, m, n, k, &panels, &b), g, "generic packed");
            if Isa::detect() == Isa::Avx2Fma {
                let v = run(Isa::Avx2Fma, m, n, k, &a, &b);
                assert_eq!(v, reference(m, n, k, &a, &b, true), "avx2 {m}x{n}x{k}");
                let p = run_packed(Isa::Avx2Fma, m, n, k, &panels, &b);
                assert_eq!(p, v, "avx2 packed {m}x{n}x{k}");
            }
        }
    }

    #[test]
    fn b_read_in_place_gives_the_packed_bits() {
        // B as rows of a larger map (row stride ld > n), the way a pointwise convolution
        // reads its input planes; epilogue included. Widths that are not whole panels read
        // their last panel masked: B ends right after column n of its last row, so a load
        // past it would fail the bounds checks.
        let (m, k, ld) = (13, 37, 61);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let bias: Vec<f32> = (0..m).map(|i| i as f32 * 0.25 - 1.0).collect();
        let epi = Epilogue { bias: Some(&bias), act: Some(Activation::HardSwish), residual: None };
        let am = MatA::strided(&a, k, 1);
        for n in [48, 1, 7, 16, 21, 39] {
            let b: Vec<f32> =
                (0..(k - 1) * ld + n).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
            for isa in [Isa::Generic, Isa::detect()] {
                let mut packed = vec![f32::NAN; packed_len(k, n)];
                pack_b(&b, ld, 1, k, n, &mut packed);
                let mut want = vec![f32::NAN; m * n];
                gemm_into(isa, m, n, k, am, &packed, epi, &mut want, n);
                let mut got = vec![f32::NAN; m * n];
                // SAFETY: `got` holds m rows of n floats and is borrowed mutably.
                unsafe { gemm_rows_into_raw(isa, m, n, k, am, &b, ld, epi, got.as_mut_ptr(), n) };
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{isa:?}, n = {n}");
            }
        }
    }

    /// The AVX-512 kernel gives the AVX2 kernel's bits, tile by tile: every row count, full
    /// and partial panels, strided A, bias and each register activation.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_tiles_give_the_avx2_bits() {
        if !avx512::available() {
            return;
        }
        let k = 37;
        let a: Vec<f32> = (0..12 * 2 * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * NR).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
        let bias: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.5).collect();
        let acts = [None, Some(Activation::Relu), Some(Activation::HardSwish)];
        for rows in 1..=12 {
            for cols in [NR, 9, 1] {
                for act in acts {
                    // A row-major (rows 2k apart), then column-major (columns 24 apart).
                    for (rs, cs) in [(2 * k, 1), (1, 24)] {
                        let epi = TileEpilogue { bias: Some(&bias[..rows]), act };
                        let mut want = [[f32::NAN; NR]; 12];
                        let mut got = [[f32::NAN; NR]; 12];
                        let out = |t: &mut [[f32; NR]; 12]| TileOut {
                            ptr: t.as_mut_ptr().cast(),
                            ld: NR,
                        };
                        // SAFETY: AVX-512 (checked above) implies AVX2 and FMA; the tiles hold
                        // 12 rows of NR floats.
                        unsafe {
                            // 6-row AVX2 tiles, twice, for the 12-row tile.
                            for r0 in (0..rows).step_by(MR) {
                                let r = MR.min(rows - r0);
                                let ep = TileEpilogue { bias: Some(&bias[r0..r0 + r]), act };
                                let o = TileOut { ptr: want[r0].as_mut_ptr(), ld: NR };
                                avx2::tile(r, k, &a[r0 * rs..], rs, cs, &b, NR, cols, false, ep, o);
                            }
                            avx512::tile(rows, k, &a, rs, cs, &b, NR, cols, epi, out(&mut got));
                        }
                        let bits = |t: &[[f32; NR]; 12]| {
                            t[..rows]
                                .iter()
                                .flat_map(|r| r[..cols].iter().map(|x| x.to_bits()))
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{rows} rows, {cols} cols, {act:?}, rs {rs}"
                        );
                    }
                }
            }
        }
    }

    /// The 12 x 32 AVX-512 tile gives the bits of two 12 x 16 ones (themselves the AVX2
    /// kernel's, above): every row count, a whole and a partial second panel, strided A,
    /// bias and each register activation.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_pairs_give_the_single_panel_bits() {
        if !avx512::available() {
            return;
        }
        let k = 29;
        let a: Vec<f32> = (0..12 * 2 * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let b: Vec<f32> = (0..k * 2 * NR).map(|i| ((i * 53 % 89) as f32 - 44.0) / 9.0).collect();
        let (p0, p1) = b.split_at(k * NR);
        let bias: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.5).collect();
        for rows in 1..=12 {
            for cols2 in [NR, 5] {
                for act in [None, Some(Activation::Relu), Some(Activation::HardSwish)] {
                    for (rs, cs) in [(2 * k, 1), (1, 24)] {
                        let epi = TileEpilogue { bias: Some(&bias[..rows]), act };
                        let mut want = [[f32::NAN; 2 * NR]; 12];
                        let mut got = [[f32::NAN; 2 * NR]; 12];
                        let ld = 2 * NR;
                        // SAFETY: AVX-512 is available (checked above); the tiles hold 12
                        // rows of 2 NR floats.
                        unsafe {
                            let o = TileOut { ptr: want.as_mut_ptr().cast(), ld };
                            avx512::tile(rows, k, &a, rs, cs, p0, NR, NR, epi, o);
                            let o = TileOut { ptr: want[0][NR..].as_mut_ptr(), ld };
                            avx512::tile(rows, k, &a, rs, cs, p1, NR, cols2, epi, o);
                            let o = TileOut { ptr: got.as_mut_ptr().cast(), ld };
                            avx512::tile2(
                                rows,
                                k,
                                &a,
                                rs,
                                cs,
                                p0,
                                p1,
                                NR,
                                cols2,
                                std::ptr::null(),
                                epi,
                                o,
                            );
                        }
                        let bits = |t: &[[f32; 2 * NR]; 12]| {
                            t[..rows]
                                .iter()
                                .flat_map(|r| r[..NR + cols2].iter().map(|x| x.to_bits()))
                                .collect::<Vec<_>>()
                        };
                        assert_eq!(bits(&got), bits(&want), "{rows} rows, {cols2}, {act:?}, {rs}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_column_of_c_does_not_depend_on_n() {
        // The same column computed inside a wide and a narrow product gives the same bits.
        let (m, k) = (11, 70);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let wide_n = 37;
        let b: Vec<f32> = (0..k * wide_n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 5.0).collect();
        let wide = run(Isa::detect(), m, wide_n, k, &a, &b);
        let col = 21;
        let b1: Vec<f32> = (0..k).map(|kk| b[kk * wide_n + col]).collect();
        let narrow = run(Isa::detect(), m, 1, k, &a, &b1);
        for i in 0..m {
            assert_eq!(wide[i * wide_n + col].to_bits(), narrow[i].to_bits());
        }
    }
}
