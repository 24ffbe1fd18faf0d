//! The command line as an operator meets it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn pitcrew(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(args)
        .env_remove("PITCREW_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

/// The event kind of one JSON line the CLI printed (which must decode).
fn kind_of_line(line: &str) -> String {
    pitcrew_contract::decode::<pitcrew_contract::Event>(line.as_bytes())
        .unwrap()
        .kind()
        .to_string()
}

const SUBCOMMANDS: &[&str] = &[
    "collect",
    "rules",
    "remediate",
    "run",
    "demo",
    "check",
    "test",
    "replay",
    "simulate",
    "topics",
    "schema",
    "bench",
];

#[test]
fn every_subcommand_has_help() {
    for cmd in SUBCOMMANDS {
        let out = pitcrew(&[cmd, "--help"], None);
        assert!(out.status.success(), "{cmd} --help");
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!("Usage: pitcrew {cmd}")),
            "{cmd}: {text}"
        );
    }
    let top = String::from_utf8(pitcrew(&["--help"], None).stdout).unwrap();
    for cmd in SUBCOMMANDS {
        assert!(top.contains(cmd), "top-level help lists {cmd}");
    }
}

#[test]
fn schema_validate_names_the_bad_field() {
    let good = String::from_utf8(pitcrew_contract::encode(
        &pitcrew_contract::examples::event(pitcrew_contract::EventKind::PcieAer),
    ))
    .unwrap();
    let bad = good.replace(
        "\"severity\":\"uncorrected_fatal\"",
        "\"severity\":\"scary\"",
    );
    let out = pitcrew(
        &["schema", "validate"],
        Some(&format!("{good}\n\n{bad}\nnot json\n")),
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line 1: ok pcie.aer");
    assert!(
        lines[1].starts_with("line 3: error: field `data.severity`: unknown variant `scary`"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].starts_with("line 4: error: malformed json at line 1 column 2"),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], "1 valid, 2 invalid");
}

