//! Every panel query of every dashboard in dashboards/ parses and returns
//! data from a real Prometheus (Debian's package) that scrapes a running
//! pitcrew: the demo (rules, remediation, the simulated fleet's
//! `pitcrew_node_*` and its facility's `pitcrew_facility_*`) and a node agent (`pitcrew collect` with simulated
//! GPUs, producing to the demo's in-process Kafka). The template variables'
//! queries are checked too. The alert rules in deploy/prometheus/ pass
//! `promtool check rules` and their `promtool test rules` tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pitcrew_harness::prometheus::Prometheus;
use pitcrew_harness::{http_get, http_ok};

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A panel's query as Grafana sends it with every variable at "All".
fn expand(expr: &str) -> String {
    expr.replace("$node", ".*")
        .replace("$gpu", ".*")
        .replace("$rack", ".*")
}

fn query(prom: &Prometheus, expr: &str) -> serde_json::Value {
    let (status, body) = http_get(
        prom.port(),
        &format!("/api/v1/query?query={}", encode(expr)),
    )
    .unwrap_or_else(|| panic!("no answer for {expr}"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    assert_eq!(status, 200, "{expr}: {body}");
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v
}

fn write(root: &Path, rel: &str, value: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, format!("{value}\n")).unwrap();
}

#[test]
fn every_panel_query_returns_data_from_a_running_pitcrew() {
    // The demo, long enough for the whole check.
    let demo_port = pitcrew_harness::free_port().unwrap();
    let mut demo = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["demo", "--duration", "150s", "--listen"])
        .arg(format!("127.0.0.1:{demo_port}"))
        .env_remove("PITCREW_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    out.read_line(&mut first).unwrap();
    // Keep reading: a closed pipe would end the demo at its next line.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let _demo = Proc(demo);
    let bootstrap = first
        .split("in-process Kafka on ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no bootstrap in {first:?}"))
        .trim()
        .to_owned();

    // A node agent with 8 simulated GPUs on the demo's Kafka.
    let fake = std::env::temp_dir().join(format!("pitcrew-dash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&fake);
    write(&fake, "proc/sys/kernel/random/boot_id", "boot-dash");
    write(&fake, "proc/uptime", "100.0 100.0");
    write(
        &fake,
        "sys/class/infiniband/mlx5_0/ports/1/counters/symbol_error",
        "0",
    );
    let agent_port = pitcrew_harness::free_port().unwrap();
    let agent = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "--log",
            "error",
            "collect",
            "--node",
            "agent-1",
            "--no-kmsg",
        ])
        .args(["--simulate-gpus", "8", "--interval-ms", "500"])
        .arg("--proc-root")
        .arg(fake.join("proc"))
        .arg("--sys-root")
        .arg(fake.join("sys"))
        .arg("--state-dir")
        .arg(fake.join("state"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{agent_port}"))
        .env_remove("PITCREW_CONFIG")
        .env("PITCREW__KAFKA__BROKERS", &bootstrap)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Proc(agent);

    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
             \x20 - job_name: pitcrew-demo\n    static_configs:\n      - targets: ['127.0.0.1:{demo_port}']\n\
             \x20 - job_name: pitcrew-collect\n    static_configs:\n      - targets: ['127.0.0.1:{agent_port}']\n"
        ),
        "groups: []\n",
    )
    .unwrap();

    // The demo's faults come in its first 20 s; rates want a few scrapes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(http_ok(demo_port, "/metrics") && http_ok(agent_port, "/metrics")) {
        assert!(Instant::now() < deadline, "demo or agent not serving");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(30));

    let mut checked = 0;
    let mut empty = Vec::new();
    for file in [
        "fleet-health",
        "incidents-remediation",
        "pipeline-health",
        "facility",
    ] {
        let path = root().join("dashboards").join(format!("{file}.json"));
        let dash: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for v in dash["templating"]["list"].as_array().unwrap() {
            if let Some(q) = v["query"]["query"].as_str() {
                // label_values(METRIC{...}, LABEL): the metric has series.
                let inner = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.rsplit_once(','))
                    .map(|(m, _)| m)
                    .unwrap_or_else(|| panic!("{file}: variable query {q}"));
                let r = query(&prom, &format!("count({})", expand(inner)));
                if r["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                    empty.push(format!("{file}: variable {}", v["name"]));
                }
            }
        }
        for p in dash["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().unwrap() {
                let expr = t["expr"].as_str().unwrap();
                let r = query(&prom, &expand(expr));
                checked += 1;
                if r["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                    empty.push(format!("{file}: {}: {expr}", p["title"]));
                }
            }
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    assert!(checked >= 66, "{checked} queries");
    let _ = std::fs::remove_dir_all(&fake);
}

