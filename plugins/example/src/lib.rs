//! An example third-party frugal backend, built as a `cdylib` against `frugal-plugin-abi`
//! alone: naive f32 kernels on the CPU, written for reading, not for speed. Copy it to start a
//! backend of your own (see `plugins/README.md`).
//!
//! It runs the op families the bundled classifiers need (convolution with groups, bias,
//! residual and activation; pooling; global average pooling; affine; activations; broadcasting
//! binary ops; concat; gemm; softmax; copy) and leaves the others out of `FAMILIES`, so frugal
//! refuses models that need them before running anything.
//!
//! Every kernel addresses tensors through [`FrugalWindow::index`]: element `f` (row-major over
//! the whole tensor) of a window lives at `row_start(plane, row % capacity) + column`, which is
//! what makes ring buffers (execution by parts) work.

use std::ffi::CStr;
use std::ops::Range;

use frugal_plugin_abi::*;

/// The backend: one arena of f32 and the uploaded weights.
#[derive(Debug, Default)]
pub struct Example {
    arena: Vec<f32>,
    weights: Vec<Vec<f32>>,
}

const fn bit(family: u32) -> u32 {
    1 << family
}

impl PluginBackend for Example {
    const NAME: &'static CStr = c"example";
    const FAMILIES: u32 = bit(FRUGAL_FAMILY_CONV)
        | bit(FRUGAL_FAMILY_POOL)
        | bit(FRUGAL_FAMILY_GLOBAL_AVG_POOL)
        | bit(FRUGAL_FAMILY_AFFINE)
        | bit(FRUGAL_FAMILY_UNARY)
        | bit(FRUGAL_FAMILY_BINARY)
        | bit(FRUGAL_FAMILY_CONCAT)
        | bit(FRUGAL_FAMILY_GEMM)
        | bit(FRUGAL_FAMILY_MATMUL)
        | bit(FRUGAL_FAMILY_SOFTMAX)
        | bit(FRUGAL_FAMILY_COPY);

    fn create(_options: &FrugalOptions) -> Result<Self, PluginError> {
        Ok(Example::default())
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            storage_mask: 1 << FRUGAL_DTYPE_F32,
            max_buffer_bytes: isize::MAX as u64,
            max_binding_bytes: isize::MAX as u64,
            device: "example plugin (naive f32 kernels on the CPU)".into(),
            kernels: concat!("example-", env!("CARGO_PKG_VERSION")).into(),
        }
    }

    fn alloc_arena(&mut self, bytes: usize) -> Result<(), PluginError> {
        self.arena = vec![0.0; bytes.div_ceil(4)];
        Ok(())
    }

    fn upload(&mut self, _shape: &[u64], data: &[f32]) -> Result<u64, PluginError> {
        self.weights.push(data.to_vec());
        Ok(self.weights.len() as u64 - 1)
    }

    fn execute(&mut self, call: Call<'_>, _scratch: FrugalScratch) -> Result<(), PluginError> {
        match call {
            Call::Conv(k) => self.conv(k),
            Call::Pool(k) => self.pool(k),
            Call::GlobalAvgPool(k) => self.global_avg_pool(k),
            Call::Affine(k) => self.affine(k),
            Call::Unary(k) => self.unary(k),
            Call::Binary(k) => self.binary(k),
            Call::Concat(k, xs) => self.concat(k, xs),
            Call::Gemm(k) => self.gemm(k),
            Call::MatMul(k) => self.matmul(k),
            Call::Softmax(k) => self.softmax(k),
            Call::Copy(k) => self.copy(k),
            other => Err(format!("op family {} is not supported", other.family())),
        }
    }

    fn write(
        &mut self,
        dst: &FrugalWindow,
        src: &[f32],
        rows: Range<usize>,
    ) -> Result<(), PluginError> {
        self.fits(dst)?;
        let (planes, _, w) = dst.geometry();
        if src.len() != planes * rows.len() * w {
            return Err(format!("{} values for rows {rows:?} of {:?}", src.len(), dst.shape()));
        }
        for p in 0..planes {
            for r in dst.row_range() {
                let s = (p * rows.len() + r - rows.start) * w;
                let d = dst.row_start(p, r);
                self.arena[d..d + w].copy_from_slice(&src[s..s + w]);
            }
        }
        Ok(())
    }

    fn read(
        &mut self,
        src: &FrugalWindow,
        dst: &mut [f32],
        rows: Range<usize>,
    ) -> Result<(), PluginError> {
        self.fits(src)?;
        let (planes, _, w) = src.geometry();
        if dst.len() != planes * rows.len() * w {
            return Err(format!("{} values for rows {rows:?} of {:?}", dst.len(), src.shape()));
        }
        for p in 0..planes {
            for r in src.row_range() {
                let d = (p * rows.len() + r - rows.start) * w;
                let s = src.row_start(p, r);
                dst[d..d + w].copy_from_slice(&self.arena[s..s + w]);
            }
        }
        Ok(())
    }

    fn weight_bytes(&self) -> u64 {
        self.weights.iter().map(|w| w.len() as u64 * 4).sum()
    }
}

