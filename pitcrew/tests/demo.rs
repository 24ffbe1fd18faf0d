//! `pitcrew demo` (in-process broker, simulated fleet, built-in script)
//! and `pitcrew simulate` against the real local Kafka.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use pitcrew_contract::{decode, Event, EventData};
use pitcrew_tests::{config, unique};

/// The demo plays faults.md's scenarios 1, 2, 3, 4, 5 and 7 and must take
/// exactly the reference actions: two reboots that come back to service,
/// a restart, two pages and a notification, and no other cordon.
#[test]
fn the_demo_takes_the_reference_actions_and_returns_the_fleet_to_service() {
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["demo", "--duration", "25s", "--listen", "127.0.0.1:0"])
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let summary = stdout
        .split("== pitcrew demo summary")
        .nth(1)
        .unwrap_or_else(|| panic!("no summary:\n{stdout}"));
    let actions: Vec<&str> = summary
        .lines()
        .skip_while(|l| !l.starts_with("actions ("))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect();
    let mut plans: Vec<String> = actions
        .iter()
        .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        .collect();
    plans.sort();
    assert_eq!(
        plans,
        [
            "notify job/job-1",
            "page driver_version/570.86.15",
            "page leaf_switch/leaf-4",
            "reboot_node node/n17",
            "reboot_node node/n42",
            "restart_app node/n5",
        ],
        "{summary}"
    );
    for l in actions.iter().filter(|l| l.starts_with("reboot_node")) {
        assert!(
            l.ends_with(
                "cordon ok, drain ok, power_cycle ok, verify ok, uncordon ok, returned to service"
            ),
            "{l}"
        );
    }
    assert!(
        summary.contains("fleet: 0 of 64 nodes cordoned now, 2 power cycles, 0 out of service"),
        "{summary}"
    );
    assert!(stderr.trim().is_empty(), "no warnings: {stderr}");
}

#[test]
fn simulate_produces_the_fleet_and_its_scenario_to_kafka() {
    let prefix = unique("simulate");
    let cfg = config(&prefix);
    let dir = std::env::temp_dir().join(format!("pitcrew-{prefix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("pitcrew.toml");
    std::fs::write(&conf, pitcrew_tests::config_file_text(&cfg)).unwrap();
    let scenario = dir.join("fault.toml");
    std::fs::write(
        &scenario,
        "name = \"one Xid\"\n[[event]]\nat = \"500ms\"\nnode = \"n3\"\nkind = \"gpu.xid\"\ngpu = 2\ndata = { code = 79 }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .arg("--config")
        .arg(&conf)
        .args([
            "simulate",
            "--nodes",
            "4",
            "--rate",
            "2000",
            "--duration",
            "3s",
            "--scenario",
        ])
        .arg(&scenario)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 of 1 scenario events played"), "{stdout}");
    let mut events = Vec::new();
    pitcrew_bus::read_topic_merged(
        &cfg.kafka,
        &cfg.topics.events.name,
        0,
        None,
        Duration::from_secs(30),
        |bytes| events.push(decode::<Event>(bytes).unwrap()),
        |_, _, _| {},
    )
    .unwrap();
    // Whole rounds of 4 nodes x 57 events, plus the one scripted fault; at
    // 2,000 events/s for 3 s no more than 27 rounds (the pace holds), and a
    // loaded 2-core machine still makes well over 10.
    let per_round = 4 * 57;
    let rounds = (events.len() - 1) / per_round;
    assert_eq!((events.len() - 1) % per_round, 0, "{} events", events.len());
    assert!((10..=27).contains(&rounds), "{rounds} rounds");
    let xids: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(&e.data, EventData::GpuXid(x) if x.code == 79))
        .collect();
    assert_eq!(xids.len(), 1);
    assert_eq!(xids[0].node, "n3");
    let reported: u64 = stdout
        .lines()
        .last()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert_eq!(reported, events.len() as u64, "{stdout}");
}
