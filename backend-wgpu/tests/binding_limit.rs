//! The text detector at an input whose layer-by-layer tensors exceed the storage binding limit:
//! layer by layer fails with a clear error naming the limit, by parts runs and matches the CPU.
//!
//! To keep the test small and fast on a software rasteriser, the device is requested with a
//! lowered `max_storage_buffer_binding_size` (1.75 MiB instead of the adapter's own limit, or
//! WebGPU's default of 128 MiB, which the same model exceeds layer by layer beyond 2048x2048);
//! the mechanism is the same at any limit: whole tensors are bound whole, by parts binds ring
//! buffers a few rows high.

mod common;

use frugal_core::{onnx, ImportOptions, Plan};
use frugal_wgpu::WgpuOptions;

/// 1.75 MiB: above the largest buffer by parts keeps at this size (1.5 MiB, an FPN skip held
/// whole), below the largest whole tensor (2 MiB).
const LIMIT: u64 = 7 << 18;

#[test]
fn text_detector_runs_by_parts_beyond_the_binding_limit() {
    let shape = [1, 3, 256, 256];
    let g = onnx::load(
        common::repo("models/ch_PP-OCRv4_det_infer.onnx"),
        &ImportOptions::with_input_shape(&shape),
    )
    .unwrap();
    let opts = WgpuOptions { max_binding_bytes: Some(LIMIT), ..Default::default() };
    let Some(gpu) = common::gpu_with(&opts) else { return };
    let limit = frugal_core::Backend::capabilities(&gpu).max_binding_bytes;
    assert_eq!(limit, LIMIT);
    let largest = |p: &Plan| p.buffers.iter().map(|b| b.bytes).max().unwrap_or(0) as u64;
    let lbl_plan = Plan::build(&g, &common::lbl()).unwrap();
    let bp_options = common::parts(4);
    let bp_plan = Plan::build(&g, &bp_options).unwrap();
    println!(
        "text detector {shape:?}: largest buffer layer by layer {} bytes, by parts {} bytes, \
         binding limit {limit}",
        largest(&lbl_plan),
        largest(&bp_plan)
    );
    assert!(largest(&lbl_plan) > limit, "the input is too small to exceed the limit");
    assert!(largest(&bp_plan) < limit, "by parts would not fit the limit either");
    let input = common::seeded(shape.iter().product(), 11);

    let err = common::run(&g, &common::lbl(), Box::new(gpu), &input).unwrap_err().to_string();
    println!("layer by layer: {err}");
    assert!(err.contains("max_storage_buffer_binding_size"), "{err}");
    assert!(err.contains("by-parts"), "{err}");

    let gpu = common::gpu_with(&opts).unwrap();
    let got = common::run(&g, &bp_options, Box::new(gpu), &input).expect("by parts on wgpu");
    let want = common::cpu(&g, &bp_options, &input);
    for (o, (a, b)) in got.iter().zip(&want).enumerate() {
        let e = common::rel_err(a, b);
        println!("output {o}: wgpu by parts vs cpu by parts, relative error {e:e}");
        assert!(e <= 1e-4, "output {o}: {e:e}");
    }
}

/// At WebGPU's default binding limit (128 MiB, also lavapipe's), the text detector at
/// 2304x2304 has whole tensors over the limit and by-parts buffers under it (plans only: running
/// it on a software rasteriser would take minutes).
#[test]
fn at_the_webgpu_default_limit_2304x2304_needs_by_parts() {
    let shape = [1, 3, 2304, 2304];
    let g = onnx::load(
        common::repo("models/ch_PP-OCRv4_det_infer.onnx"),
        &ImportOptions::with_input_shape(&shape),
    )
    .unwrap();
    let largest = |p: &Plan| p.buffers.iter().map(|b| b.bytes).max().unwrap_or(0) as u64;
    let lbl = largest(&Plan::build(&g, &common::lbl()).unwrap());
    let bp = largest(&Plan::build(&g, &common::parts(4)).unwrap());
    println!("2304x2304: largest buffer layer by layer {lbl} bytes, by parts {bp} bytes");
    let webgpu_default = 128 << 20;
    assert!(lbl > webgpu_default && bp < webgpu_default, "{lbl} {bp}");
}