frugal_plugin_abi::export_plugin!(Example);

/// The row-major index (over the whole tensor) of every element of the window's rows, with
/// its arena index.
fn elements(y: &FrugalWindow) -> impl Iterator<Item = (usize, usize)> + '_ {
    let (planes, h, w) = y.geometry();
    (0..planes)
        .flat_map(move |p| y.row_range().map(move |r| (p * h + r) * w))
        .flat_map(move |start| (start..start + w).map(move |f| (f, y.index(f))))
}

/// Splits a row-major index into a multi-index over `dims`.
fn unravel(mut f: usize, dims: &[u64]) -> [usize; FRUGAL_MAX_RANK] {
    let mut idx = [0; FRUGAL_MAX_RANK];
    for a in (0..dims.len()).rev() {
        let d = (dims[a] as usize).max(1);
        idx[a] = f % d;
        f /= d;
    }
    idx
}

fn dims(w: &FrugalWindow) -> Vec<usize> {
    w.shape().iter().map(|&d| d as usize).collect()
}

/// Applies an activation.
fn act(a: &FrugalActivation, x: f32) -> f32 {
    match a.kind {
        FRUGAL_ACT_RELU => x.max(0.0),
        FRUGAL_ACT_CLIP => x.max(a.p0).min(a.p1),
        FRUGAL_ACT_LEAKY_RELU => x.max(0.0) + a.p0 * x.min(0.0),
        FRUGAL_ACT_SIGMOID => 1.0 / (1.0 + (-x).exp()),
        FRUGAL_ACT_HARD_SIGMOID => (a.p0 * x + a.p1).clamp(0.0, 1.0),
        FRUGAL_ACT_HARD_SWISH => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
        FRUGAL_ACT_TANH => x.tanh(),
        FRUGAL_ACT_ERF => erf(x),
        _ => x,
    }
}

/// erf by Abramowitz and Stegun 7.1.26 (error below 1.5e-7).
fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs() as f64);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-(x as f64) * x as f64).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

impl Example {
    /// Fails unless every row slot of the window lies inside the arena and holds f32.
    fn fits(&self, w: &FrugalWindow) -> Result<(), PluginError> {
        let (planes, _, width) = w.geometry();
        let end = w.offset as usize / 4
            + (planes.max(1) - 1) * w.capacity as usize * w.row_stride as usize
            + (w.capacity as usize).saturating_sub(1) * w.row_stride as usize
            + width;
        if w.dtype != FRUGAL_DTYPE_F32 {
            return Err("only f32 windows are supported".into());
        }
        if w.numel() > 0 && end > self.arena.len() {
            return Err(format!("window {:?} lies outside the arena", w.shape()));
        }
        Ok(())
    }

    fn weight(&self, w: &FrugalWeight) -> Result<&[f32], PluginError> {
        let data = self.weights.get(w.id as usize).ok_or(format!("unknown weight {}", w.id))?;
        let n: u64 = w.shape().iter().product();
        if data.len() as u64 != n {
            return Err(format!("weight {} holds {} values, not {n}", w.id, data.len()));
        }
        Ok(data)
    }

    /// Element `f` (row-major) of an operand.
    fn operand(&self, o: &FrugalOperand, f: usize) -> Result<f32, PluginError> {
        if o.kind == FRUGAL_OPERAND_WEIGHT {
            self.weight(&o.weight)?.get(f).copied().ok_or_else(|| "weight index".into())
        } else {
            Ok(self.arena[o.window.index(f)])
        }
    }

