//! Command-line interface: one file per subcommand.

mod backends;
mod bench;
mod export;
mod pareto;
mod plan;
mod profile;
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
    /// Time the kernels a model needs on this machine (cached) and check the predictions.
    Profile(profile::ProfileArgs),
    /// The measured memory/throughput trade-off curve, as a table, SVG or JSON.
    Pareto(pareto::ParetoArgs),
    /// The backends this build has, their devices and limits, and why any cannot run here.
    Backends(backends::BackendsArgs),
}

/// Runs the chosen subcommand (`run` on the bundled model when none is given).
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        None => run::run(run::RunArgs::default()),
        Some(Command::Run(a)) => run::run(*a),
        Some(Command::Plan(a)) => plan::run(a),
        Some(Command::Export(a)) => export::run(a),
        Some(Command::Bench(a)) => bench::run(a),
        Some(Command::Profile(a)) => profile::run(a),
        Some(Command::Pareto(a)) => pareto::run(a),
        Some(Command::Backends(a)) => backends::run(a),
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

/// How to pick the plan: a strategy, or a budget / throughput target for the planner.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TargetArgs {
    /// Execution strategy: naive, layer-by-layer, by-parts, published [default: layer-by-layer].
    #[arg(long, value_parser = parse_strategy)]
    pub strategy: Option<frugal::Strategy>,
    /// By parts: rows each node produces per firing [default: 1].
    #[arg(long)]
    pub part_rows: Option<usize>,
    /// By parts: run the first stage (up to the map where that gives the smallest peak) in N
    /// column strips, one after another: less memory than rows alone reach, for some columns
    /// computed twice. The same bits.
    #[arg(long)]
    pub strips: Option<usize>,
    /// The fastest plan whose activations and scratch fit in SIZE (512KiB, 2MB, ...), chosen
    /// from measured kernel timings (profiled on first use and cached).
    #[arg(long, value_parser = parse_size)]
    pub budget: Option<usize>,
    /// The smallest plan predicted to hold N runs per second.
    #[arg(long)]
    pub min_throughput: Option<f64>,
    /// CPU threads [default: FRUGAL_THREADS or all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the plan in N lanes, 1 or 2: with 2, two threads fire different nodes at once (a
    /// front and a back half of the model, each on its own backend and arena, the threads
    /// shared between them). The same bits; more memory (both arenas, the channels)
    /// [default: the plan's own: 2 for a plan the planner chose in two lanes, else 1].
    #[arg(long)]
    pub lanes: Option<usize>,
    /// Storage of activations: f32, or f16 (computed in f32, stored in half: half the memory).
    #[arg(long, value_parser = parse_storage)]
    pub storage: Option<frugal::DType>,
    /// Backend: cpu (default), wgpu, cuda, gpu-or-cpu, plugin:PATH, or plugin:NAME (a plugin
    /// found on FRUGAL_PLUGIN_PATH; `frugal backends` lists them).
    #[arg(long)]
    pub backend: Option<String>,
    /// Refuse plans whose weights plus activations and scratch exceed SIZE (checked before
    /// anything is allocated).
    #[arg(long, value_parser = parse_size)]
    pub max_memory: Option<usize>,
}

/// Parses a storage type for clap.
fn parse_storage(s: &str) -> Result<frugal::DType, String> {
    match s {
        "f32" => Ok(frugal::DType::F32),
        "f16" => Ok(frugal::DType::F16),
        other => Err(format!("'{other}': storage is f32 or f16")),
    }
}

/// Parses a size for clap.
fn parse_size(s: &str) -> Result<usize, String> {
    frugal::format::parse_bytes(s).map_err(|e| e.to_string())
}

impl TargetArgs {
    /// Backend options from the flags.
    pub fn backend_options(&self) -> frugal::BackendOptions {
        match self.threads {
            Some(t) => frugal::BackendOptions { threads: t.max(1) },
            None => frugal::BackendOptions::default(),
        }
    }

