//! Every kernel family on the GPU against the CPU reference backend (within 1e-4 relative),
//! and produced a band of rows at a time through ring buffers against the whole call (bit
//! for bit). Without a CUDA driver or device each test prints a visible SKIPPED line and
//! passes.

use std::io::Write;

use frugal_core::backend::{Dims, Kernel, Operand, RowWindow, Scratch, WeightRef};
use frugal_core::ops::*;
use frugal_core::{Backend, DType, Tensor};
use frugal_cpu::CpuBackend;
use frugal_cuda::{CudaBackend, CudaOptions};

/// The CUDA backend with `options`, or `None` after printing why the test is skipped (written
/// straight to stderr, which the test harness does not capture). Built with the `emulator`
/// feature and no GPU at hand, the kernels run in the host emulator instead (said as visibly).
fn device(options: CudaOptions) -> Option<CudaBackend> {
    let say = |line: String| {
        let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
    };
    match CudaBackend::with_options(options.clone()) {
        Ok(b) => Some(b),
        Err(e) => {
            #[cfg(feature = "emulator")]
            {
                say(format!("EMULATED (no GPU: {e}): CUDA kernels run on the host"));
                Some(CudaBackend::emulated(options).expect("the host emulator builds"))
            }
            #[cfg(not(feature = "emulator"))]
            {
                let _ = options;
                say(format!("SKIPPED: no CUDA driver/device: {e}"));
                None
            }
        }
    }
}

fn cuda() -> Option<CudaBackend> {
    device(CudaOptions::default())
}

fn dims(s: &[usize]) -> Dims {
    Dims::new(s).unwrap()
}

/// Deterministic values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// Builds the kernel from its input windows, weights and output window.
type Make = dyn Fn(&[RowWindow], &[WeightRef], RowWindow) -> Kernel<'static>;

/// A kernel call over whole tensors: inputs (shape, values), weights, output shape.
struct Case {
    inputs: Vec<(Vec<usize>, Vec<f32>)>,
    weights: Vec<Tensor>,
    out: Vec<usize>,
}

fn align(b: usize) -> usize {
    b.div_ceil(64) * 64
}

/// Runs `case` whole on `b`: every tensor contiguous in the arena.
fn run_whole(b: &mut dyn Backend, case: &Case, make: &Make) -> Vec<f32> {
    let mut off = 0;
    let mut xs = Vec::new();
    for (s, _) in &case.inputs {
        let d = dims(s);
        xs.push(RowWindow::whole(off, DType::F32, d));
        off += align(d.numel() * 4);
    }
    let yd = dims(&case.out);
    let y = RowWindow::whole(off, DType::F32, yd);
    off += align(yd.numel() * 4);
    b.alloc_arena(off).unwrap();
    let ws = upload(b, &case.weights);
    for (x, (s, v)) in xs.iter().zip(&case.inputs) {
        let (_, h, _) = dims(s).rows();
        b.write(x, v, 0..h).unwrap();
    }
    let k = make(&xs, &ws, y);
    b.prepare(&k).unwrap();
    let scratch = b.workspace_bytes(&k);
    let mut bytes = off;
    if scratch > 0 {
        b.alloc_arena(off + scratch).unwrap();
        for (x, (s, v)) in xs.iter().zip(&case.inputs) {
            let (_, h, _) = dims(s).rows();
            b.write(x, v, 0..h).unwrap();
        }
        bytes += scratch;
    }
    let _ = bytes;
    b.execute(&k, Scratch { offset: off, bytes: scratch }).unwrap();
    let (_, h, _) = yd.rows();
    let mut out = vec![f32::NAN; yd.numel()];
    b.read(&y, &mut out, 0..h).unwrap();
    out
}

fn upload(b: &mut dyn Backend, ws: &[Tensor]) -> Vec<WeightRef> {
    ws.iter().map(|t| WeightRef { id: b.upload(t).unwrap(), dims: dims(t.shape()) }).collect()
}