    fn conv(&mut self, k: &FrugalConv) -> Result<(), PluginError> {
        for w in [&k.x, &k.y] {
            self.fits(w)?;
        }
        if k.has_residual != 0 {
            self.fits(&k.r)?;
        }
        let (xd, yd) = (dims(&k.x), dims(&k.y));
        let (c_in, h, w) = (xd[1], xd[2], xd[3]);
        let (m_out, g) = (yd[1], k.groups as usize);
        let (cg, mg) = (c_in / g, m_out / g);
        let (kh, kw) = (k.kernel[0] as usize, k.kernel[1] as usize);
        let wt = self.weight(&k.w)?;
        let bias = if k.has_bias != 0 { Some(self.weight(&k.b)?) } else { None };
        let mut out = Vec::new();
        for (f, at) in elements(&k.y) {
            let [n, m, oy, ox, ..] = unravel(f, k.y.shape());
            let group = m / mg;
            let mut acc = 0.0f32;
            for ci in 0..cg {
                let c = group * cg + ci;
                for ky in 0..kh {
                    let iy = (oy * k.strides[0] as usize + ky * k.dilations[0] as usize)
                        .checked_sub(k.pads[0] as usize);
                    let Some(iy) = iy.filter(|&iy| iy < h) else { continue };
                    for kx in 0..kw {
                        let ix = (ox * k.strides[1] as usize + kx * k.dilations[1] as usize)
                            .checked_sub(k.pads[1] as usize);
                        let Some(ix) = ix.filter(|&ix| ix < w) else { continue };
                        let xv = self.arena[k.x.row_start(n * c_in + c, iy) + ix];
                        acc += xv * wt[((m * cg + ci) * kh + ky) * kw + kx];
                    }
                }
            }
            if let Some(b) = bias {
                acc += b[m];
            }
            if k.has_residual != 0 {
                acc += self.arena[k.r.index(f)];
            }
            out.push((at, act(&k.act, acc)));
        }
        for (at, v) in out {
            self.arena[at] = v;
        }
        Ok(())
    }

