//! Planning with measurements: the per-machine profile cache and the choice of a plan for a
//! memory budget or a throughput target.

use std::path::PathBuf;

use frugal_core::plan::strips;
use frugal_core::planner::{self, Candidate, Profile};
use frugal_core::{Backend, Graph, Plan, PlanOptions, Result, Strategy};

/// What the user asks of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// An explicit strategy (when no budget or throughput is given).
    pub strategy: Option<Strategy>,
    /// By parts: rows per firing.
    pub part_rows: usize,
    /// The fastest plan whose session fits in this many bytes.
    pub budget: Option<usize>,
    /// The smallest plan predicted to hold this many runs per second.
    pub min_throughput: Option<f64>,
    /// Storage type of activations (f32 or f16).
    pub storage: frugal_core::DType,
    /// Refuse plans whose weights plus arena exceed this many bytes.
    pub max_memory: Option<usize>,
    /// By parts: the first stage in this many column strips ([`frugal_core::plan::strips`]).
    pub strips: Option<usize>,
}

impl Default for Target {
    fn default() -> Self {
        Target {
            strategy: None,
            part_rows: 1,
            budget: None,
            min_throughput: None,
            storage: frugal_core::DType::F32,
            max_memory: None,
            strips: None,
        }
    }
}

/// Where profiles are cached: `$FRUGAL_CACHE_DIR`, else `$XDG_CACHE_HOME/frugal`, else
/// `~/.cache/frugal`, one file per backend device.
pub fn profile_path(device: &str) -> PathBuf {
    let dir = std::env::var_os("FRUGAL_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("frugal")))
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("frugal"))
        })
        .unwrap_or_else(|| std::env::temp_dir().join("frugal"));
    let name: String = device
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect();
    dir.join(format!("profile-{name}.json"))
}