/// Runs a one-input row-wise `case` on `b` a band of `band` output rows at a time: the input
/// through a ring of `cap` rows holding only the rows `needs(r0, r1)` of each band, the output
/// through a ring of `band` rows.
fn run_bands(
    b: &mut dyn Backend,
    case: &Case,
    make: &Make,
    band: usize,
    cap: usize,
    needs: &dyn Fn(usize, usize) -> (usize, usize),
) -> Vec<f32> {
    let (xs, xv) = (&case.inputs[0].0, &case.inputs[0].1);
    let (xd, yd) = (dims(xs), dims(&case.out));
    let ((xp, xh, xw), (yp, yh, yw)) = (xd.rows(), yd.rows());
    let xring = RowWindow {
        offset: 0,
        dtype: DType::F32,
        dims: xd,
        capacity: cap,
        row_stride: xw,
        first_row: 0,
        rows: 0,
    };
    let yoff = align(xp * cap * xw * 4);
    let yring = RowWindow {
        offset: yoff,
        dtype: DType::F32,
        dims: yd,
        capacity: band,
        row_stride: yw,
        first_row: 0,
        rows: 0,
    };
    let end = yoff + align(yp * band * yw * 4);
    b.alloc_arena(end + (1 << 20)).unwrap();
    let ws = upload(b, &case.weights);
    let mut out = vec![f32::NAN; yd.numel()];
    let mut r0 = 0;
    while r0 < yh {
        let r1 = (r0 + band).min(yh);
        let (lo, hi) = needs(r0, r1);
        assert!(hi - lo <= cap, "ring too small");
        let x = RowWindow { first_row: lo, rows: hi - lo, ..xring };
        b.write(&x, xv, 0..xh).unwrap();
        let y = RowWindow { first_row: r0, rows: r1 - r0, ..yring };
        let k = make(std::slice::from_ref(&x), &ws, y);
        b.execute(&k, Scratch { offset: end, bytes: 1 << 20 }).unwrap();
        b.read(&y, &mut out, 0..yh).unwrap();
        r0 = r1;
    }
    out
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-4 * w.abs().max(1.0);
        assert!((g - w).abs() <= tol, "{what}: element {i}: cuda {g}, cpu {w}");
    }
}

fn assert_bits(got: &[f32], want: &[f32], what: &str) {
    let same = got.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same && got.len() == want.len(), "{what}: by bands differs from whole");
}

/// CUDA whole vs CPU whole.
fn check(gpu: &mut dyn Backend, case: &Case, make: &Make, what: &str) -> Vec<f32> {
    let want = run_whole(&mut CpuBackend::new(), case, make);
    let got = run_whole(gpu, case, make);
    assert_close(&got, &want, what);
    got
}

fn conv_case(op: &Conv, x: [usize; 4], m: usize, bias: bool) -> Case {
    let w = [m, x[1] / op.groups, op.kernel[0], op.kernel[1]];
    let out = op.infer(&x, &w).unwrap();
    let mut weights = vec![Tensor::from_f32(w.to_vec(), data(w.iter().product(), 2))];
    if bias {
        weights.push(Tensor::from_f32(vec![m], data(m, 3)));
    }
    Case { inputs: vec![(x.to_vec(), data(x.iter().product(), 1))], weights, out }
}

fn conv(k: usize, s: usize, p: usize, d: usize, g: usize, act: Option<Activation>) -> Conv {
    Conv {
        kernel: [k, k],
        strides: [s, s],
        dilations: [d, d],
        pads: [p; 4],
        groups: g,
        act,
        residual: false,
    }
}

#[test]
fn convolutions_match_the_cpu_whole_and_by_bands() {
    if let Some(mut gpu) = cuda() {
        convolutions_match_the_cpu_whole_and_by_bands_on(&mut gpu);
    }
}