    /// Pooling folds input rows into output rows (see `FrugalPool`).
    fn pool(&mut self, k: &FrugalPool) -> Result<(), PluginError> {
        self.fits(&k.x)?;
        self.fits(&k.y)?;
        let (planes, h, w) = k.x.geometry();
        let (_, _, ow) = k.y.geometry();
        let (rows_held, max) = (k.x.row_range(), k.kind == FRUGAL_POOL_MAX);
        let tap = |o: usize, t: usize, a: usize, len: usize| {
            (o * k.strides[a] as usize + t * k.dilations[a] as usize)
                .checked_sub(k.pads[a] as usize)
                .filter(|&i| i < len)
        };
        // Taps inside the (padded) input along axis a, the ONNX average divisor.
        let count = |o: usize, a: usize, len: usize| {
            let (pb, pe) = (k.pads[a] as usize, k.pads[a + 2] as usize);
            let (lo, hi) =
                if k.count_include_pad != 0 { (0, len + pb + pe) } else { (pb, len + pb) };
            (0..k.kernel[a] as usize)
                .filter(|&t| {
                    (lo..hi).contains(&(o * k.strides[a] as usize + t * k.dilations[a] as usize))
                })
                .count()
        };
        for oy in k.y.row_range() {
            let taps: Vec<usize> =
                (0..k.kernel[0] as usize).filter_map(|t| tap(oy, t, 0, h)).collect();
            let (Some(&first), Some(&last)) = (taps.first(), taps.last()) else {
                return Err(format!("output row {oy} has no input rows"));
            };
            if !taps.iter().any(|iy| rows_held.contains(iy)) {
                continue;
            }
            let (start, finish) = (first >= rows_held.start, last < rows_held.end);
            for p in 0..planes {
                for ox in 0..ow {
                    let at = k.y.row_start(p, oy) + ox;
                    let mut acc = if start {
                        if max {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    } else {
                        self.arena[at]
                    };
                    for &iy in taps.iter().filter(|iy| rows_held.contains(iy)) {
                        for t in 0..k.kernel[1] as usize {
                            if let Some(ix) = tap(ox, t, 1, w) {
                                let v = self.arena[k.x.row_start(p, iy) + ix];
                                acc = if max { acc.max(v) } else { acc + v };
                            }
                        }
                    }
                    if finish && !max {
                        acc /= (count(oy, 0, h) * count(ox, 1, w)) as f32;
                    }
                    self.arena[at] = acc;
                }
            }
        }
        Ok(())
    }

    /// Global average pooling; rank-4 inputs may come a few rows at a time (sums are kept in
    /// the output between calls).
    fn global_avg_pool(&mut self, k: &FrugalGlobalAvgPool) -> Result<(), PluginError> {
        self.fits(&k.x)?;
        self.fits(&k.y)?;
        let xd = dims(&k.x);
        let (_, h, _) = k.x.geometry();
        let size: usize = xd[2..].iter().product(); // elements per (n, c)
        let streaming = xd.len() == 4;
        let rows = if streaming { k.x.row_range() } else { 0..h };
        let (_, _, w) = k.x.geometry();
        for nc in 0..xd[0] * xd[1] {
            let at = k.y.index(nc);
            let mut acc = if rows.start == 0 || !streaming { 0.0 } else { self.arena[at] };
            if streaming {
                for r in rows.clone() {
                    let s = k.x.row_start(nc, r);
                    acc = self.arena[s..s + w].iter().fold(acc, |a, &v| a + v);
                }
            } else {
                for f in nc * size..(nc + 1) * size {
                    acc += self.arena[k.x.index(f)];
                }
            }
            self.arena[at] = if !streaming || rows.end == h { acc / size as f32 } else { acc };
        }
        Ok(())
    }

    fn affine(&mut self, k: &FrugalAffine) -> Result<(), PluginError> {
        self.fits(&k.x)?;
        self.fits(&k.y)?;
        let (scale, shift) = (self.weight(&k.scale)?.to_vec(), self.weight(&k.shift)?.to_vec());
        for (f, at) in elements(&k.y) {
            let c = unravel(f, k.y.shape())[1];
            self.arena[at] = act(&k.act, self.arena[k.x.index(f)] * scale[c] + shift[c]);
        }
        Ok(())
    }

    fn unary(&mut self, k: &FrugalUnary) -> Result<(), PluginError> {
        self.fits(&k.x)?;
        self.fits(&k.y)?;
        for (f, at) in elements(&k.y) {
            self.arena[at] = act(&k.act, self.arena[k.x.index(f)]);
        }
        Ok(())
    }

    /// Row-major index in operand `o` of output multi-index `idx` (numpy broadcasting).
    fn broadcast(o: &FrugalOperand, idx: &[usize], out_rank: usize) -> usize {
        let od = o.shape();
        let skip = out_rank - od.len();
        od.iter()
            .enumerate()
            .fold(0, |acc, (a, &d)| acc * d as usize + if d > 1 { idx[a + skip] } else { 0 })
    }

    fn binary(&mut self, k: &FrugalBinary) -> Result<(), PluginError> {
        self.fits(&k.y)?;
        for o in [&k.a, &k.b] {
            if o.kind == FRUGAL_OPERAND_ARENA {
                self.fits(&o.window)?;
            }
        }
        let rank = k.y.shape().len();
        let mut out = Vec::new();
        for (f, at) in elements(&k.y) {
            let idx = unravel(f, k.y.shape());
            let a = self.operand(&k.a, Self::broadcast(&k.a, &idx, rank))?;
            let b = self.operand(&k.b, Self::broadcast(&k.b, &idx, rank))?;
            let v = match k.kind {
                FRUGAL_BINARY_ADD => a + b,
                FRUGAL_BINARY_SUB => a - b,
                FRUGAL_BINARY_MUL => a * b,
                FRUGAL_BINARY_DIV => a / b,
                FRUGAL_BINARY_PRELU => {
                    if a >= 0.0 {
                        a
                    } else {
                        a * b
                    }
                }
                other => return Err(format!("unknown binary kind {other}")),
            };
            out.push((at, act(&k.act, v)));
        }
        for (at, v) in out {
            self.arena[at] = v;
        }
        Ok(())
    }

    fn concat(&mut self, k: &FrugalConcat, xs: &[FrugalWindow]) -> Result<(), PluginError> {
        self.fits(&k.y)?;
        for x in xs {
            self.fits(x)?;
        }
        let axis = k.axis as usize;
        for (f, at) in elements(&k.y) {
            let mut idx = unravel(f, k.y.shape());
            for x in xs {
                let xd = x.shape();
                if idx[axis] < xd[axis] as usize {
                    let g = xd.iter().enumerate().fold(0, |acc, (a, &d)| acc * d as usize + idx[a]);
                    self.arena[at] = self.arena[x.index(g)];
                    break;
                }
                idx[axis] -= xd[axis] as usize;
            }
        }
        Ok(())
    }

    /// `y = act(alpha * op(A) op(B) + beta * C)`.
    fn gemm(&mut self, k: &FrugalGemm) -> Result<(), PluginError> {
        self.fits(&k.a)?;
        self.fits(&k.y)?;
        let (ad, bd) = (dims(&k.a), k.b.shape());
        let kk = if k.trans_a != 0 { ad[0] } else { ad[1] };
        let n = if k.trans_b != 0 { bd[0] } else { bd[1] } as usize;
        let b = self.weight(&k.b)?.to_vec();
        let c = if k.has_c != 0 {
            Some((self.weight(&k.c)?.to_vec(), k.c.shape().to_vec()))
        } else {
            None
        };
        for (f, at) in elements(&k.y) {
            let (i, j) = (f / n, f % n);
            let mut acc = 0.0f32;
            for t in 0..kk {
                let a = if k.trans_a != 0 { t * ad[1] + i } else { i * ad[1] + t };
                let bv = if k.trans_b != 0 { b[j * kk + t] } else { b[t * n + j] };
                acc += self.arena[k.a.index(a)] * bv;
            }
            let mut v = k.alpha * acc;
            if let Some((c, cd)) = &c {
                let ci = match cd.as_slice() {
                    [] => 0,
                    [d] => {
                        if *d > 1 {
                            j
                        } else {
                            0
                        }
                    }
                    [r, cc] => {
                        (if *r > 1 { i } else { 0 }) * *cc as usize + if *cc > 1 { j } else { 0 }
                    }
                    _ => return Err("C must have rank <= 2".into()),
                };
                v += k.beta * c[ci];
            }
            self.arena[at] = act(&k.act, v);
        }
        Ok(())
    }

    /// numpy matmul: 1-D operands are promoted, leading axes broadcast.
    fn matmul(&mut self, k: &FrugalMatMul) -> Result<(), PluginError> {
        self.fits(&k.y)?;
        for o in [&k.a, &k.b] {
            if o.kind == FRUGAL_OPERAND_ARENA {
                self.fits(&o.window)?;
            }
        }
        let promote = |d: &[u64], front: bool| -> Vec<usize> {
            let d: Vec<usize> = d.iter().map(|&v| v as usize).collect();
            match (d.len(), front) {
                (1, true) => vec![1, d[0]],
                (1, false) => vec![d[0], 1],
                _ => d,
            }
        };
        let (a, b) = (promote(k.a.shape(), true), promote(k.b.shape(), false));
        let (m, kk, n) = (a[a.len() - 2], a[a.len() - 1], b[b.len() - 1]);
        let (ab, bb) = (&a[..a.len() - 2], &b[..b.len() - 2]);
        let nb = ab.len().max(bb.len());
        let dim = |d: &[usize], i: usize| if i + d.len() >= nb { d[i + d.len() - nb] } else { 1 };
        let mut full: Vec<u64> = (0..nb).map(|i| dim(ab, i).max(dim(bb, i)) as u64).collect();
        full.extend([m as u64, n as u64]);
        // Row-major index of batch `idx` in an operand's own batch axes (broadcast axes: 0).
        let batch_of = |d: &[usize], idx: &[usize]| {
            (0..d.len())
                .fold(0, |acc, a| acc * d[a] + if d[a] > 1 { idx[a + nb - d.len()] } else { 0 })
        };
        let mut out = Vec::new();
        for (f, at) in elements(&k.y) {
            let idx = unravel(f, &full);
            let (i, j) = (idx[nb], idx[nb + 1]);
            let (pa, pb) = (batch_of(ab, &idx[..nb]), batch_of(bb, &idx[..nb]));
            let mut acc = 0.0f32;
            for t in 0..kk {
                let av = self.operand(&k.a, (pa * m + i) * kk + t)?;
                let bv = self.operand(&k.b, (pb * kk + t) * n + j)?;
                acc += av * bv;
            }
            out.push((at, act(&k.act, acc)));
        }
        for (at, v) in out {
            self.arena[at] = v;
        }
        Ok(())
    }

    fn softmax(&mut self, k: &FrugalSoftmax) -> Result<(), PluginError> {
        self.fits(&k.x)?;
        self.fits(&k.y)?;
        let xd = dims(&k.x);
        let axis = k.axis as usize;
        let outer: usize = xd[..axis].iter().product();
        let (len, inner) = if k.coerce_2d != 0 {
            (xd[axis..].iter().product(), 1)
        } else {
            (xd[axis], xd[axis + 1..].iter().product())
        };
        for o in 0..outer {
            for i in 0..inner {
                let at = |l: usize| (o * len + l) * inner + i;
                let m = (0..len)
                    .map(|l| self.arena[k.x.index(at(l))])
                    .fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> =
                    (0..len).map(|l| (self.arena[k.x.index(at(l))] - m).exp()).collect();
                let sum: f32 = e.iter().sum();
                for (l, v) in e.iter().enumerate() {
                    self.arena[k.y.index(at(l))] = v / sum;
                }
            }
        }
        Ok(())
    }

    fn copy(&mut self, k: &FrugalCopy) -> Result<(), PluginError> {
        self.fits(&k.y)?;
        if k.x.kind == FRUGAL_OPERAND_ARENA {
            self.fits(&k.x.window)?;
        }
        for (f, at) in elements(&k.y) {
            self.arena[at] = self.operand(&k.x, f)?;
        }
        Ok(())
    }
}
