//! What can be checked of deploy/ without Docker:
//!
//! - every YAML file outside the chart's templates parses (PyYAML);
//! - the chart, rendered by Helm itself (built with Go, see
//!   deploy/README.md), lints and holds: RBAC exactly the verbs the code
//!   uses, command lines the binary accepts, no secret value outside the
//!   Secret, non-root central stages;
//! - every pitcrew command line in the compose file is accepted by the
//!   binary, and the configs the compose file and the chart's values carry
//!   parse with pitcrew's own parsers;
//! - every file the compose file mounts and the Dockerfiles copy exists.

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
fn yaml_files_parse() {
    let mut n = 0;
    for dir in ["deploy", "dashboards"] {
        for f in files(&root().join(dir), &["yml", "yaml"]) {
            let name = f.display().to_string();
            // Chart templates are Go templates: Helm renders them below.
            if name.contains("/templates/") {
                continue;
            }
            let docs = yaml(&name, &std::fs::read_to_string(&f).unwrap());
            assert!(!docs.is_empty(), "{name}");
            n += 1;
        }
    }
    assert!(n >= 8, "{n} YAML files");
}

/// The (resource, verb) pairs the ClusterRole named `*suffix` grants.
fn grants(docs: &[serde_json::Value], suffix: &str) -> BTreeSet<(String, String)> {
    role_grants(docs, "ClusterRole", suffix).unwrap_or_else(|| panic!("no ClusterRole *{suffix}"))
}

/// The (resource, verb) pairs the `kind` (Role, ClusterRole) named
/// `*suffix` grants, if there is one.
fn role_grants(
    docs: &[serde_json::Value],
    kind: &str,
    suffix: &str,
) -> Option<BTreeSet<(String, String)>> {
    {
        let role = docs.iter().find(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with(suffix))
        })?;
        let mut s = BTreeSet::new();
        for r in role["rules"].as_array().unwrap() {
            for group in r["apiGroups"].as_array().unwrap() {
                let group = group.as_str().unwrap();
                for res in r["resources"].as_array().unwrap() {
                    let res = res.as_str().unwrap();
                    // `group:resource` outside the core group.
                    let res = if group.is_empty() {
                        res.to_owned()
                    } else {
                        format!("{group}:{res}")
                    };
                    for v in r["verbs"].as_array().unwrap() {
                        s.insert((res.clone(), v.as_str().unwrap().to_owned()));
                    }
                }
            }
        }
        Some(s)
    }
}

fn pair(r: &str, v: &str) -> (String, String) {
    (r.to_owned(), v.to_owned())
}

/// What the node check calls (remediate/src/exec/kube_check.rs), in its
/// namespace: the Role `*-remediate-check`.
fn used_by_node_check() -> BTreeSet<(String, String)> {
    let check = read("remediate/src/exec/kube_check.rs");
    let mut used = BTreeSet::new();
    assert!(check.contains("Api<Job>") && check.contains("Api<Pod>"));
    for (call, resource, verb) in [
        (".create(&PostParams", "batch:jobs", "create"),
        (".get_opt(&name", "batch:jobs", "get"),
        (".delete(&name", "batch:jobs", "delete"),
        (".list(", "pods", "list"),
        (".logs(", "pods/log", "get"),
    ] {
        if check.contains(call) {
            used.insert(pair(resource, verb));
        }
    }
    for forbidden in [".watch(", ".patch(", ".replace(", "Api::all", "Secret"] {
        assert!(
            !check.contains(forbidden),
            "the node check calls {forbidden}: the chart's RBAC must say so"
        );
    }
    used
}