#[test]
fn the_alert_rules_check_and_pass_their_promtool_tests() {
    let dir = root().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(dir.join("pitcrew-alerts.yml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "pitcrew-alerts.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(test.status.success(), "{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Metrics the dcgm-exporter recording rules provide under pitcrew's names.
const FROM_DCGM: &[&str] = &[
    "pitcrew_node_gpu_temperature_celsius",
    "pitcrew_node_gpu_power_watts",
    "pitcrew_node_gpu_remapped_rows",
    "pitcrew_node_gpu_remap_failure",
    "pitcrew_node_gpu_remap_pending",
    "pitcrew_node_gpu_ecc_errors_total",
    "pitcrew_node_gpu_pcie_replays_total",
    "pitcrew_node_gpu_nvlink_errors_total",
    "pitcrew_node_gpu_throttle_active",
    "pitcrew_node_gpu_xid_total",
    "pitcrew_node_gpu_xid_recent",
];

#[test]
fn fleet_health_works_on_dcgm_exporter_metrics() {
    // A dcgm-exporter endpoint: the real capture of an H100 node
    // (ingest/testdata), plus the fields a default dcgm-exporter config
    // also exports that this capture lacks, in the same label set.
    let capture =
        std::fs::read_to_string(root().join("ingest/testdata/dcgm-exporter.txt")).unwrap();
    let labels = |gpu: u32, uuid: &str| {
        format!(
            "gpu=\"{gpu}\",UUID=\"{uuid}\",pci_bus_id=\"00000000:18:00.0\",device=\"nvidia{gpu}\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"n17\",DCGM_FI_DRIVER_VERSION=\"580.159.04\""
        )
    };
    let l0 = labels(0, "GPU-2ffc797b-a610-12f0-d426-6e49156750b9");
    let extra = format!(
        "# TYPE DCGM_FI_DEV_ECC_SBE_VOL_TOTAL counter\nDCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{l0}}} 12\n\
         # TYPE DCGM_FI_DEV_ECC_DBE_VOL_TOTAL counter\nDCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{l0}}} 0\n\
         # TYPE DCGM_FI_DEV_ROW_REMAP_PENDING gauge\nDCGM_FI_DEV_ROW_REMAP_PENDING{{{l0}}} 0\n\
         # TYPE DCGM_EXP_XID_ERRORS_COUNT gauge\nDCGM_EXP_XID_ERRORS_COUNT{{{l0},window_size_in_ms=\"300000\",xid=\"79\"}} 1\n"
    );
    let docs = pitcrew_harness::docserver::DocServer::start().unwrap();
    docs.set("/metrics", 200, format!("{capture}{extra}"));
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/dcgm-exporter.rules.yml")).unwrap();
    // Two scrapes of it: as is (node from Hostname), and as a Kubernetes
    // scrape that relabels the node name into `node`.
    let prom = Prometheus::start(
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{{dir}}/rules.yml']\nscrape_configs:\n\
             \x20 - job_name: dcgm-exporter\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n\
             \x20 - job_name: dcgm-exporter-k8s\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n        labels:\n          node: k8s-node-7\n",
            port = docs.port()
        ),
        &rules,
    )
    .unwrap();

    // Rates want a few scrapes and rule evaluations.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = query(&prom, "pitcrew_node_gpu_temperature_celsius");
        if r["data"]["result"].as_array().is_some_and(|a| a.len() >= 4) {
            break;
        }
        assert!(Instant::now() < deadline, "no recorded series: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(8));

    let r = query(
        &prom,
        "pitcrew_node_gpu_temperature_celsius{node=\"n17\", gpu=\"0\"}",
    );
    let series = &r["data"]["result"][0];
    assert_eq!(
        series["metric"]["uuid"], "GPU-2ffc797b-a610-12f0-d426-6e49156750b9",
        "{r}"
    );
    assert_eq!(series["value"][1], "36", "{r}");
    let r = query(
        &prom,
        "count(pitcrew_node_gpu_temperature_celsius{node=\"k8s-node-7\"})",
    );
    assert_eq!(
        r["data"]["result"][0]["value"][1], "2",
        "the scrape's node label wins over Hostname: {r}"
    );
    let r = query(
        &prom,
        "pitcrew_node_gpu_throttle_active{node=\"n17\", gpu=\"0\", kind=\"sw_power_cap\"}",
    );
    assert!(r["data"]["result"][0]["value"][1].is_string(), "{r}");

    // Every fleet-health panel over GPU metrics returns data from
    // dcgm-exporter alone; the rest read what only pitcrew's agent and
    // rules stage know (AER, InfiniBand, the inventory's racks).
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("dashboards/fleet-health.json")).unwrap(),
    )
    .unwrap();
    let mut checked = Vec::new();
    let mut empty = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let gpu_only = expr.contains("pitcrew_node_gpu_")
                && !expr.contains("pitcrew_node_info")
                && expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| w.starts_with("pitcrew_node_"))
                    .all(|w| FROM_DCGM.contains(&w));
            if !gpu_only {
                continue;
            }
            let r = query(&prom, &expand(expr));
            checked.push(p["title"].as_str().unwrap_or("").to_owned());
            if r["data"]["result"].as_array().is_none_or(Vec::is_empty) {
                empty.push(format!("{}: {expr}", p["title"]));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    assert!(checked.len() >= 9, "{checked:?}");
    assert!(
        checked.iter().any(|t| t.to_lowercase().contains("xid")),
        "the Xid panel reads dcgm-exporter's Xid counts: {checked:?}"
    );
}