fn convolutions_match_the_cpu_whole_and_by_bands_on(gpu: &mut dyn Backend) {
    let cases = [
        (conv(3, 1, 1, 1, 1, Some(Activation::Relu)), [1, 4, 12, 10], 6, true),
        (conv(3, 2, 1, 1, 8, Some(Activation::HardSwish)), [2, 8, 13, 9], 8, true),
        (
            conv(1, 1, 0, 1, 1, Some(Activation::Clip { min: 0.0, max: 6.0 })),
            [1, 16, 7, 7],
            24,
            false,
        ),
        (conv(3, 1, 2, 2, 2, Some(Activation::Sigmoid)), [1, 6, 11, 12], 4, true),
        (conv(5, 2, 2, 1, 1, None), [1, 3, 17, 16], 5, false),
        // Seven input channels: one group of four chains, three left over.
        (conv(3, 1, 1, 1, 1, None), [1, 7, 9, 8], 3, true),
    ];
    for (i, (op, x, m, bias)) in cases.into_iter().enumerate() {
        let op = leak(op);
        let case = conv_case(op, x, m, bias);
        let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Conv {
            op,
            x: xs[0],
            w: ws[0],
            b: ws.get(1).copied(),
            r: None,
            y,
        };
        let whole = check(gpu, &case, &make, &format!("conv {i}"));
        let h = x[2];
        let needs = |r0: usize, r1: usize| {
            let lo = (r0 * op.strides[0]).saturating_sub(op.pads[0]);
            let hi = ((r1 - 1) * op.strides[0] + (op.kernel[0] - 1) * op.dilations[0] + 1)
                .saturating_sub(op.pads[0])
                .min(h);
            (lo, hi)
        };
        for band in [1, 2, 3] {
            let cap = band * op.strides[0] + (op.kernel[0] - 1) * op.dilations[0] + 1;
            let got = run_bands(gpu, &case, &make, band, cap, &needs);
            assert_bits(&got, &whole, &format!("conv {i}, bands of {band}"));
        }
    }
}

#[test]
fn residual_convolution_adds_before_the_activation() {
    if let Some(mut gpu) = cuda() {
        residual_convolution_adds_before_the_activation_on(&mut gpu);
    }
}

fn residual_convolution_adds_before_the_activation_on(gpu: &mut dyn Backend) {
    let mut op = conv(3, 1, 1, 1, 1, Some(Activation::Relu));
    op.residual = true;
    let op = leak(op);
    let mut case = conv_case(op, [1, 4, 9, 8], 4, true);
    case.inputs.push((case.out.clone(), data(4 * 9 * 8, 9)));
    let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Conv {
        op,
        x: xs[0],
        w: ws[0],
        b: Some(ws[1]),
        r: Some(xs[1]),
        y,
    };
    check(gpu, &case, &make, "residual conv");
}

#[test]
fn transposed_convolution_matches_the_cpu() {
    if let Some(mut gpu) = cuda() {
        transposed_convolution_matches_the_cpu_on(&mut gpu);
    }
}

fn transposed_convolution_matches_the_cpu_on(gpu: &mut dyn Backend) {
    let op = leak(ConvTranspose {
        kernel: [3, 3],
        strides: [2, 2],
        dilations: [1, 1],
        pads: [1, 1, 1, 1],
        output_padding: [1, 1],
        groups: 2,
        act: Some(Activation::LeakyRelu { alpha: 0.1 }),
    });
    let (x, w) = ([1, 4, 5, 6], [4, 3, 3, 3]);
    let out = op.infer(&x, &w).unwrap();
    let case = Case {
        inputs: vec![(x.to_vec(), data(120, 1))],
        weights: vec![
            Tensor::from_f32(w.to_vec(), data(108, 2)),
            Tensor::from_f32(vec![6], data(6, 3)),
        ],
        out,
    };
    let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::ConvTranspose {
        op,
        x: xs[0],
        w: ws[0],
        b: Some(ws[1]),
        y,
    };
    check(gpu, &case, &make, "conv_transpose");
}

#[test]
fn pooling_matches_the_cpu_whole_and_by_bands() {
    if let Some(mut gpu) = cuda() {
        pooling_matches_the_cpu_whole_and_by_bands_on(&mut gpu);
    }
}

