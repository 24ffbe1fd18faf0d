//! The dependency absences ARCHITECTURE.md promises, checked on the
//! resolved dependency graph.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use serde_json::Value;

/// Normal (non-dev, non-build) dependency closure of every workspace crate,
/// by package name.
fn closures() -> HashMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1"])
        .current_dir(pitcrew_harness::workspace_root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = node["id"].as_str().unwrap();
        let deps = node["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|k| k["kind"].is_null())
            })
            .map(|d| d["pkg"].as_str().unwrap())
            .collect();
        edges.insert(id, deps);
    }
    let mut result = HashMap::new();
    for member in meta["workspace_members"].as_array().unwrap() {
        let root = member.as_str().unwrap();
        let mut seen = BTreeSet::new();
        let mut stack = vec![root];
        while let Some(id) = stack.pop() {
            for &dep in edges.get(id).map(Vec::as_slice).unwrap_or_default() {
                if seen.insert(names[dep].to_owned()) {
                    stack.push(dep);
                }
            }
        }
        result.insert(names[root].to_owned(), seen);
    }
    result
}

fn assert_absent(closures: &HashMap<String, BTreeSet<String>>, krate: &str, forbidden: &[&str]) {
    let deps = &closures[krate];
    for f in forbidden {
        assert!(
            !deps.contains(*f),
            "{krate} must not depend on {f} (ARCHITECTURE.md)"
        );
    }
}

const EXECUTOR_CRATES: &[&str] = &["kube", "kube-client", "reqwest", "hyper", "ipmi-rs"];

#[test]
fn dependency_absences_hold() {
    let c = closures();
    assert_absent(
        &c,
        "pitcrew-contract",
        &["rdkafka", "rdkafka-sys", "tokio", "pitcrew-bus"],
    );
    assert_absent(&c, "pitcrew-contract", EXECUTOR_CRATES);
    assert_absent(
        &c,
        "pitcrew-rules",
        &["rdkafka", "rdkafka-sys", "pitcrew-bus", "tokio"],
    );
    for krate in ["pitcrew-contract", "pitcrew-bus", "pitcrew-rules"] {
        assert_absent(&c, krate, EXECUTOR_CRATES);
    }
    // Sources know no Kafka; the binary moves their events.
    assert_absent(
        &c,
        "pitcrew-ingest",
        &["rdkafka", "rdkafka-sys", "pitcrew-bus"],
    );
    // The simulator is pure: no Kafka, no runtime, no executor.
    assert_absent(
        &c,
        "pitcrew-simulate",
        &["rdkafka", "rdkafka-sys", "pitcrew-bus", "tokio"],
    );
    assert_absent(&c, "pitcrew-simulate", EXECUTOR_CRATES);
    // Remediation acts through executors and a journal; the Kafka side is
    // the service's (pitcrew::service::remediate).
    assert_absent(
        &c,
        "pitcrew-remediate",
        &["rdkafka", "rdkafka-sys", "pitcrew-bus"],
    );
    // The facility poller, like the node collectors, knows no Kafka and no
    // stage: it reads devices and makes events; the binary moves them.
    assert_absent(
        &c,
        "pitcrew-facility",
        &[
            "rdkafka",
            "rdkafka-sys",
            "pitcrew-bus",
            "pitcrew-rules",
            "pitcrew-remediate",
        ],
    );
    // The bus knows the contract only: no stage, no collector.
    assert_absent(
        &c,
        "pitcrew-bus",
        &[
            "pitcrew-rules",
            "pitcrew-remediate",
            "pitcrew-ingest",
            "pitcrew-simulate",
        ],
    );
    // The check itself can fail: the bus does depend on rdkafka.
    assert!(c["pitcrew-bus"].contains("rdkafka"));
}

/// Every `.rs` file under `dir` (relative to the workspace), with its text.
fn sources(dir: &str) -> Vec<(std::path::PathBuf, String)> {
    let mut stack = vec![pitcrew_harness::workspace_root().join(dir)];
    let mut out = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out
}

/// One evaluation path: only the rules crate builds an `Engine`; every
/// runner (the service, test, replay, the simulator, benchmarks) goes
/// through `pitcrew_rules::Stage` or `Pipeline`.
#[test]
fn no_runner_builds_an_engine_of_its_own() {
    let mut checked = 0;
    for dir in ["pitcrew/src", "simulate/src", "remediate/src", "ingest/src"] {
        for (path, text) in sources(dir) {
            checked += 1;
            assert!(
                !text.contains("Engine::new("),
                "{} builds an Engine: use pitcrew_rules::Stage or Pipeline",
                path.display()
            );
        }
    }
    assert!(checked > 20);
    // The check can fail: the pipeline itself does build engines.
    assert!(sources("rules/src")
        .iter()
        .any(|(_, t)| t.contains("Engine::new(")));
}

