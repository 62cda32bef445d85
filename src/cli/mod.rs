//! Command-line interface: one file per subcommand.

mod bench;
mod export;
mod plan;
mod run;

use clap::{Parser, Subcommand};

/// Run convolutional neural networks by parts, in a fraction of the memory.
#[derive(Debug, Parser)]
#[command(name = "frugal", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a model on inputs (images or .npy) and print a summary and the memory used.
    Run(Box<run::RunArgs>),
    /// Report value sizes and each strategy's peak memory, without running.
    Plan(plan::PlanArgs),
    /// Write a model (zoo network or normalised import) as an ONNX file.
    Export(export::ExportArgs),
    /// Measure a plan's throughput and memory.
    Bench(bench::BenchArgs),
}

/// Runs the chosen subcommand (`run` on the bundled model when none is given).
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => run::run(run::RunArgs::default()),
        Some(Command::Run(a)) => run::run(*a),
        Some(Command::Plan(a)) => plan::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::Bench(a)) => bench::run(a),
    }
}

/// Parses a strategy name for clap.
fn parse_strategy(s: &str) -> Result<frugal::Strategy, String> {
    frugal::Strategy::parse(s).map_err(|e| e.to_string())
}

/// A tensor shape on the command line (`1,3,224,224`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeArg(pub Vec<usize>);

/// Parses a shape for clap.
fn parse_shape(s: &str) -> Result<ShapeArg, String> {
    frugal::model::parse_shape(s).map(ShapeArg).map_err(|e| e.to_string())
}