#[test]
fn schema_examples_cover_every_kind() {
    let out = pitcrew(&["schema", "examples"], None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for k in pitcrew_contract::EventKind::ALL {
        assert!(text.contains(&format!("### `{k}`")), "{k}");
    }
}

#[test]
fn a_bad_config_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("pitcrew-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[kafka]\nbrokers = 5\n").unwrap();
    let out = pitcrew(
        &["--config", cfg.to_str().unwrap(), "topics", "bootstrap"],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml") && err.contains("invalid type: integer `5`, expected a string"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn collect_once_prints_decodable_events_with_a_heartbeat() {
    let root = std::env::temp_dir().join(format!("pitcrew-cli-proc-{}", std::process::id()));
    std::fs::create_dir_all(root.join("sys/kernel/random")).unwrap();
    std::fs::write(root.join("sys/kernel/random/boot_id"), "boot-xyz\n").unwrap();
    std::fs::write(root.join("uptime"), "120.5 200.1\n").unwrap();
    std::fs::create_dir_all(root.join("sys/class/net/ib0")).unwrap();
    std::fs::write(root.join("sys/class/net/ib0/carrier"), "0\n").unwrap();
    let out = pitcrew(
        &[
            "--log",
            "error",
            "collect",
            "--once",
            "--stdout",
            "--node",
            "n17",
            "--proc-root",
            root.to_str().unwrap(),
            "--sys-root",
            root.join("sys").to_str().unwrap(),
        ],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let events: Vec<pitcrew_contract::Event> = text
        .lines()
        .map(|l| pitcrew_contract::decode(l.as_bytes()).unwrap())
        .collect();
    let hb = events.last().unwrap();
    assert_eq!(hb.node, "n17");
    match &hb.data {
        pitcrew_contract::EventData::NodeHeartbeat(h) => {
            assert_eq!((h.boot_id.as_str(), h.uptime_s), ("boot-xyz", 120));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        events.iter().any(|e| matches!(&e.data, pitcrew_contract::EventData::NetLink(l) if l.interface == "ib0" && !l.up)),
        "the sysfs source ran on --sys-root"
    );
    if !std::path::Path::new("/dev/nvidia0").exists() {
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("nvml is absent"), "{err}");
        assert_eq!(events.len(), 2);
    }
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn collect_kmsg_file_prints_one_event_per_fault() {
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ingest/testdata/kmsg/gpu-off-the-bus-fatal.log"
    );
    let out = pitcrew(
        &["collect", "--kmsg-file", file, "--stdout", "--node", "n17"],
        None,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(kind_of_line)
        .collect();
    assert_eq!(
        kinds,
        [
            "gpu.xid",
            "pcie.aer",
            "pcie.link_down",
            "pcie.dpc",
            "gpu.xid"
        ]
    );
    let half = pitcrew(&["collect", "--kmsg-file", file], None);
    assert_eq!(half.status.code(), Some(1), "--kmsg-file needs --stdout");
    let missing = pitcrew(
        &[
            "collect",
            "--kmsg-file",
            "/nonexistent/kern.log",
            "--stdout",
            "--node",
            "n1",
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8(missing.stderr)
        .unwrap()
        .contains("/nonexistent/kern.log"));
}

#[test]
fn collect_once_reads_a_real_simulated_bmc() {
    let bmc = pitcrew_harness::ipmi::SimulatedBmc::start().unwrap();
    let root = std::env::temp_dir().join(format!("pitcrew-cli-bmc-{}", std::process::id()));
    std::fs::create_dir_all(root.join("sys/kernel/random")).unwrap();
    std::fs::write(root.join("sys/kernel/random/boot_id"), "boot-bmc\n").unwrap();
    std::fs::write(root.join("uptime"), "5.0 5.0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args([
            "--log",
            "error",
            "collect",
            "--once",
            "--stdout",
            "--no-nvml",
            "--node",
            "n17",
        ])
        .arg("--proc-root")
        .arg(&root)
        .arg("--sys-root")
        .arg(root.join("nosys"))
        .args([
            "--bmc-address",
            &bmc.address(),
            "--bmc-user",
            pitcrew_harness::ipmi::USER,
        ])
        .env("PITCREW_BMC_PASSWORD", pitcrew_harness::ipmi::PASSWORD)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(!text.contains(pitcrew_harness::ipmi::PASSWORD));
    let kinds: Vec<String> = text.lines().map(kind_of_line).collect();
    assert!(kinds.contains(&"bmc.sel".to_owned()), "{kinds:?}");
    assert!(kinds.contains(&"bmc.sensor".to_owned()), "{kinds:?}");
    std::fs::remove_dir_all(&root).unwrap();

    let missing = pitcrew(
        &[
            "collect",
            "--once",
            "--stdout",
            "--no-nvml",
            "--node",
            "n1",
            "--bmc-address",
            &bmc.address(),
        ],
        None,
    );
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8(missing.stderr)
        .unwrap()
        .contains("PITCREW_BMC_PASSWORD"));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pitcrew-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_prints_every_diagnostic_at_file_line_col_and_fails() {
    let dir = temp_dir("check");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nname = \"a\"\nwhen = { kind = \"gpu.xdi\" }\n[[rule]]\nname = \"b\"\nwhen = { kind = \"gpu.xid\" }\nplan = \"reboot\"\n",
    )
    .unwrap();
    let out = pitcrew(&["check", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let shown = bad.display().to_string();
    assert!(
        text.contains(&format!(
            "{shown}:3:17: error: unknown event kind `gpu.xdi`"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{shown}:7:8: error: unknown plan `reboot`")),
        "{text}"
    );
    let out = pitcrew(&["check", "@default"], None);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .starts_with("ok: 7 files"));
}

#[test]
fn test_runs_the_default_packs_tests_and_shows_a_diff_on_failure() {
    let out = pitcrew(&["test", "@default"], None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("rule tests: 48 passed, 0 failed"), "{text}");

    let dir = temp_dir("test");
    let f = dir.join("wrong.toml");
    std::fs::write(
        &f,
        "[[rule]]\nname = \"x79\"\nplan = \"reboot_node\"\nwhen = { kind = \"gpu.xid\", where = { \"data.code\" = 79 } }\n\
         [[test]]\nname = \"expects the wrong plan\"\n[[test.event]]\nnode = \"n1\"\nkind = \"gpu.xid\"\ngpu = 0\ndata = { code = 79 }\n\
         [[test.expect]]\nincident = \"x79\"\nplan = \"rma\"\n",
    )
    .unwrap();
    let out = pitcrew(&["test", f.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FAIL"), "{text}");
    assert!(
        text.contains("expected 1 x incident x79 open plan=rma, got 0"),
        "{text}"
    );
    assert!(text.contains("+ incident x79 open blame=node/n1"), "{text}");
    assert!(text.contains("rule tests: 0 passed, 1 failed"), "{text}");
}

#[test]
fn replay_backtests_recorded_events() {
    use pitcrew_contract::{encode, examples, EventData, EventKind, Timestamp};
    let dir = temp_dir("replay");
    let path = dir.join("events.jsonl");
    let mut lines = String::new();
    for (i, code) in [13u32, 79, 43].iter().enumerate() {
        let mut e = examples::event(EventKind::GpuXid);
        e.node = format!("n{i}");
        e.id = format!("e{i}");
        e.time = Timestamp::from_unix_millis(1_800_000_000_000 + i as i64 * 1000);
        if let EventData::GpuXid(x) = &mut e.data {
            x.code = *code;
        }
        lines.push_str(&String::from_utf8(encode(&e)).unwrap());
        lines.push('\n');
    }
    lines.push_str("not json\n");
    std::fs::write(&path, lines).unwrap();
    let out = pitcrew(
        &["replay", "@default", "--events", path.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        text.contains("gpu-fallen-off-bus") && text.contains("node/n1"),
        "{text}"
    );
    assert!(text.contains("reboot_node"), "{text}");
    assert!(
        err.contains("3 events") && err.contains("1 undecodable lines"),
        "{err}"
    );
    assert!(err.contains(":4: skipped"), "{err}");
}
