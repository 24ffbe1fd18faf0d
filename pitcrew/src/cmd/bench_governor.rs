//! `pitcrew bench governor`: decisions per second through the pure
//! governor on one core, on a fleet-sized inventory with the production
//! checks switched on (fleet count and percent, rack and leaf budgets,
//! power-cycle token buckets per rack), a steady number of nodes out of
//! service, and a mix of allowed and refused asks.

#![allow(clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pitcrew_contract::{Target, TargetKind, Timestamp};
use pitcrew_remediate::governor::{Ask, BucketSpec, Scope, Verdict};
use pitcrew_remediate::{Governor, GovernorConfig, StepKind};
use pitcrew_rules::{Inventory, NodeInfo};

/// `nodes` nodes, 16 to a rack, 4 racks to a leaf switch, 8 to a PDU.
pub(crate) fn fleet_inventory(nodes: u32) -> Inventory {
    Inventory::new(
        (0..nodes)
            .map(|i| NodeInfo {
                name: format!("n{i}"),
                rack: Some(format!("rack{}", i / 16)),
                leaf_switch: Some(format!("leaf{}", i / 64)),
                pdu: Some(format!("pdu{}", i / 8)),
                ..NodeInfo::default()
            })
            .collect(),
    )
}

pub(crate) fn run(seconds: f64, nodes: u32, out: usize) {
    let inventory = Arc::new(fleet_inventory(nodes));
    let targets: Vec<Target> = (0..nodes)
        .map(|i| Target {
            kind: TargetKind::Node,
            name: format!("n{i}"),
        })
        .collect();
    let cfg = GovernorConfig {
        // Room for the steady state, so the fleet check runs its full course.
        max_out_of_service: out + out / 10 + 1,
        max_out_of_service_percent: 100.0,
        domain_max: [(Scope::Rack, 2), (Scope::LeafSwitch, 4)].into(),
        buckets: vec![BucketSpec {
            step: StepKind::PowerCycle,
            per: Scope::Rack,
            capacity: 4,
            period: Duration::from_secs(3600),
        }],
        // Decisions, not the breaker's short cut, are what is measured.
        trip_after: u32::MAX,
        ..GovernorConfig::default()
    };
    let mut governor = Governor::new(cfg, inventory);
    println!(
        "governor bench: {nodes} nodes (16 per rack, 64 per leaf), {out} out of service, \
         rack 2 / leaf 4 budgets, 4 power cycles per rack per hour"
    );

    let mut held: VecDeque<usize> = VecDeque::with_capacity(out + 1);
    let attempts: Vec<Timestamp> = Vec::new();
    // Synthetic time: one action every 100 ms of fleet time.
    let mut now_ns: i64 = 1_700_000_000_000_000_000;
    let (mut decisions, mut allowed, mut refused, mut actions) = (0u64, 0u64, 0u64, 0u64);
    let mut pick: u64 = 0x9E37_79B9_7F4A_7C15;
    let t0 = Instant::now();
    let deadline = Duration::from_secs_f64(seconds);
    loop {
        for _ in 0..1024 {
            // xorshift: a spread of nodes without a pattern racks line up with.
            pick ^= pick << 13;
            pick ^= pick >> 7;
            pick ^= pick << 17;
            let i = (pick % u64::from(nodes)) as usize;
            if governor.is_out(&targets[i]) {
                continue;
            }
            let now = Timestamp::from_unix_nanos(now_ns);
            now_ns += 100_000_000;
            actions += 1;
            let mut ask = Ask {
                target: &targets[i],
                step: StepKind::Cordon,
                plan_start: true,
                attempts: &attempts,
                cooldown_until: None,
                hands_off: false,
            };
            decisions += 1;
            if let Verdict::Refuse { .. } = governor.check(&ask, now) {
                refused += 1;
                continue;
            }
            allowed += 1;
            held.push_back(i);
            ask.step = StepKind::PowerCycle;
            ask.plan_start = false;
            decisions += 1;
            match governor.check(&ask, now) {
                Verdict::Allow => allowed += 1,
                Verdict::Refuse { .. } => refused += 1,
            }
            if held.len() > out {
                if let Some(j) = held.pop_front() {
                    governor.release(&targets[j]);
                }
            }
        }
        if t0.elapsed() >= deadline {
            break;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "  {decisions} decisions ({allowed} allowed, {refused} refused) for {actions} actions in {secs:.2} s"
    );
    println!(
        "  {:.0} decisions/s, {:.0} actions/s, {:.2} µs per decision, one core",
        decisions as f64 / secs,
        actions as f64 / secs,
        secs * 1e6 / decisions as f64
    );
}
