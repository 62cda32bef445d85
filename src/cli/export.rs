//! `frugal export`: write a model (a zoo network, or an ONNX file after import and
//! normalisation) as an ONNX file that onnxruntime can run.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use frugal::{format, model, onnx};

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// zoo:NAME or an ONNX file.
    model: String,
    /// Where to write the .onnx file.
    #[arg(long, short)]
    output: PathBuf,
    /// Input shape, e.g. 1,3,224,224.
    #[arg(long, value_parser = super::parse_shape)]
    input_shape: Option<super::ShapeArg>,
}

pub fn run(a: ExportArgs) -> anyhow::Result<()> {
    let graph = model::load(Some(&a.model), a.input_shape.as_ref().map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {}", a.model))?;
    onnx::export::save(&graph, &a.output)?;
    println!(
        "wrote {} ({} nodes, {} of weights, opset {})",
        a.output.display(),
        graph.nodes.len(),
        format::bytes(graph.weight_bytes()),
        onnx::export::EXPORT_OPSET
    );
    Ok(())
}