fn pooling_matches_the_cpu_whole_and_by_bands_on(gpu: &mut dyn Backend) {
    let pools = [
        Pool {
            kind: PoolKind::Max,
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1; 4],
            ceil_mode: false,
            count_include_pad: false,
        },
        Pool {
            kind: PoolKind::Avg,
            kernel: [3, 3],
            strides: [2, 2],
            dilations: [1, 1],
            pads: [1, 1, 0, 0],
            ceil_mode: true,
            count_include_pad: false,
        },
        Pool {
            kind: PoolKind::Avg,
            kernel: [2, 2],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [1; 4],
            ceil_mode: false,
            count_include_pad: true,
        },
    ];
    for (i, op) in pools.into_iter().enumerate() {
        let op = leak(op);
        let x = [1, 3, 11, 10];
        let case = Case {
            inputs: vec![(x.to_vec(), data(330, 4))],
            weights: vec![],
            out: op.infer(&x).unwrap(),
        };
        let make =
            move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Pool { op, x: xs[0], y };
        let whole = check(gpu, &case, &make, &format!("pool {i}"));
        let needs = |r0: usize, r1: usize| {
            let lo = (r0 * op.strides[0]).saturating_sub(op.pads[0]);
            let hi = ((r1 - 1) * op.strides[0] + op.kernel[0]).saturating_sub(op.pads[0]).min(x[2]);
            (lo, hi)
        };
        let got = run_bands(gpu, &case, &make, 2, 8, &needs);
        assert_bits(&got, &whole, &format!("pool {i} by bands"));
    }
    let case = Case {
        inputs: vec![(vec![2, 5, 7, 6], data(420, 5))],
        weights: vec![],
        out: vec![2, 5, 1, 1],
    };
    let make =
        |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::GlobalAvgPool { x: xs[0], y };
    check(gpu, &case, &make, "global_avg_pool");
}

#[test]
fn pointwise_kernels_match_the_cpu() {
    if let Some(mut gpu) = cuda() {
        pointwise_kernels_match_the_cpu_on(&mut gpu);
    }
}

fn pointwise_kernels_match_the_cpu_on(gpu: &mut dyn Backend) {
    let x = vec![1, 4, 6, 5];
    let acts = [
        Activation::Relu,
        Activation::Clip { min: -0.5, max: 0.5 },
        Activation::LeakyRelu { alpha: 0.2 },
        Activation::Sigmoid,
        Activation::HardSigmoid { alpha: 0.2, beta: 0.5 },
        Activation::HardSwish,
        Activation::Tanh,
        Activation::Erf,
    ];
    for act in acts {
        let case =
            Case { inputs: vec![(x.clone(), data(120, 6))], weights: vec![], out: x.clone() };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Unary {
            act,
            x: xs[0],
            y,
        };
        let whole = check(gpu, &case, &make, &format!("{act:?}"));
        let got = run_bands(gpu, &case, &make, 2, 3, &|r0, r1| (r0, r1));
        assert_bits(&got, &whole, &format!("{act:?} by bands"));
    }
    let case = Case {
        inputs: vec![(x.clone(), data(120, 7))],
        weights: vec![Tensor::from_f32(vec![4], data(4, 8)), Tensor::from_f32(vec![4], data(4, 9))],
        out: x.clone(),
    };
    let make = |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Affine {
        act: Some(Activation::Relu),
        x: xs[0],
        scale: ws[0],
        shift: ws[1],
        y,
    };
    check(gpu, &case, &make, "affine");
}

#[test]
fn broadcasting_binary_ops_match_the_cpu() {
    if let Some(mut gpu) = cuda() {
        broadcasting_binary_ops_match_the_cpu_on(&mut gpu);
    }
}

fn broadcasting_binary_ops_match_the_cpu_on(gpu: &mut dyn Backend) {
    let kinds =
        [BinaryKind::Add, BinaryKind::Sub, BinaryKind::Mul, BinaryKind::Div, BinaryKind::PRelu];
    for kind in kinds {
        let op = leak(Binary { kind, act: None });
        // Arena x arena with a per-channel operand.
        let case = Case {
            inputs: vec![(vec![2, 4, 6, 5], data(240, 10)), (vec![1, 4, 1, 1], data(4, 11))],
            weights: vec![],
            out: vec![2, 4, 6, 5],
        };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Binary {
            op,
            a: Operand::Arena(xs[0]),
            b: Operand::Arena(xs[1]),
            y,
        };
        check(gpu, &case, &make, &format!("{kind:?} arena"));
        // Arena x weight broadcast along the last axis.
        let case = Case {
            inputs: vec![(vec![3, 6, 5], data(90, 12))],
            weights: vec![Tensor::from_f32(vec![5], data(5, 13))],
            out: vec![3, 6, 5],
        };
        let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Binary {
            op,
            a: Operand::Arena(xs[0]),
            b: Operand::Weight(ws[0]),
            y,
        };
        check(gpu, &case, &make, &format!("{kind:?} weight"));
    }
}

#[test]
fn layout_kernels_match_the_cpu() {
    if let Some(mut gpu) = cuda() {
        layout_kernels_match_the_cpu_on(&mut gpu);
    }
}

