//! The planner: a measured cost model ([`Profile`]) and the search for the fastest plan under a
//! memory budget, or the smallest that holds a throughput ([`search`]).

pub mod profile;
pub mod search;

pub use profile::Profile;
pub use search::{
    evaluate, fastest_within, front, in_two_lanes, pareto, published, smallest_holding, Candidate,
};
