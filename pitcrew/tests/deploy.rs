//! What can be checked of deploy/ without Docker or a Helm binary:
//!
//! - every YAML file parses (PyYAML), and every Helm template parses as
//!   YAML once its template actions are stood in for (its shape, not its
//!   rendering: no `helm` here, see deploy/README.md);
//! - the chart's RBAC grants exactly the verbs the code uses, and the code
//!   uses no call the RBAC would refuse;
//! - every pitcrew command line in the compose file and the chart is one
//!   the binary accepts, and the configs they mount parse;
//! - every file the compose file and the Dockerfiles refer to exists.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Parses YAML (every document) with PyYAML; returns them as JSON.
fn yaml(name: &str, text: &str) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps(list(yaml.safe_load_all(sys.stdin))))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is not YAML: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A Helm template with its actions stood in for: control lines dropped,
/// a whole-line `{{ ... | nindent N }}` becomes an N-indented mapping entry
/// (what an included label block is), any other action the scalar `x`.
fn stand_in(template: &str) -> String {
    let mut out = String::new();
    for line in template.lines() {
        let t = line.trim();
        if t.starts_with("{{-")
            && !line.contains(':')
            && !t.contains("include")
            && !t.contains("toYaml")
        {
            continue; // if / range / end / define
        }
        if t.starts_with("{{") && t.ends_with("}}") && !line.contains(':') {
            let n = t
                .split("indent ")
                .nth(1)
                .and_then(|r| r.trim_end_matches('}').trim().parse::<usize>().ok())
                .unwrap_or(0);
            out.push_str(&" ".repeat(n));
            out.push_str("stand_in: x\n");
            continue;
        }
        let mut s = String::new();
        let mut rest = line;
        while let Some(i) = rest.find("{{") {
            s.push_str(&rest[..i]);
            match rest[i..].find("}}") {
                Some(j) => {
                    s.push('x');
                    rest = &rest[i + j + 2..];
                }
                None => {
                    rest = "";
                }
            }
        }
        s.push_str(rest);
        out.push_str(&s);
        out.push('\n');
    }
    out
}

fn files(dir: &Path, ext: &[&str]) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(files(&p, ext));
        } else if ext.iter().any(|x| p.extension().is_some_and(|e| e == *x)) {
            v.push(p);
        }
    }
    v.sort();
    v
}

#[test]
fn yaml_files_and_chart_templates_parse() {
    let mut n = 0;
    for dir in ["deploy", "dashboards"] {
        for f in files(&root().join(dir), &["yml", "yaml"]) {
            let text = std::fs::read_to_string(&f).unwrap();
            let name = f.display().to_string();
            let docs = if name.contains("/templates/") {
                yaml(&name, &stand_in(&text))
            } else {
                yaml(&name, &text)
            };
            assert!(!docs.is_empty(), "{name}");
            n += 1;
        }
    }
    assert!(n >= 15, "{n} YAML files");
    // The chart's kinds are all there.
    let mut kinds = BTreeSet::new();
    for f in files(&root().join("deploy/helm/pitcrew/templates"), &["yaml"]) {
        for d in yaml("t", &stand_in(&std::fs::read_to_string(&f).unwrap())) {
            if let Some(k) = d["kind"].as_str() {
                kinds.insert(k.to_owned());
            }
        }
    }
    for k in [
        "DaemonSet",
        "Deployment",
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "ServiceMonitor",
        "Service",
        "Job",
    ] {
        assert!(kinds.contains(k), "no {k} in the chart: {kinds:?}");
    }
}

