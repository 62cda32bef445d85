//! Every zoo network runs through a session on the CPU backend under every strategy, and the
//! strategies agree to the bit.

use frugal_core::{zoo, Plan, PlanOptions, Session, Strategy};
use frugal_cpu::CpuBackend;

#[test]
fn zoo_networks_run_and_strategies_agree() {
    for name in zoo::NAMES {
        let graph = zoo::by_name(name, 64, 64, 7).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut outs = Vec::new();
        for strategy in Strategy::ALL {
            let plan = Plan::build(&graph, &PlanOptions::new(strategy)).unwrap();
            let mut s = Session::new(&graph, &plan, Box::new(CpuBackend::new()))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let n: usize = s.inputs()[0].shape.iter().product();
            let input: Vec<f32> =
                (0..n).map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0).collect();
            let out =
                s.run(&[&input]).unwrap_or_else(|e| panic!("{name} {}: {e}", strategy.name()));
            let bits: Vec<u32> =
                out.iter().flat_map(|t| t.to_f32_vec()).map(f32::to_bits).collect();
            assert!(
                bits.iter().all(|&b| f32::from_bits(b).is_finite()),
                "{name}: non-finite output"
            );
            outs.push(bits);
        }
        assert!(outs.windows(2).all(|w| w[0] == w[1]), "{name}: strategies differ");
    }
}
