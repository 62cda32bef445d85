//! f16 storage on wgpu (where the adapter has SHADER_F16): close to the CPU's f16 storage, and
//! by parts bit-identical to layer by layer. Without the feature, an f16 plan is a clear error.

mod common;

use frugal_core::{zoo, DType, PlanOptions};

fn f16(options: PlanOptions) -> PlanOptions {
    PlanOptions { storage: DType::F16, ..options }
}

#[test]
fn f16_storage_matches_cpu_and_by_parts_is_bit_identical() {
    let g = zoo::by_name("se_net", 48, 40, 3).unwrap();
    let input = common::seeded(3 * 48 * 40, 9);
    let Some(gpu) = common::gpu() else { return };
    if !gpu.has_f16() {
        let err = common::run(&g, &f16(common::lbl()), Box::new(gpu), &input).unwrap_err();
        println!("adapter without SHADER_F16: {err}");
        assert!(err.to_string().contains("SHADER_F16"), "{err}");
        return;
    }
    println!("adapter {} has SHADER_F16", gpu.adapter());
    let want = common::cpu(&g, &f16(common::lbl()), &input);
    let got = common::run(&g, &f16(common::lbl()), Box::new(gpu), &input).unwrap();
    let e = common::rel_err(&got[0], &want[0]);
    println!("f16 storage: wgpu vs cpu relative error {e:e}");
    assert!(e <= 1e-2, "{e:e}");
    let bp =
        common::run(&g, &f16(common::parts(2)), Box::new(common::gpu().unwrap()), &input).unwrap();
    assert_eq!(common::ulp_diff(&bp[0], &got[0]).0, 0, "f16 by parts differs from layer by layer");
}

/// Column strips in f16 storage: MobileNetV2's shortcuts read views (columns of a wider f16
/// map, in place, a row stride apart), and the output is the bits of f16 layer by layer.
#[test]
fn f16_column_strips_with_views_give_layer_by_layers_bits() {
    let g = zoo::by_name("mobilenet_v2", 64, 64, 3).unwrap();
    let input = common::seeded(3 * 64 * 64, 11);
    let Some(gpu) = common::gpu() else { return };
    if !gpu.has_f16() {
        println!("adapter without SHADER_F16: f16 strips not run");
        return;
    }
    let strips = frugal_core::plan::strips::smallest(&g, &f16(common::parts(1)), 3).unwrap();
    let effective = frugal_core::plan::recompute::effective(&g, &strips).unwrap();
    assert!(!effective.views.is_empty(), "MobileNetV2's three strips read views");
    let want = common::run(&g, &f16(common::lbl()), Box::new(gpu), &input).unwrap();
    let got = common::run(&g, &strips, Box::new(common::gpu().unwrap()), &input).unwrap();
    assert_eq!(common::ulp_diff(&got[0], &want[0]).0, 0, "f16 strips differ from layer by layer");
}