fn layout_kernels_match_the_cpu_on(gpu: &mut dyn Backend) {
    for axis in 0..4 {
        let mut a = vec![2, 3, 4, 5];
        let mut b = a.clone();
        b[axis] = 2;
        let mut out = a.clone();
        out[axis] += 2;
        a.truncate(4);
        let case = Case {
            inputs: vec![
                (a.clone(), data(a.iter().product(), 14)),
                (b.clone(), data(b.iter().product(), 15)),
            ],
            weights: vec![],
            out,
        };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Concat {
            axis,
            xs: Box::leak(xs.to_vec().into_boxed_slice()),
            y,
        };
        check(gpu, &case, &make, &format!("concat axis {axis}"));
    }
    for perm in [[0, 2, 3, 1], [0, 2, 1, 3], [1, 0, 2, 3]] {
        let perm: &'static [usize] = Box::leak(Box::new(perm));
        let x = [2, 3, 4, 5];
        let case = Case {
            inputs: vec![(x.to_vec(), data(120, 16))],
            weights: vec![],
            out: perm.iter().map(|&p| x[p]).collect(),
        };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Transpose {
            perm,
            x: xs[0],
            y,
        };
        check(gpu, &case, &make, &format!("transpose {perm:?}"));
    }
    let case = Case {
        inputs: vec![(vec![1, 6, 4, 5], data(120, 17))],
        weights: vec![],
        out: vec![1, 24, 5],
    };
    let make = |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Copy {
        x: Operand::Arena(xs[0]),
        y,
    };
    check(gpu, &case, &make, "copy (reshape)");
    let case = Case {
        inputs: vec![],
        weights: vec![Tensor::from_f32(vec![4, 6], data(24, 18))],
        out: vec![2, 3, 4],
    };
    let make = |_: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Copy {
        x: Operand::Weight(ws[0]),
        y,
    };
    check(gpu, &case, &make, "copy (constant)");
}

#[test]
fn resize_matches_the_cpu_whole_and_by_bands() {
    if let Some(mut gpu) = cuda() {
        resize_matches_the_cpu_whole_and_by_bands_on(&mut gpu);
    }
}

fn resize_matches_the_cpu_whole_and_by_bands_on(gpu: &mut dyn Backend) {
    for (mode, coord) in [
        (ResizeMode::Nearest, CoordMode::Asymmetric),
        (ResizeMode::Linear, CoordMode::HalfPixel),
        (ResizeMode::Linear, CoordMode::AlignCorners),
    ] {
        let op = leak(Resize {
            mode,
            coord,
            nearest: NearestMode::Floor,
            scales: [2.0, 2.0],
            size: [14, 12],
        });
        let x = [1, 3, 7, 6];
        let case = Case {
            inputs: vec![(x.to_vec(), data(126, 19))],
            weights: vec![],
            out: vec![1, 3, 14, 12],
        };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Resize {
            op,
            x: xs[0],
            y,
        };
        let whole = check(gpu, &case, &make, &format!("resize {mode:?} {coord:?}"));
        let needs = |r0: usize, r1: usize| {
            (r0..r1).fold((usize::MAX, 0), |(l, h), o| {
                let (a, b) = op.rows_read(o, x[2]);
                (l.min(a), h.max(b))
            })
        };
        let got = run_bands(gpu, &case, &make, 3, 4, &needs);
        assert_bits(&got, &whole, &format!("resize {mode:?} by bands"));
    }
}

#[test]
fn dense_kernels_match_the_cpu() {
    if let Some(mut gpu) = cuda() {
        dense_kernels_match_the_cpu_on(&mut gpu);
    }
}