/// The cached profile for `backend`, completed with whatever `graph` needs (measured now).
pub fn profile_for(
    graph: &Graph,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Profile> {
    let (path, mut profile) = cached(backend);
    if !profile.missing(graph).is_empty()
        || profile.step_overhead == 0.0
        || profile.f16_staging.is_none()
        || profile.lacks_cold(graph)
    {
        profile.measure(graph, backend, progress)?;
        // A cache that cannot be written only costs a re-measurement next time.
        let _ = profile.save(&path);
    }
    Ok(profile)
}

/// [`profile_for`], measuring everything `graph` needs again (the machine-wide step overhead
/// too) and replacing it in the cache: a profile taken while the machine was busy stays
/// cached, and mispredicts, until then.
pub fn profile_again(
    graph: &Graph,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Profile> {
    let (path, mut profile) = cached(backend);
    profile.forget(graph);
    profile.step_overhead = 0.0;
    profile.f16_staging = None;
    profile.measure(graph, backend, progress)?;
    profile.save(&path)?;
    Ok(profile)
}

/// The cache file for `backend` and what it holds (empty if absent, unreadable or of another
/// revision).
fn cached(backend: &dyn Backend) -> (PathBuf, Profile) {
    let path = profile_path(&backend.capabilities().device);
    let revision = frugal_core::planner::profile::revision_of(backend);
    let profile = Profile::load(&path).ok().filter(|p| p.revision == revision).unwrap_or_default();
    (path, profile)
}

/// The plan `target` asks for, and the candidate it came from when the planner chose it.
pub fn plan_for(
    graph: &Graph,
    target: &Target,
    backend: &mut dyn Backend,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(Plan, Option<Candidate>)> {
    if target.budget.is_none() && target.min_throughput.is_none() {
        let plan = Plan::build(graph, &options_for(graph, target)?)?;
        check_max_memory(graph, &plan, backend, target.max_memory)?;
        return Ok((plan, None));
    }
    if target.strips.is_some() {
        return Err(frugal_core::Error::Plan(
            "--strips sets the plan itself; with --budget the planner tries column strips on \
             its own where rows alone do not fit"
                .into(),
        ));
    }
    let mut profile = profile_for(graph, backend, &mut |d, t| progress("profiling kernels", d, t))?;
    let base = PlanOptions { storage: target.storage, ..PlanOptions::default() };
    let mut front = planner::front(graph, &profile, backend, &base, &mut |d, t| {
        progress("searching plans", d, t)
    })?;
    if let (Some(b), None) = (target.budget, target.min_throughput) {
        if front.iter().all(|c| c.arena_bytes > b) {
            front.extend(strips_within(graph, &mut profile, backend, &front, b, progress)?);
            front = planner::pareto(front);
        }
    }
    let chosen = match (target.budget, target.min_throughput) {
        (Some(b), None) => planner::fastest_within(&front, b)?,
        (None, Some(t)) => planner::smallest_holding(&front, t)?,
        (Some(b), Some(t)) => {
            let c = planner::smallest_holding(&front, t)?;
            if c.arena_bytes > b {
                return Err(frugal_core::Error::OutOfBudget { needed: c.arena_bytes, budget: b });
            }
            c
        }
        (None, None) => unreachable!("handled above"),
    };
    let plan = chosen.plan(graph)?;
    check_max_memory(graph, &plan, backend, target.max_memory)?;
    Ok((plan, Some(chosen.clone())))
}

/// For a budget below every plan of `front`: a by-parts plan with its first stage in column
/// strips that fits, the fastest of those tried by [`Profile::estimate_strips`] (strip
/// kernels priced from their whole-width originals), its kernels then profiled. Fewest strips
/// first: each strip fires every node of the stage again on narrower rows, so the first count
/// with a plan that fits is the last one tried. Where none fits, a refusal naming the least
/// memory strips reach (or rows, if less). Nothing where the model has no stem to strip.
pub fn strips_within(
    graph: &Graph,
    profile: &mut Profile,
    backend: &mut dyn Backend,
    front: &[Candidate],
    budget: usize,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Option<Candidate>> {
    let by_parts = front
        .iter()
        .filter(|c| c.options.strategy == Strategy::ByParts && c.options.lanes.is_empty());
    let Some(smallest) = by_parts.min_by_key(|c| c.arena_bytes) else { return Ok(None) };
    // A tried plan: its session's bytes, its options (cuts as built) and, if it fits, its
    // estimated seconds.
    struct Tried {
        bytes: usize,
        options: PlanOptions,
        seconds: Option<f64>,
    }
    let try_plan = |o: &PlanOptions| -> Result<Tried> {
        let plan = Plan::build(graph, o)?;
        let bytes = frugal_core::session_bytes(graph, &plan, backend)?;
        let seconds =
            if bytes <= budget { Some(profile.estimate_strips(graph, &plan)?) } else { None };
        Ok(Tried { bytes, options: plan.options, seconds })
    };
    // Each join is tried with the smallest plan's stage cuts, with none, and with cuts searched
    // anew: cuts that paid by rows can cost more than they save once the stem runs in strips
    // (VGG-16's 784 KiB pool map held whole), and the stage after a join needs its own (on
    // MobileNetV2 the kept cuts left every four-strip plan above 450 KB, searched ones reach
    // 290 KB). A schedule costs milliseconds (MobileNetV2's 96 took 0.6 s), and at most
    // `MAX_JOINS` joins per count are tried, evenly spread. Twice as many strips are tried
    // while that lowered the least memory (and once regardless).
    const MAX_JOINS: usize = 24;
    let counts = [2, 4, 8, 16];
    let mut least = front.iter().map(|c| c.arena_bytes).min().unwrap_or(usize::MAX);
    for (i, count) in counts.into_iter().enumerate() {
        progress("trying column strips", i, counts.len());
        let all = strips::each_end(graph, &smallest.options, count, true)?;
        let step = all.len().div_ceil(MAX_JOINS).max(1);
        let with_cuts = |o: &PlanOptions, cuts: Option<Vec<_>>| PlanOptions { cuts, ..o.clone() };
        let mut tried = Vec::new();
        for o in all.into_iter().rev().step_by(step) {
            for options in [with_cuts(&o, Some(Vec::new())), with_cuts(&o, None), o] {
                tried.push(try_plan(&options)?);
            }
        }
        let best = tried
            .iter()
            .filter_map(|t| Some((t, t.seconds?)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(t, _)| t.options.clone());
        if let Some(options) = best {
            progress("trying column strips", counts.len(), counts.len());
            return strips_candidate(graph, profile, backend, options, progress).map(Some);
        }
        let smallest_here = tried.iter().map(|t| t.bytes).min().unwrap_or(usize::MAX);
        if i > 0 && smallest_here >= least {
            break;
        }
        least = least.min(smallest_here);
    }
    Err(frugal_core::Error::OutOfBudget { needed: least, budget })
}

/// The planner's candidate for `options` (column strips): their kernels profiled where the
/// profile lacks them, then priced.
fn strips_candidate(
    graph: &Graph,
    profile: &mut Profile,
    backend: &mut dyn Backend,
    options: PlanOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Candidate> {
    let effective = frugal_core::plan::recompute::effective(graph, &options)?;
    if !profile.missing(&effective).is_empty() || profile.lacks_cold(&effective) {
        profile.measure(&effective, backend, &mut |d, t| progress("profiling strips", d, t))?;
        let (path, _) = cached(backend);
        let _ = profile.save(&path);
    }
    planner::evaluate(graph, &options, profile, backend, "strips")
}

/// The options of an explicit strategy (no budget or throughput target): `target`'s strategy
/// (layer by layer by default, by parts with strips), its part size and storage, and its
/// strips joined where they give the smallest peak.
pub fn options_for(graph: &Graph, target: &Target) -> Result<PlanOptions> {
    let default = if target.strips.is_some() { Strategy::ByParts } else { Strategy::LayerByLayer };
    let options = PlanOptions {
        part_rows: target.part_rows.max(1),
        storage: target.storage,
        ..PlanOptions::new(target.strategy.unwrap_or(default))
    };
    match target.strips {
        None | Some(1) => Ok(options),
        Some(_) if options.strategy != Strategy::ByParts => Err(frugal_core::Error::Plan(format!(
            "column strips run by parts, not {}",
            options.strategy.name()
        ))),
        Some(n) => frugal_core::plan::strips::smallest(graph, &options, n),
    }
}

/// Refuses `plan` when the model's weights plus the arena a session on `backend` allocates
/// (activations and kernel scratch) exceed `limit` bytes: checked before anything is allocated.
pub fn check_max_memory(
    graph: &Graph,
    plan: &Plan,
    backend: &dyn Backend,
    limit: Option<usize>,
) -> Result<()> {
    let Some(limit) = limit else { return Ok(()) };
    let weights = graph.weight_bytes();
    let arena = frugal_core::session_bytes(graph, plan, backend)?;
    if weights.saturating_add(arena) > limit {
        return Err(frugal_core::Error::OverMemoryLimit { weights, arena, limit });
    }
    Ok(())
}