/// What remediation calls: the kube-rs calls in remediate/src/exec/kube.rs
/// and kube_jobs.rs (the training jobs on a node).
fn used_by_remediate() -> BTreeSet<(String, String)> {
    let kube = read("remediate/src/exec/kube.rs");
    let jobs = read("remediate/src/exec/kube_jobs.rs");
    let mut used = BTreeSet::new();
    if jobs.contains("Api<Job>") && jobs.contains("api.get(name)") {
        used.insert(pair("batch:jobs", "get"));
    }
    if jobs.contains(".list(") {
        used.insert(pair("pods", "list"));
    }
    for forbidden in [".create(", ".delete(", ".patch(", ".replace(", ".watch("] {
        assert!(
            !jobs.contains(forbidden),
            "kube_jobs.rs calls {forbidden}: the chart's RBAC must say so"
        );
    }
    if kube.contains("nodes().get(node)") {
        used.insert(pair("nodes", "get"));
    }
    if kube.contains(".replace(") {
        used.insert(pair("nodes", "update"));
    }
    // Cordon, taint and uncordon are merge patches (kube-rs's uncordon too).
    if kube.contains(".patch(node,") || kube.contains(".uncordon(node)") {
        used.insert(pair("nodes", "patch"));
    }
    if kube.contains(".list(") {
        used.insert(pair("pods", "list"));
    }
    if kube.contains(".evict(") {
        used.insert(pair("pods/eviction", "create"));
    }
    if kube.contains("api.patch(") {
        used.insert(pair("nodes", "patch"));
    }
    if kube.contains("api.patch_status(") {
        used.insert(pair("nodes/status", "patch"));
    }
    // The one create: an Event on the Node.
    assert!(kube.matches(".create(").count() <= 1);
    if kube.contains("Api<Event>") && kube.contains(".create(") {
        used.insert(pair("events.k8s.io:events", "create"));
    }
    for forbidden in [".delete(", ".watch(", "Api::<Secret", "Api<Secret"] {
        assert!(
            !kube.contains(forbidden),
            "the executor calls {forbidden}: the chart's RBAC must say so"
        );
    }
    used
}

fn used_by_collect() -> BTreeSet<(String, String)> {
    let k8s = read("ingest/src/k8s.rs");
    // The agent's kube-rs client: a GET of its Node, nothing else (the
    // architecture test checks the same for every collector source).
    assert!(k8s.contains("Api<Node>") && k8s.contains(".get(name)"));
    for forbidden in [
        ".list(",
        ".watch(",
        ".patch",
        ".replace",
        "PostParams",
        "DeleteParams",
    ] {
        assert!(
            !k8s.contains(forbidden),
            "the agent calls {forbidden}: the chart's RBAC must say so"
        );
    }
    BTreeSet::from([pair("nodes", "get")])
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
    assert_eq!(
        role_grants(&docs, "Role", "-remediate-check"),
        None,
        "the node check's Role only where it is asked for"
    );
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
                pitcrew_accepts(&strings(&c["args"]));
            }
            let name = d["metadata"]["name"].as_str().unwrap();
            if kind == "Deployment" || kind == "StatefulSet" {
                assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
            }
            // The rules stage's transactional id is its --instance, which
            // must survive restarts: a StatefulSet's pod name does, a
            // Deployment's does not.
            if cs.iter().any(|c| c["args"][0] == "rules") {
                assert_eq!(
                    kind, "StatefulSet",
                    "{name}: rules need stable instance ids"
                );
                assert!(
                    strings(&cs[0]["args"]).contains(&"--instance=$(POD_NAME)".to_owned()),
                    "{name}"
                );
            }
        }
        kinds.insert(kind);
    }
    for k in [
        "DaemonSet",
        "Deployment",
        "StatefulSet",
        "PodDisruptionBudget",
        "ClusterRole",
        "ClusterRoleBinding",
        "ServiceAccount",
        "Secret",
        "ConfigMap",
        "ServiceMonitor",
        "PrometheusRule",
        "Service",
        "Job",
    ] {
        assert!(kinds.contains(k), "{k} not rendered: {kinds:?}");
    }
    // The PrometheusRule is the alerts file promtool tests, unchanged.
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    let alerts = &yaml(
        "pitcrew-alerts.yml",
        &read("deploy/prometheus/pitcrew-alerts.yml"),
    )[0];
    assert_eq!(rule["spec"], *alerts);
    // The admin API (no TLS of its own) stays on the pod's loopback.
    let remediate = docs
        .iter()
        .find(|d| {
            d["kind"] == "Deployment"
                && d["spec"]["template"]["spec"]["containers"][0]["args"][0] == "remediate"
        })
        .unwrap();
    assert!(
        strings(&remediate["spec"]["template"]["spec"]["containers"][0]["args"])
            .contains(&"--admin-listen=127.0.0.1:9466".to_owned())
    );
    // Your own rule files next to the built-in pack, and extra env and
    // volumes in every pitcrew container.
    let dir = pitcrew_harness::run_dir("helm-values").unwrap();
    let values = dir.join("values.yaml");
    std::fs::write(
        &values,
        "rules:\n  files:\n    site.toml: |\n      [[rule]]\n      name = \"site-xid-48\"\n      severity = \"critical\"\n      plan = \"reboot_node\"\n      when = { kind = \"gpu.xid\", where = { \"data.code\" = 48 } }\n\
         extraEnv:\n  - {name: SSL_CERT_FILE, value: /etc/site-ca/ca.crt}\n\
         extraVolumes:\n  - {name: site-ca, configMap: {name: site-ca}}\n\
         extraVolumeMounts:\n  - {name: site-ca, mountPath: /etc/site-ca, readOnly: true}\n\
         remediate:\n  nodeCheckJobs: true\n",
    )
    .unwrap();
    let text =
        pitcrew_harness::helm::run(&["template", "fleet", chart, "-f", values.to_str().unwrap()])
            .unwrap();
    let docs: Vec<serde_json::Value> = yaml("helm template -f", &text)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    // The node check's Jobs: a Role in the release's namespace, exactly
    // what kube_check.rs calls.
    assert_eq!(
        role_grants(&docs, "Role", "-remediate-check"),
        Some(used_by_node_check())
    );
    let rule_files = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-rules"))
        })
        .expect("a ConfigMap of the rule files");
    let site = rule_files["data"]["site.toml"].as_str().unwrap();
    let check_dir = dir.join("rules");
    std::fs::create_dir_all(&check_dir).unwrap();
    std::fs::write(check_dir.join("site.toml"), site).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pitcrew"))
        .args(["check", "@default", check_dir.to_str().unwrap()])
        .env_remove("PITCREW_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the rendered rule file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut workloads = 0;
    for d in &docs {
        let pod = &d["spec"]["template"]["spec"];
        let Some(c) = pod["containers"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        if c["args"][0] == "topics" {
            continue;
        }
        workloads += 1;
        assert!(
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "SSL_CERT_FILE"),
            "{d}"
        );
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "site-ca"),
            "{d}"
        );
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["name"] == "site-ca"),
            "{d}"
        );
        if c["args"][0] == "rules" {
            let args = strings(&c["args"]);
            assert!(
                args.contains(&"--rules=@default".to_owned())
                    && args.contains(&"--rules=/etc/pitcrew-rules".to_owned()),
                "{args:?}"
            );
            assert!(c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/etc/pitcrew-rules"));
        }
    }
    assert_eq!(workloads, 3, "collect, rules, remediate");
    let _ = std::fs::remove_dir_all(&dir);

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