fn dense_kernels_match_the_cpu_on(gpu: &mut dyn Backend) {
    for (trans_a, trans_b) in [(false, false), (false, true), (true, false)] {
        let op =
            leak(Gemm { alpha: 0.5, beta: 2.0, trans_a, trans_b, act: Some(Activation::Relu) });
        let a = if trans_a { vec![7, 3] } else { vec![3, 7] };
        let b = if trans_b { vec![5, 7] } else { vec![7, 5] };
        let case = Case {
            inputs: vec![(a, data(21, 20))],
            weights: vec![
                Tensor::from_f32(b, data(35, 21)),
                Tensor::from_f32(vec![5], data(5, 22)),
            ],
            out: vec![3, 5],
        };
        let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Gemm {
            op,
            a: xs[0],
            b: ws[0],
            c: Some(ws[1]),
            y,
        };
        check(gpu, &case, &make, &format!("gemm {trans_a} {trans_b}"));
    }
    let op = leak(MatMul { act: None });
    let case = Case {
        inputs: vec![(vec![2, 1, 3, 4], data(24, 23)), (vec![5, 4, 6], data(120, 24))],
        weights: vec![],
        out: vec![2, 5, 3, 6],
    };
    let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::MatMul {
        op,
        a: Operand::Arena(xs[0]),
        b: Operand::Arena(xs[1]),
        y,
    };
    check(gpu, &case, &make, "matmul arena x arena");
    let case = Case {
        inputs: vec![(vec![3, 8], data(24, 25))],
        weights: vec![Tensor::from_f32(vec![8, 4], data(32, 26))],
        out: vec![3, 4],
    };
    let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::MatMul {
        op,
        a: Operand::Arena(xs[0]),
        b: Operand::Weight(ws[0]),
        y,
    };
    check(gpu, &case, &make, "matmul arena x weight");
}

#[test]
fn reductions_match_the_cpu() {
    if let Some(mut gpu) = cuda() {
        reductions_match_the_cpu_on(&mut gpu);
    }
}

fn reductions_match_the_cpu_on(gpu: &mut dyn Backend) {
    for (kind, axes, keepdims) in [
        (ReduceKind::Mean, vec![2, 3], true),
        (ReduceKind::Sum, vec![1], false),
        (ReduceKind::Max, vec![0, 3], false),
    ] {
        let op = leak(Reduce { kind, axes: axes.clone(), keepdims });
        let x = [2, 3, 4, 5];
        let out: Vec<usize> = (0..4)
            .filter(|a| keepdims || !axes.contains(a))
            .map(|a| if axes.contains(&a) { 1 } else { x[a] })
            .collect();
        let case = Case { inputs: vec![(x.to_vec(), data(120, 27))], weights: vec![], out };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Reduce {
            op,
            x: xs[0],
            y,
        };
        check(gpu, &case, &make, &format!("reduce {kind:?} {axes:?}"));
    }
    for (axis, coerce_2d) in [(1, false), (3, false), (1, true)] {
        let op = leak(Softmax { axis, coerce_2d });
        let case = Case {
            inputs: vec![(vec![2, 3, 4, 5], data(120, 28))],
            weights: vec![],
            out: vec![2, 3, 4, 5],
        };
        let make = move |xs: &[RowWindow], _: &[WeightRef], y: RowWindow| Kernel::Softmax {
            op,
            x: xs[0],
            y,
        };
        check(gpu, &case, &make, &format!("softmax {axis} {coerce_2d}"));
    }
}

#[test]
fn host_mapped_io_gives_the_same_bits() {
    let Some(mut gpu) = cuda() else { return };
    let Some(mut gpu2) = device(CudaOptions { device: 0, host_mapped_io: true }) else { return };
    let op = leak(conv(3, 1, 1, 1, 1, Some(Activation::Relu)));
    let case = conv_case(op, [1, 4, 12, 10], 6, true);
    let make = move |xs: &[RowWindow], ws: &[WeightRef], y: RowWindow| Kernel::Conv {
        op,
        x: xs[0],
        w: ws[0],
        b: ws.get(1).copied(),
        r: None,
        y,
    };
    let a = run_whole(&mut gpu, &case, &make);
    let b = run_whole(&mut gpu2, &case, &make);
    assert_bits(&b, &a, "host-mapped I/O");
}

#[test]
fn feeds_and_drains_move_only_the_window_rows() {
    for mapped in [false, true] {
        let Some(mut gpu) = device(CudaOptions { device: 0, host_mapped_io: mapped }) else {
            return;
        };
        feeds_and_drains_move_only_the_window_rows_on(&mut gpu);
    }
}