    /// A session of `plan` on `backend` (forked for a second lane) and the lanes the flags ask
    /// for. It takes the weights out of `graph` (names and shapes stay): the backend's copies
    /// are then the only ones, so a weight the backend repacks is not held twice.
    pub fn session_on(
        &self,
        graph: &mut frugal::Graph,
        plan: &frugal::Plan,
        backend: Box<dyn frugal::Backend>,
    ) -> anyhow::Result<frugal::Session> {
        let threads = self.backend_options().threads;
        // Without --lanes, the plan's own choice (the planner may price a plan in two lanes),
        // where there are two threads for it.
        let (lanes, per_lane) = match self.lanes {
            Some(lanes) => (lanes, (threads / lanes.max(1)).max(1)),
            None if threads >= 2 => frugal::Session::plan_lanes(plan),
            None => (1, threads),
        };
        Ok(frugal::Session::with_lanes_taking_weights(graph, plan, backend, lanes, per_lane)?)
    }

    /// A new backend instance as the flags ask.
    pub fn backend(&self) -> anyhow::Result<Box<dyn frugal::Backend>> {
        Ok(frugal::backend_with(self.backend.as_deref().unwrap_or("cpu"), &self.backend_options())?)
    }

    /// The plan saved at `path` (`frugal plan --save`), checked against `--max-memory` on
    /// `backend`.
    pub fn saved_plan(
        &self,
        path: &std::path::Path,
        graph: &frugal::Graph,
        backend: &dyn frugal::Backend,
    ) -> anyhow::Result<frugal::Plan> {
        use anyhow::Context;
        let json =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let plan = frugal::Plan::from_json(&json)?;
        frugal::planning::check_max_memory(graph, &plan, backend, self.max_memory)?;
        Ok(plan)
    }

    /// The planning target the flags ask for.
    pub fn target(&self) -> frugal::planning::Target {
        frugal::planning::Target {
            strategy: self.strategy,
            part_rows: self.part_rows.unwrap_or(1),
            budget: self.budget,
            min_throughput: self.min_throughput,
            storage: self.storage.unwrap_or(frugal::DType::F32),
            max_memory: self.max_memory,
            strips: self.strips,
        }
    }

    /// The plan the flags ask for; profiling (when needed) uses its own backend instance.
    pub fn plan(
        &self,
        graph: &frugal::Graph,
    ) -> anyhow::Result<(frugal::Plan, Option<frugal::planner::Candidate>)> {
        let target = self.target();
        let mut profiling = self.backend()?;
        let mut bar = Progress::default();
        Ok(frugal::planning::plan_for(graph, &target, &mut *profiling, &mut |what, d, t| {
            bar.update(what, d, t)
        })?)
    }
}

/// A progress bar that appears only when the work has already taken a second.
#[derive(Default)]
pub struct Progress {
    started: Option<std::time::Instant>,
    bar: Option<indicatif::ProgressBar>,
    what: String,
}

impl Progress {
    /// Reports `done` of `total` units of `what`.
    pub fn update(&mut self, what: &str, done: usize, total: usize) {
        let started = *self.started.get_or_insert_with(std::time::Instant::now);
        if self.what != what {
            if let Some(b) = self.bar.take() {
                b.finish_and_clear();
            }
            self.what = what.to_string();
        }
        if self.bar.is_none() && started.elapsed().as_secs_f64() > 1.0 && done < total {
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{msg:>18} [{bar:30}] {pos}/{len} {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(what.to_string());
            self.bar = Some(b);
        }
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(done as u64);
            if done >= total {
                b.finish_and_clear();
                self.bar = None;
            }
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Progress({})", self.what)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// Loads a model and its measured profile (profiling what the cache lacks), for the commands
/// that search plans; returns the profiling backend too (its device names the profile).
pub fn load_profiled(
    model: &str,
    shape: Option<&ShapeArg>,
    target: &TargetArgs,
    fresh: bool,
    bar: &mut Progress,
) -> anyhow::Result<(frugal::Graph, Box<dyn frugal::Backend>, frugal::planner::Profile)> {
    use anyhow::Context;
    let graph = frugal::model::load(Some(model), shape.map(|s| s.0.as_slice()))
        .with_context(|| format!("loading {model}"))?;
    let mut backend = target.backend()?;
    let mut progress = |d, t| bar.update("profiling kernels", d, t);
    let profile = if fresh {
        frugal::planning::profile_again(&graph, &mut *backend, &mut progress)?
    } else {
        frugal::planning::profile_for(&graph, &mut *backend, &mut progress)?
    };
    Ok((graph, backend, profile))
}