/// The binary only parses arguments and wires services together: no
/// stage loop, transaction, message handler or spool drain of its own
/// outside the benchmarks (the demo's read-only view of the topics is
/// display, not a stage).
#[test]
fn the_binary_runs_no_kafka_loop_of_its_own() {
    for (path, text) in sources("pitcrew/src/cmd") {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("bench") {
            continue;
        }
        for needle in [
            "TransactionalStage",
            "run_consumer(",
            "run_decoded(",
            "impl Handler",
            "send_batch(",
        ] {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: Kafka loops belong in pitcrew::service",
                path.display()
            );
        }
    }
    let services = sources("pitcrew/src/service");
    assert!(services
        .iter()
        .any(|(_, t)| t.contains("TransactionalStage")));
    assert!(services.iter().any(|(_, t)| t.contains("run_consumer(")));
    assert!(services.iter().any(|(_, t)| t.contains("send_batch(")));
}

/// The facility poller only reads: SNMP GET/GETBULK, Modbus read
/// functions, HTTP GET. Switching an outlet or a breaker is remediation's.
#[test]
fn the_facility_poller_only_reads() {
    let facility = sources("facility/src");
    for (path, text) in &facility {
        for needle in [
            ".set(&",
            ".set_many(",
            "write_single_register",
            "write_multiple_registers",
            "write_single_coil",
            "write_multiple_coils",
            ".post(",
            ".put(",
            ".patch(",
            ".delete(",
        ] {
            assert!(
                !text.contains(needle),
                "{} uses {needle}: the facility poller does not act on devices",
                path.display()
            );
        }
    }
    // The check can fail: the poller does read over all three protocols.
    let all: String = facility.iter().map(|(_, t)| t.as_str()).collect();
    for read in ["bulk_walk(", "read_holding_registers(", ".get(format!"] {
        assert!(all.contains(read), "{read}");
    }
}

/// Reading a BMC is the collectors' job; acting on it (chassis power) is
/// remediation's alone.
#[test]
fn collectors_send_no_chassis_commands() {
    let ingest = sources("ingest/src");
    for (path, text) in &ingest {
        assert!(
            !text.contains("NetFn::Chassis"),
            "{} sends a chassis command",
            path.display()
        );
    }
    // The check can fail: the collectors do speak IPMI.
    assert!(ingest.iter().any(|(_, t)| t.contains("ipmi_rs")));
}

/// Metrics are declared once (`pitcrew_observe::metrics!`: the field, its
/// name, unit and help together) and the shared label sets exist once.
#[test]
fn metrics_are_declared_once() {
    let mut declared_by_hand = Vec::new();
    for dir in [
        "bus/src",
        "ingest/src",
        "remediate/src",
        "rules/src",
        "pitcrew/src",
    ] {
        for (path, text) in sources(dir) {
            assert!(
                !text.contains("struct OutcomeLabel"),
                "{} declares its own OutcomeLabel: use pitcrew_observe's",
                path.display()
            );
            if text.contains("sub_registry_with_prefix") {
                declared_by_hand.push(path);
            }
        }
    }
    // The node telemetry families keep per-GPU state beside their metrics
    // and register by hand; nothing else does.
    assert_eq!(
        declared_by_hand.len(),
        1,
        "metrics registered by hand: {declared_by_hand:?}"
    );
    assert!(declared_by_hand[0].ends_with("ingest/src/telemetry.rs"));
}

/// The collectors' HTTP is reads: GETs of a node's exporter and of its own
/// Node object, never a write (a POST, PUT, PATCH or DELETE would be an
/// action, which is remediation's alone).
#[test]
fn collectors_only_read_over_http() {
    let ingest = sources("ingest/src");
    for (path, text) in &ingest {
        for verb in [
            ".post(",
            ".put(",
            ".patch(",
            ".delete(",
            "Method::POST",
            "Method::PUT",
            "Method::PATCH",
            "Method::DELETE",
        ] {
            assert!(
                !text.contains(verb),
                "{} writes over HTTP ({verb})",
                path.display()
            );
        }
    }
    // The check can fail: the collectors do speak HTTP (reqwest).
    assert!(ingest.iter().any(|(_, t)| t.contains("reqwest::")));
}

/// The collectors read their Node object through kube-rs and write
/// nothing to Kubernetes: no write's parameters, no raw request, no API but
/// the Node's.
#[test]
fn collectors_only_read_their_node_object() {
    let ingest = sources("ingest/src");
    for (path, text) in &ingest {
        for write in [
            "PostParams",
            "PatchParams",
            "DeleteParams",
            "EvictParams",
            "replace_status",
            "patch_status",
            ".request(",
            "request_text(",
            "request_status(",
            "request_events(",
        ] {
            assert!(
                !text.contains(write),
                "{} writes to Kubernetes ({write})",
                path.display()
            );
        }
        for api in text.match_indices("Api<").map(|(i, _)| &text[i..]) {
            assert!(
                api.starts_with("Api<Node>"),
                "{} opens an API other than the Node's: {}",
                path.display(),
                &api[..api.len().min(40)]
            );
        }
    }
    // The check can fail: the collectors do read the Node with kube-rs.
    assert!(ingest
        .iter()
        .any(|(_, t)| t.contains("Api<Node>") && t.contains(".get(name)")));
}
