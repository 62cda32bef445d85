//! Planning with measurements: the per-machine profile cache and the choice of a plan for a
//! memory budget or a throughput target.

use std::path::PathBuf;

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
        let strategy = target.strategy.unwrap_or(Strategy::LayerByLayer);
        let plan = Plan::build(
            graph,
            &PlanOptions {
                part_rows: target.part_rows.max(1),
                storage: target.storage,
                ..PlanOptions::new(strategy)
            },
        )?;
        check_max_memory(graph, &plan, backend, target.max_memory)?;
        return Ok((plan, None));
    }
    let profile = profile_for(graph, backend, &mut |d, t| progress("profiling kernels", d, t))?;
    let base = PlanOptions { storage: target.storage, ..PlanOptions::default() };
    let front = planner::front(graph, &profile, backend, &base, &mut |d, t| {
        progress("searching plans", d, t)
    })?;
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