/// One-row feeds into a 3-row ring, each drained with the rows the ring still holds; ten
/// one-row feeds queued before one drain (more feeds than the backend has staging slots);
/// host tensors that hold only some rows. Rows of the host buffer outside a drained window
/// keep their values.
fn feeds_and_drains_move_only_the_window_rows_on(b: &mut dyn Backend) {
    let (planes, h, w) = (2, 10, 5);
    let d = dims(&[1, planes, h, w]);
    let host = data(planes * h * w, 7);
    let row = |buf: &[f32], rows: usize, lo: usize, p: usize, r: usize| -> Vec<u32> {
        let at = (p * rows + r - lo) * w;
        buf[at..at + w].iter().map(|v| v.to_bits()).collect()
    };
    let win = |capacity: usize, first_row: usize, rows: usize| RowWindow {
        offset: 0,
        dtype: DType::F32,
        dims: d,
        capacity,
        row_stride: w,
        first_row,
        rows,
    };
    b.alloc_arena(planes * h * w * 4).unwrap();
    for r in 0..h {
        b.write(&win(3, r, 1), &host, 0..h).unwrap();
        let lo = r.saturating_sub(2);
        let mut got = vec![-7.0f32; planes * h * w];
        b.read(&win(3, lo, r + 1 - lo), &mut got, 0..h).unwrap();
        for p in 0..planes {
            for q in 0..h {
                let want = if (lo..=r).contains(&q) {
                    row(&host, h, 0, p, q)
                } else {
                    vec![(-7.0f32).to_bits(); w]
                };
                assert_eq!(row(&got, h, 0, p, q), want, "ring: fed row {r}, plane {p}, row {q}");
            }
        }
    }
    for r in 0..h {
        b.write(&win(h, r, 1), &host, 0..h).unwrap();
    }
    let mut got = vec![0.0f32; planes * h * w];
    b.read(&win(h, 0, h), &mut got, 0..h).unwrap();
    assert_bits(&got, &host, "ten feeds, one drain");
    // The host holds rows 4..8 only; the window has rows 5..7.
    let sub: Vec<f32> =
        (0..planes).flat_map(|p| host[(p * h + 4) * w..(p * h + 8) * w].to_vec()).collect();
    b.write(&win(h, 5, 2), &sub, 4..8).unwrap();
    let mut back = vec![-7.0f32; planes * 4 * w];
    b.read(&win(h, 5, 2), &mut back, 4..8).unwrap();
    for p in 0..planes {
        for q in 4..8 {
            let want = if (5..7).contains(&q) {
                row(&sub, 4, 4, p, q)
            } else {
                vec![(-7.0f32).to_bits(); w]
            };
            assert_eq!(row(&back, 4, 4, p, q), want, "partial host rows: plane {p}, row {q}");
        }
    }
}

#[test]
fn bad_calls_are_errors_not_crashes() {
    let Some(mut gpu) = cuda() else { return };
    gpu.alloc_arena(1024).unwrap();
    let x = RowWindow::whole(0, DType::F32, dims(&[1, 1, 100, 100]));
    let y = RowWindow::whole(0, DType::F32, dims(&[1, 1, 100, 100]));
    let k = Kernel::Unary { act: Activation::Relu, x, y };
    assert!(gpu.execute(&k, Scratch::default()).is_err(), "outside the arena");
    let h = RowWindow::whole(0, DType::F16, dims(&[1, 1, 4, 4]));
    let k = Kernel::Unary { act: Activation::Relu, x: h, y: h };
    assert!(gpu.execute(&k, Scratch::default()).is_err(), "f16 storage");
}

/// The harness itself, with the CPU backend as the device under test (runs everywhere): the
/// cases are well formed, the bands and rings hold the rows each call needs, and the CPU gives
/// the same bits by bands as whole.
#[test]
fn the_harness_is_sound_on_the_cpu() {
    let mut cpu = CpuBackend::new();
    convolutions_match_the_cpu_whole_and_by_bands_on(&mut cpu);
    residual_convolution_adds_before_the_activation_on(&mut cpu);
    transposed_convolution_matches_the_cpu_on(&mut cpu);
    pooling_matches_the_cpu_whole_and_by_bands_on(&mut cpu);
    pointwise_kernels_match_the_cpu_on(&mut cpu);
    broadcasting_binary_ops_match_the_cpu_on(&mut cpu);
    layout_kernels_match_the_cpu_on(&mut cpu);
    resize_matches_the_cpu_whole_and_by_bands_on(&mut cpu);
    dense_kernels_match_the_cpu_on(&mut cpu);
    reductions_match_the_cpu_on(&mut cpu);
    feeds_and_drains_move_only_the_window_rows_on(&mut cpu);
}
