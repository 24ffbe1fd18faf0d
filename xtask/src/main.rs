//! `cargo xtask test`: the README's test command.
//!
//! Provisions what the tests need on a fresh machine (Debian packages when
//! root, Kafka jars from Maven Central, cached under target/), starts the
//! real components on loopback, runs formatting and lint checks and every
//! test with the components' addresses in the environment, and stops the
//! components whatever happened.

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use pitcrew_harness::kafka::KafkaBroker;

/// Debian packages the build and the tests need, each with what shows it
/// is already there: a command on PATH (Java or Maven may come from
/// elsewhere than Debian) or, for libraries, the package itself.
const DEBIAN_PACKAGES: &[(&str, Probe)] = &[
    ("build-essential", Probe::Command("cc")),
    ("pkg-config", Probe::Command("pkg-config")),
    ("libssl-dev", Probe::Package),
    ("zlib1g-dev", Probe::Package),
    ("openjdk-17-jre-headless", Probe::Command("java")),
    ("maven", Probe::Command("mvn")),
    ("openipmi", Probe::Command("ipmi_sim")),
    ("ipmitool", Probe::Command("ipmitool")),
    ("etcd-server", Probe::Command("etcd")),
    ("slurm-wlm", Probe::Command("slurmctld")),
    ("prometheus", Probe::Command("prometheus")),
    (
        "prometheus-alertmanager",
        Probe::Command("prometheus-alertmanager"),
    ),
    ("curl", Probe::Command("curl")),
    ("openssl", Probe::Command("openssl")),
    ("procps", Probe::Command("kill")),
    // The facility simulators' venv (snmpsim, pymodbus) uses Debian's Python.
    ("python3-venv", Probe::Package),
    // The Redfish emulator (sushy-tools) runs on libvirt's test driver.
    ("python3-libvirt", Probe::Package),
];