/// A JSON array of strings (a command line).
fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_str().unwrap().to_owned())
        .collect()
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
fn compose_command_lines_are_accepted_and_mounted_configs_parse() {
    let compose = &yaml("compose.yaml", &read("deploy/compose.yaml"))[0];
    let services = compose["services"].as_object().unwrap();
    let mut pitcrew_services = 0;
    for (name, s) in services {
        // The services merged from the `x-pitcrew` anchor.
        if s["image"] == "pitcrew:dev" {
            pitcrew_accepts(&strings(&s["command"]));
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

/// The chart's production settings: Kafka TLS and SASL from Secrets in
/// every pitcrew container (the topics hook Job too, which runs before the
/// ConfigMap exists), read by pitcrew's own config loader as the pods
/// would; the dashboards as ConfigMaps for the Grafana sidecar, equal to
/// dashboards/; values.schema.json refusing a typo and a second
/// remediation instance.
#[test]
fn helm_renders_kafka_security_and_dashboards_and_refuses_bad_values() {
    let chart = root().join("deploy/helm/pitcrew");
    let chart = chart.to_str().unwrap();
    let text = pitcrew_harness::helm::run(&[
        "template",
        "fleet",
        chart,
        "--set",
        "kafka.tls.enabled=true,kafka.tls.caSecret=kafka-ca,kafka.tls.clientSecret=kafka-client,\
         kafka.sasl.mechanism=SCRAM-SHA-512,kafka.sasl.username=pitcrew,kafka.sasl.passwordSecret=kafka-pass,\
         facility.enabled=true",
    ])
    .unwrap();
    let docs: Vec<serde_json::Value> = yaml("helm template (kafka security)", &text)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let pitcrew_toml = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["pitcrew.toml"].is_string())
        .map(|d| d["data"]["pitcrew.toml"].as_str().unwrap().to_owned())
        .unwrap();
    let mut checked = Vec::new();
    for d in &docs {
        let pod = &d["spec"]["template"]["spec"];
        let Some(c) = pod["containers"].as_array().and_then(|c| c.first()) else {
            continue;
        };
        let name = d["metadata"]["name"].as_str().unwrap().to_owned();
        let env = c["env"].as_array().cloned().unwrap_or_default();
        let overrides: Vec<(String, String)> = env
            .iter()
            .filter_map(|e| {
                Some((
                    e["name"].as_str()?.to_owned(),
                    e["value"].as_str()?.to_owned(),
                ))
            })
            .collect();
        // The topics Job has no ConfigMap: the environment alone.
        let file = if d["kind"] == "Job" {
            ""
        } else {
            &pitcrew_toml
        };
        let cfg = pitcrew_bus::BusConfig::from_toml(file, &name, overrides)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let sec = &cfg.kafka.security;
        assert_eq!(sec.protocol.as_deref(), Some("sasl_ssl"), "{name}");
        assert_eq!(
            sec.sasl_mechanism.as_deref(),
            Some("SCRAM-SHA-512"),
            "{name}"
        );
        let ca = sec.ca_file.clone().unwrap();
        let cert = sec.cert_file.clone().unwrap();
        let mounts: Vec<String> = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["mountPath"].as_str().unwrap().to_owned())
            .collect();
        for file in [&ca, &cert] {
            assert!(
                mounts.iter().any(|m| file.starts_with(m)),
                "{name}: {} is not under a mount: {mounts:?}",
                file.display()
            );
        }
        // The password: from the Secret, into the variable the config names.
        let var = sec.sasl_password_env.clone().unwrap();
        let from = env.iter().find(|e| e["name"] == var.as_str()).unwrap();
        assert_eq!(
            from["valueFrom"]["secretKeyRef"]["name"], "kafka-pass",
            "{name}"
        );
        assert!(
            from["value"].is_null(),
            "{name}: a password value in the manifest"
        );
        let volumes = pod["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == "kafka-client"),
            "{name}"
        );
        checked.push(name);
    }
    assert_eq!(
        checked.len(),
        5,
        "collect, rules, remediate, facility, topics: {checked:?}"
    );
    // The facility poller reads the devices file the chart renders.
    let facility_toml = docs
        .iter()
        .find_map(|d| d["data"]["facility.toml"].as_str())
        .expect("facility.toml in the ConfigMap");
    pitcrew_facility::FacilityConfig::parse("facility.toml", facility_toml, &Default::default())
        .unwrap();
    let poller = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "fleet-pitcrew-facility")
        .expect("the facility Deployment");
    let args = &poller["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(
        (&args[0], &args[1]),
        (&serde_json::json!("facility"), &serde_json::json!("run"))
    );

    // The dashboards, each a ConfigMap the sidecar finds, equal to the file.
    let text = pitcrew_harness::helm::run(&["template", "fleet", chart]).unwrap();
    let docs: Vec<serde_json::Value> = yaml("helm template", &text)
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let mut dashboards = 0;
    for f in files(&root().join("dashboards"), &["json"]) {
        let file = f.file_name().unwrap().to_str().unwrap().to_owned();
        let cm = docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && d["data"][&file].is_string())
            .unwrap_or_else(|| panic!("no ConfigMap for {file}"));
        assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(cm["metadata"]["annotations"]["grafana_folder"], "pitcrew");
        let rendered: serde_json::Value =
            serde_json::from_str(cm["data"][&file].as_str().unwrap()).unwrap();
        let original: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(rendered, original, "{file}");
        dashboards += 1;
    }
    assert_eq!(dashboards, 4);

    // values.schema.json: what Helm refuses before anything is applied.
    for (set, says) in [
        (
            "remediate.replica=2",
            "Additional property replica is not allowed",
        ),
        ("remediate.replicas=2", "remediate.replicas"),
        ("kafka.sasl.mechanism=SCRAM", "kafka.sasl.mechanism"),
    ] {
        let err =
            pitcrew_harness::helm::run(&["template", "fleet", chart, "--set", set]).expect_err(set);
        assert!(err.to_string().contains(says), "{set}: {err}");
    }
}