/// The (resource, verb) pairs the ClusterRole named `*suffix` grants.
fn grants(docs: &[serde_json::Value], suffix: &str) -> BTreeSet<(String, String)> {
    {
        let role = docs
            .iter()
            .find(|d| {
                d["kind"] == "ClusterRole"
                    && d["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with(suffix))
            })
            .unwrap_or_else(|| panic!("no ClusterRole *{suffix}"));
        let mut s = BTreeSet::new();
        for r in role["rules"].as_array().unwrap() {
            assert_eq!(r["apiGroups"], serde_json::json!([""]), "core group only");
            for res in r["resources"].as_array().unwrap() {
                for v in r["verbs"].as_array().unwrap() {
                    s.insert((
                        res.as_str().unwrap().to_owned(),
                        v.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        s
    }
}

fn pair(r: &str, v: &str) -> (String, String) {
    (r.to_owned(), v.to_owned())
}

/// What remediation calls: the kube-rs calls in remediate/src/exec/kube.rs.
fn used_by_remediate() -> BTreeSet<(String, String)> {
    let kube = read("remediate/src/exec/kube.rs");
    let mut used = BTreeSet::new();
    if kube.contains("api.get(") {
        used.insert(pair("nodes", "get"));
    }
    if kube.contains("api.replace(") {
        used.insert(pair("nodes", "update"));
    }
    if kube.contains(".list(") {
        used.insert(pair("pods", "list"));
    }
    if kube.contains(".evict(") {
        used.insert(pair("pods/eviction", "create"));
    }
    for forbidden in [".patch(", ".delete(", ".create(", ".watch(", "Api::<Secret"] {
        assert!(
            !kube.contains(forbidden),
            "the executor calls {forbidden}: the chart's RBAC must say so"
        );
    }
    used
}

fn used_by_collect() -> BTreeSet<(String, String)> {
    let k8s = read("ingest/src/k8s.rs");
    assert!(k8s.contains("/api/v1/nodes/"));
    assert!(!k8s.contains("\"PATCH\"") && !k8s.contains("\"PUT\"") && !k8s.contains("\"POST\""));
    BTreeSet::from([pair("nodes", "get")])
}

#[test]
fn rbac_grants_exactly_what_the_code_calls() {
    let docs = yaml(
        "rbac.yaml",
        &stand_in(&read("deploy/helm/pitcrew/templates/rbac.yaml")),
    );
    assert_eq!(grants(&docs, "-remediate"), used_by_remediate());
    assert_eq!(grants(&docs, "-collect"), used_by_collect());
}

/// The chart rendered by Helm itself (built once with Go into the harness
/// cache): it lints, renders with and without an existing Secret, and what
/// it renders holds the same RBAC, accepted command lines, no secret value
/// outside the Secret, and non-root central stages.
#[test]
fn helm_lints_and_renders_the_chart() {
    let chart = root().join("deploy/helm/pitcrew");
    let chart = chart.to_str().unwrap();
    pitcrew_harness::helm::run(&["lint", "--strict", chart]).unwrap();
    let text = pitcrew_harness::helm::run(&[
        "template",
        "fleet",
        chart,
        "--namespace",
        "pitcrew",
        "--set",
        "secrets.bmcPassword=bmc-secret-value,secrets.webhookUrl=https://hooks.example/x,secrets.adminToken=admin-secret-value",
    ])
    .unwrap();
    let docs: Vec<serde_json::Value> = yaml("helm template", &text)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    assert_eq!(grants(&docs, "-remediate"), used_by_remediate());
    assert_eq!(grants(&docs, "-collect"), used_by_collect());
    let mut kinds = BTreeSet::new();
    for d in &docs {
        let kind = d["kind"].as_str().unwrap().to_owned();
        if kind != "Secret" {
            let s = d.to_string();
            assert!(
                !s.contains("bmc-secret-value") && !s.contains("admin-secret-value"),
                "a secret value outside the Secret: {kind}"
            );
        }
        let pod = &d["spec"]["template"]["spec"];
        if let Some(cs) = pod["containers"].as_array() {
            for c in cs {
                let args: Vec<String> = c["args"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                pitcrew_accepts(&args);
            }
            let name = d["metadata"]["name"].as_str().unwrap();
            if kind == "Deployment" {
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            }
        }
        kinds.insert(kind);
    }
    for k in [
        "DaemonSet",
        "Deployment",
        "ClusterRole",
        "Secret",
        "ServiceMonitor",
        "Job",
    ] {
        assert!(kinds.contains(k), "{k} not rendered: {kinds:?}");
    }
    // With an existing Secret the chart makes none and points at that one.
    let text = pitcrew_harness::helm::run(&[
        "template",
        "fleet",
        chart,
        "--set",
        "secrets.existingSecret=fleet-creds",
    ])
    .unwrap();
    assert!(!text.contains("kind: Secret"), "{text}");
    assert!(text.contains("name: fleet-creds"));
}

fn pitcrew_accepts(args: &[String]) {
    // clap validates every argument before it acts on --help.
    let mut a: Vec<String> = args
        .iter()
        .map(|s| s.replace("$(NODE_NAME)", "n1").replace("$(POD_NAME)", "p"))
        .collect();
    a.push("--help".into());
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(&a)
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pitcrew {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn command_lines_are_accepted_and_mounted_configs_parse() {
    let compose = &yaml("compose.yaml", &read("deploy/compose.yaml"))[0];
    let services = compose["services"].as_object().unwrap();
    let mut pitcrew_services = 0;
    for (name, s) in services {
        if s["image"] == "pitcrew:dev"
            || s["<<"].is_object()
            || s["build"]["dockerfile"] == "deploy/Dockerfile"
        {
            let cmd: Vec<String> = s["command"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: no command"))
                .iter()
                .map(|v| v.as_str().unwrap().to_owned())
                .collect();
            pitcrew_accepts(&cmd);
            pitcrew_services += 1;
        }
        if let Some(b) = s["build"]["dockerfile"].as_str() {
            assert!(root().join(b).exists(), "{name}: {b}");
        }
        for v in s["volumes"].as_array().into_iter().flatten() {
            let host = v.as_str().unwrap().split(':').next().unwrap();
            assert!(
                root().join("deploy").join(host).exists(),
                "{name}: volume {host} does not exist"
            );
        }
    }
    assert!(pitcrew_services >= 4, "{pitcrew_services}");
    // The chart's containers.
    for f in [
        "daemonset-collect.yaml",
        "deployment-rules.yaml",
        "deployment-remediate.yaml",
        "job-topics.yaml",
    ] {
        let docs = yaml(
            f,
            &stand_in(&read(&format!("deploy/helm/pitcrew/templates/{f}"))),
        );
        let c = &docs[0]["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<String> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        pitcrew_accepts(&args);
    }
    // The configs the stack mounts.
    pitcrew_rules::Inventory::parse("inventory.toml", &read("deploy/compose/inventory.toml"))
        .unwrap_or_else(|d| panic!("{d:?}"));
    pitcrew_remediate::config::RemediateConfig::parse(
        "remediation.toml",
        &read("deploy/compose/remediation.toml"),
    )
    .unwrap();
    let values = &yaml("values.yaml", &read("deploy/helm/pitcrew/values.yaml"))[0];
    pitcrew_rules::Inventory::parse("inventory", values["inventory"].as_str().unwrap())
        .unwrap_or_else(|d| panic!("{d:?}"));
    pitcrew_remediate::config::RemediateConfig::parse(
        "remediation",
        values["remediation"].as_str().unwrap(),
    )
    .unwrap();
    // Every file the Dockerfiles copy exists.
    for d in ["deploy/Dockerfile", "deploy/bmc-sim/Dockerfile"] {
        for line in read(d)
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        {
            let src = line.split_whitespace().nth(1).unwrap();
            assert!(root().join(src).exists(), "{d}: {src}");
        }
    }
}