#[derive(Debug, Clone, Copy)]
enum Probe {
    Command(&'static str),
    Package,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("provision") => provision(),
        Some("kafka") => kafka_shell(),
        Some("kube") => kube_shell(),
        Some("fuzz") => fuzz(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n  test [-- CARGO_TEST_ARGS]  provision, start real components, run all checks and tests\n  provision                  install packages and download Kafka jars only\n  kafka                      start a Kafka broker and wait (Enter stops it)\n  kube                       start etcd and kube-apiserver, write a kubeconfig, and wait (Enter stops them)\n  fuzz [decode|kmsg|rules|facility] [SECONDS]  fuzz a parser (cargo-fuzz, nightly): the wire decoder (default), the kernel-log parser, the rule compiler or the facility poller's device input, 60 s by default"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn step(name: &str) -> Instant {
    println!("==> {name}");
    Instant::now()
}

fn done(start: Instant) {
    println!("    ({:.1} s)", start.elapsed().as_secs_f64());
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn missing_packages() -> Vec<&'static str> {
    DEBIAN_PACKAGES
        .iter()
        .filter(|(package, probe)| match probe {
            Probe::Command(cmd) => !Command::new("sh")
                .args(["-c", &format!("command -v {cmd}")])
                .output()
                .is_ok_and(|o| o.status.success()),
            Probe::Package => !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", package])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false),
        })
        .map(|(package, _)| *package)
        .collect()
}

fn provision() -> Result<()> {
    let t = step("provision: Debian packages");
    let missing = missing_packages();
    if missing.is_empty() {
        println!("    all present");
    } else if is_root() {
        println!("    installing {}", missing.join(" "));
        run(Command::new("apt-get").arg("update").arg("-qq"))?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    } else {
        println!(
            "    not root: cannot install {} (install them, or run as root)",
            missing.join(" ")
        );
    }
    done(t);
    let t = step("provision: Apache Kafka jars (Maven Central, cached)");
    let jars = pitcrew_harness::kafka::ensure_jars().context("fetching Kafka jars")?;
    println!("    {}", jars.display());
    done(t);
    let t = step("provision: kube-apiserver (built with Go from k8s.io/kubernetes, cached)");
    let apiserver = pitcrew_harness::kube::ensure_binary()
        .context("building kube-apiserver (needs Go >= 1.24)")?;
    println!("    {}", apiserver.display());
    done(t);
    let t = step("provision: kube-controller-manager and kube-scheduler (built with Go, cached)");
    let controllers = pitcrew_harness::cluster::ensure_controllers()
        .context("building kube-controller-manager and kube-scheduler")?;
    println!("    {}", controllers.display());
    done(t);
    let t = step("provision: KWOK (built with Go from sigs.k8s.io/kwok, cached)");
    let kwok = pitcrew_harness::cluster::ensure_kwok().context("building KWOK")?;
    println!("    {}", kwok.display());
    done(t);
    let t = step("provision: Helm (built with Go from helm.sh/helm/v3, cached)");
    let helm = pitcrew_harness::helm::ensure_binary().context("building Helm")?;
    println!("    {}", helm.display());
    done(t);
    let t = step("provision: snmpsim and pymodbus (a Python venv from PyPI, cached)");
    let venv =
        pitcrew_harness::snmpsim::venv().context("building the facility simulators' venv")?;
    println!("    {}", venv.display());
    done(t);
    let t = step("provision: sushy-tools, the Redfish emulator (a Python venv from PyPI, cached)");
    let venv = pitcrew_harness::redfish::venv().context("building the Redfish emulator's venv")?;
    println!("    {}", venv.display());
    done(t);
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

fn test(extra: &[String]) -> Result<()> {
    let all = Instant::now();
    provision()?;

    let t = step("check: cargo fmt");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    done(t);

    let t = step("check: cargo clippy");
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    done(t);

    let t = step("build: tests");
    run(cargo().args(["test", "--workspace", "--no-run"]))?;
    done(t);

    let t = step("start: Apache Kafka (KRaft, loopback)");
    let broker = KafkaBroker::start().context("starting Kafka")?;
    println!("    bootstrap {}", broker.bootstrap());
    done(t);

    let t = step("test: every crate, real Kafka included");
    let extra: Vec<&String> = extra.iter().skip_while(|a| *a == "--").collect();
    let mut child = cargo()
        .args(["test", "--workspace", "--no-fail-fast"])
        .args(extra)
        .env("PITCREW_TEST_KAFKA", broker.bootstrap())
        .env("PITCREW_TEST_KAFKA_SASL", broker.sasl_bootstrap())
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let mut totals = Totals::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    done(t);

    let t = step("stop: Apache Kafka");
    drop(broker);
    done(t);

    println!("==> total {:.1} s", all.elapsed().as_secs_f64());
    println!(
        "benchmarks not run (cargo test ... -- --ignored runs them): {}",
        totals.benchmarks
    );
    // The closing line CI reads.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        totals.passed,
        totals.failed,
        totals.ignored.saturating_sub(totals.benchmarks)
    );
    if !status.success() {
        bail!("tests failed: {status}");
    }
    Ok(())
}

fn kafka_shell() -> Result<()> {
    let broker = KafkaBroker::start().context("starting Kafka")?;
    println!(
        "Kafka {} on {}",
        pitcrew_harness::kafka::KAFKA_VERSION,
        broker.bootstrap()
    );
    println!("log: {}", broker.log_path().display());
    println!("press Enter to stop");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

fn kube_shell() -> Result<()> {
    let api = pitcrew_harness::kube::KubeApiserver::start()
        .context("starting kube-apiserver (built with Go on first use)")?;
    let kubeconfig = api.dir().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig)?;
    println!("kube-apiserver on {}", api.url());
    println!("kubeconfig: {}", kubeconfig.display());
    println!("press Enter to stop");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    Ok(())
}

/// Sums cargo test's `test result:` lines.
#[derive(Debug, Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
    /// Ignored because they are benchmarks (`#[ignore = "a benchmark..."]`),
    /// run by hand: not skipped tests.
    benchmarks: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        if line.starts_with("test ") && line.contains("... ignored, a benchmark") {
            self.benchmarks += 1;
            return;
        }
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

/// Seeds a fuzz target's corpus with the project's own examples and runs
/// cargo-fuzz for a while. Needs a nightly toolchain and cargo-fuzz.
fn fuzz(args: &[String]) -> Result<()> {
    let (target, seconds) = match args {
        [] => ("decode", "60"),
        [t] if t.parse::<u64>().is_ok() => ("decode", t.as_str()),
        [t] => (t.as_str(), "60"),
        [t, s, ..] => (t.as_str(), s.as_str()),
    };
    let seconds: u64 = seconds.parse().context("SECONDS must be a number")?;
    let root = pitcrew_harness::workspace_root();
    let (krate, seeds): (&str, Vec<Vec<u8>>) = match target {
        "decode" => {
            use pitcrew_contract::{encode, examples};
            let mut seeds: Vec<Vec<u8>> = examples::all_events().iter().map(encode).collect();
            seeds.push(encode(&examples::incident()));
            seeds.push(encode(&examples::action()));
            seeds.push(encode(&examples::audit()));
            seeds.push(encode(&examples::state()));
            ("contract", seeds)
        }
        "kmsg" => {
            let mut seeds = Vec::new();
            // The project's own corpus and the real-world one.
            for dir in ["ingest/testdata/kmsg", "ingest/testdata/kmsg/wild"] {
                for entry in std::fs::read_dir(root.join(dir))? {
                    let path = entry?.path();
                    if path.extension().is_some_and(|e| e == "log" || e == "txt") {
                        seeds.push(std::fs::read(path)?);
                    }
                }
            }
            ("ingest", seeds)
        }
        "rules" => {
            let mut seeds = Vec::new();
            for entry in std::fs::read_dir(root.join("rules/pack"))? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "toml") {
                    seeds.push(std::fs::read(path)?);
                }
            }
            ("rules", seeds)
        }
        "facility" => {
            let mut seeds = Vec::new();
            for dir in ["facility/testdata", "facility/profiles", "facility/maps"] {
                for entry in std::fs::read_dir(root.join(dir))? {
                    let path = entry?.path();
                    if path
                        .extension()
                        .is_some_and(|e| e == "snmprec" || e == "toml")
                    {
                        seeds.push(std::fs::read(path)?);
                    }
                }
            }
            seeds.push(b"snmpv3://ops@[fe80::1]:161?auth=sha256&priv=aes&context=x".to_vec());
            ("facility", seeds)
        }
        other => bail!("unknown fuzz target `{other}`: decode, kmsg, rules or facility"),
    };
    let corpus = root.join(krate).join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    for (i, seed) in seeds.iter().enumerate() {
        std::fs::write(corpus.join(format!("seed-{i:02}")), seed)?;
    }
    if !Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    // cargo fuzz runs from the crate that holds the fuzz/ folder.
    run(Command::new("cargo").current_dir(root.join(krate)).args([
        "+nightly",
        "fuzz",
        "run",
        target,
        "--",
        &format!("-max_total_time={seconds}"),
    ]))
}

#[cfg(test)]
mod tests {
    use super::Totals;

    #[test]
    fn sums_cargo_test_result_lines() {
        let mut t = Totals::default();
        t.add("test result: ok. 15 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.43s");
        t.add("test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1s");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (18, 1, 2));
        t.add("test bench_x ... ignored, a benchmark: run it with --ignored");
        t.add("test real_one ... ignored");
        assert_eq!(t.benchmarks, 1);
    }
}
