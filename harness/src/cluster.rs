//! A Kubernetes control plane for tests: the harness's kube-apiserver
//! ([`crate::kube`]) with kube-controller-manager and kube-scheduler of the
//! same `k8s.io/kubernetes` version (assets/kube-controllers: one binary
//! for both, built once with Go) and KWOK (`sigs.k8s.io/kwok`, built once
//! with Go) as the kubelets: Nodes that initialize and heartbeat their
//! lease, Pods that are scheduled, start, run, complete (Job pods) and, on
//! deletion, terminate when their grace period is up, as KWOK's own
//! "general" pod stages and "fast" node stages describe (read from the
//! KWOK module in the Go module cache, not copied here).
//!
//! Everything listens on 127.0.0.1 and stops on drop. Nodes KWOK manages
//! carry the annotation `kwok.x-k8s.io/node: fake` ([`KubeCluster::add_node`]).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::kube::KubeApiserver;
use crate::process::{run, Supervised};
use crate::{cache_dir, free_port, HarnessError};

/// The Kubernetes version of every control-plane component.
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The KWOK version (served by the Go module proxy).
pub const KWOK_VERSION: &str = "v0.8.0";

/// The annotation that hands a Node to KWOK.
pub const KWOK_NODE_ANNOTATION: (&str, &str) = ("kwok.x-k8s.io/node", "fake");

fn go(cmd: &mut Command) -> &mut Command {
    let go = cache_dir().join("go");
    cmd.env("GOPATH", go.join("path"))
        .env("GOMODCACHE", go.join("mod"))
        .env("GOCACHE", go.join("build"))
}

/// Builds kube-controller-manager and kube-scheduler (one binary, the
/// component its first argument) once into the cache; returns its path.
pub fn ensure_controllers() -> Result<PathBuf, HarnessError> {
    let _building = crate::build_lock();
    let out = cache_dir().join(format!("kube-controllers-{KUBERNETES_VERSION}"));
    if out.exists() {
        return Ok(out);
    }
    let module = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/kube-controllers");
    let staging = out.with_extension(format!("partial-{}", std::process::id()));
    run(go(Command::new("go")
        .current_dir(&module)
        .args(["build", "-o"])
        .arg(&staging)
        .arg("."))
    .env("GOFLAGS", "-mod=readonly"))?;
    std::fs::rename(&staging, &out).map_err(|e| HarnessError::io("install kube-controllers", e))?;
    Ok(out)
}

/// Builds KWOK once into the cache; returns its path.
pub fn ensure_kwok() -> Result<PathBuf, HarnessError> {
    let _building = crate::build_lock();
    let out = cache_dir().join(format!("kwok-{KWOK_VERSION}"));
    if out.exists() {
        return Ok(out);
    }
    let bin = cache_dir().join(format!(
        "kwok-{KWOK_VERSION}.partial-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&bin).map_err(|e| HarnessError::io("create kwok build dir", e))?;
    run(go(Command::new("go")
        .args([
            "install",
            &format!("sigs.k8s.io/kwok/cmd/kwok@{KWOK_VERSION}"),
        ])
        .env("GOBIN", &bin)
        .env("GOFLAGS", "-mod=mod")))?;
    std::fs::rename(bin.join("kwok"), &out).map_err(|e| HarnessError::io("install kwok", e))?;
    let _ = std::fs::remove_dir_all(&bin);
    Ok(out)
}

/// KWOK's stages from its module (downloaded by [`ensure_kwok`]): nodes
/// initialize and heartbeat with a lease; pods go through the general
/// lifecycle, graceful deletion included.
fn kwok_stages() -> Result<String, HarnessError> {
    let root = cache_dir()
        .join("go/mod/sigs.k8s.io")
        .join(format!("kwok@{KWOK_VERSION}"))
        .join("kustomize/stage");
    let mut files = vec![
        root.join("node/fast/node-initialize.yaml"),
        root.join("node/heartbeat-with-lease/node-heartbeat-with-lease.yaml"),
    ];
    let pods = root.join("pod/general");
    let mut pod_files: Vec<PathBuf> = std::fs::read_dir(&pods)
        .map_err(|e| HarnessError::io(format!("read {}", pods.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    pod_files.sort();
    files.extend(pod_files);
    // The harness's own: a pod failing as its annotations script, and a
    // terminating pod ending Failed as a kubelet ends it.
    let own = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/kwok");
    files.push(own.join("pod-fail.yaml"));
    files.push(own.join("pod-terminate.yaml"));
    let mut text = String::new();
    for f in files {
        let stage = std::fs::read_to_string(&f)
            .map_err(|e| HarnessError::io(format!("read {}", f.display()), e))?;
        text.push_str("---\n");
        text.push_str(&stage);
        text.push('\n');
    }
    Ok(text)
}

/// The control plane, running. Stopped on drop (the components before the
/// API server they talk to).
#[derive(Debug)]
pub struct KubeCluster {
    kwok: Option<Supervised>,
    scheduler: Option<Supervised>,
    controller_manager: Option<Supervised>,
    api: KubeApiserver,
    kubeconfig: PathBuf,
}

impl KubeCluster {
    pub fn start() -> Result<KubeCluster, HarnessError> {
        let controllers = ensure_controllers()?;
        let kwok = ensure_kwok()?;
        let api = KubeApiserver::start()?;
        let dir = api.dir().to_path_buf();
        let kubeconfig = dir.join("kubeconfig");
        api.write_kubeconfig(&kubeconfig)?;
        let kc = kubeconfig.display().to_string();
        let common = |port: u16| {
            vec![
                format!("--kubeconfig={kc}"),
                format!("--authentication-kubeconfig={kc}"),
                format!("--authorization-kubeconfig={kc}"),
                "--leader-elect=false".to_owned(),
                "--bind-address=127.0.0.1".to_owned(),
                format!("--secure-port={port}"),
            ]
        };
        let mut cm_args = vec!["kube-controller-manager".to_owned()];
        cm_args.extend(common(free_port()?));
        cm_args.extend([
            format!(
                "--service-account-private-key-file={}",
                dir.join("sa.key").display()
            ),
            format!("--root-ca-file={}", api.ca_file().display()),
            "--terminated-pod-gc-threshold=100".to_owned(),
        ]);
        let controller_manager = Supervised::spawn(
            "kube-controller-manager",
            &controllers.display().to_string(),
            &cm_args,
            &dir.join("controller-manager.log"),
            Duration::from_secs(5),
        )?;
        let mut sched_args = vec!["kube-scheduler".to_owned()];
        sched_args.extend(common(free_port()?));
        let scheduler = Supervised::spawn(
            "kube-scheduler",
            &controllers.display().to_string(),
            &sched_args,
            &dir.join("scheduler.log"),
            Duration::from_secs(5),
        )?;
        let stages = dir.join("kwok-stages.yaml");
        std::fs::write(&stages, kwok_stages()?)
            .map_err(|e| HarnessError::io("write kwok stages", e))?;
        let (key, value) = KWOK_NODE_ANNOTATION;
        let kwok = Supervised::spawn(
            "kwok",
            &kwok.display().to_string(),
            &[
                format!("--kubeconfig={kc}"),
                format!("--config={}", stages.display()),
                "--manage-all-nodes=false".to_owned(),
                format!("--manage-nodes-with-annotation-selector={key}={value}"),
                format!("--server-address=127.0.0.1:{}", free_port()?),
                "--cidr=10.0.0.1/16".to_owned(),
                "--node-ip=10.0.0.1".to_owned(),
            ],
            &dir.join("kwok.log"),
            Duration::from_secs(5),
        )?;
        let cluster = KubeCluster {
            kwok: Some(kwok),
            scheduler: Some(scheduler),
            controller_manager: Some(controller_manager),
            api,
            kubeconfig,
        };
        // The controller manager is up once it made the default namespace's
        // service account (pods cannot be admitted without it).
        cluster.wait_for(
            "the default service account",
            Duration::from_secs(120),
            |c| {
                c.api
                    .request(
                        "GET",
                        "/api/v1/namespaces/default/serviceaccounts/default",
                        None,
                    )
                    .is_ok()
            },
        )?;
        Ok(cluster)
    }

    /// The API server (its URL, CA, requests).
    pub fn api(&self) -> &KubeApiserver {
        &self.api
    }

    /// A kubeconfig for the cluster (the test token, `system:masters`).
    pub fn kubeconfig(&self) -> &std::path::Path {
        &self.kubeconfig
    }

    /// Adds Nodes that KWOK runs (it initializes them Ready and keeps
    /// their leases), with `labels`.
    pub fn add_nodes(&self, names: &[String], labels: &[(&str, &str)]) -> Result<(), HarnessError> {
        let (key, value) = KWOK_NODE_ANNOTATION;
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::Value::from(*v)))
            .collect();
        for name in names {
            // The label a kubelet sets, for spreading and anti-affinity.
            let mut labels = labels.clone();
            labels.insert("kubernetes.io/hostname".to_owned(), name.as_str().into());
            let node = serde_json::json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "annotations": { key: value },
                    "labels": labels,
                },
            });
            self.api
                .request("POST", "/api/v1/nodes", Some(&node.to_string()))?;
        }
        Ok(())
    }

    /// Waits until every named Node reports `Ready=True`.
    pub fn wait_nodes_ready(&self, names: &[String], limit: Duration) -> Result<(), HarnessError> {
        self.wait_for("nodes ready", limit, |c| {
            names.iter().all(|n| {
                c.api
                    .request("GET", &format!("/api/v1/nodes/{n}"), None)
                    .ok()
                    .and_then(|b| serde_json::from_str::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| {
                        v["status"]["conditions"].as_array().is_some_and(|cs| {
                            cs.iter()
                                .any(|c| c["type"] == "Ready" && c["status"] == "True")
                        })
                    })
            })
        })
    }

    /// GETs `path` as JSON.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, HarnessError> {
        let body = self.api.request("GET", path, None)?;
        serde_json::from_str(&body).map_err(|e| HarnessError::Command {
            command: format!("GET {path}"),
            status: "not JSON".to_owned(),
            output: e.to_string(),
        })
    }

    /// Starts the control plane with KWOK nodes `prefix1..=prefixN`
    /// (no extra labels), returning once they are all Ready.
    pub fn with_ready_nodes(
        prefix: &str,
        n: usize,
        limit: Duration,
    ) -> Result<(KubeCluster, Vec<String>), HarnessError> {
        let c = KubeCluster::start()?;
        let nodes: Vec<String> = (1..=n).map(|i| format!("{prefix}{i}")).collect();
        c.add_nodes(&nodes, &[])?;
        c.wait_nodes_ready(&nodes, limit)?;
        Ok((c, nodes))
    }

    /// POSTs `body` to the collection at `path`
    /// (`/apis/batch/v1/namespaces/default/jobs`).
    pub fn create(&self, path: &str, body: &serde_json::Value) -> Result<(), HarnessError> {
        self.api.request("POST", path, Some(&body.to_string()))?;
        Ok(())
    }

    /// Waits until a pod matching `label_selector` runs; returns the first
    /// (name, node).
    pub fn wait_running(
        &self,
        label_selector: &str,
        limit: Duration,
    ) -> Result<(String, String), HarnessError> {
        let mut found = None;
        self.wait_for(&format!("a running pod of {label_selector}"), limit, |c| {
            found = c.running_pods(label_selector).into_iter().next();
            found.is_some()
        })?;
        found.ok_or_else(|| HarnessError::Command {
            command: format!("wait for {label_selector}"),
            status: "no pod".to_owned(),
            output: String::new(),
        })
    }

    /// The pods in `default` matching `label_selector` that run and are
    /// not terminating: (name, node).
    pub fn running_pods(&self, label_selector: &str) -> Vec<(String, String)> {
        let pods = self
            .get(&format!(
                "/api/v1/namespaces/default/pods?labelSelector={label_selector}"
            ))
            .map(|v| v["items"].as_array().cloned().unwrap_or_default())
            .unwrap_or_default();
        pods.iter()
            .filter(|p| {
                p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
            })
            .map(|p| {
                let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (field(&p["metadata"]["name"]), field(&p["spec"]["nodeName"]))
            })
            .collect()
    }

    /// Polls `ready` every 200 ms until it holds or `limit` passes.
    pub fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        mut ready: impl FnMut(&KubeCluster) -> bool,
    ) -> Result<(), HarnessError> {
        let deadline = Instant::now() + limit;
        loop {
            if ready(self) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(HarnessError::Command {
                    command: format!("wait for {what}"),
                    status: format!("not within {} s", limit.as_secs()),
                    output: self.logs_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The last lines of each component's log, for a failure message.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        for name in ["controller-manager", "scheduler", "kwok", "apiserver"] {
            let path = self.api.dir().join(format!("{name}.log"));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            out.push_str(&format!("== {name}.log\n"));
            for l in tail.into_iter().rev() {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        for p in [
            self.kwok.take(),
            self.scheduler.take(),
            self.controller_manager.take(),
        ]
        .into_iter()
        .flatten()
        {
            let mut p = p;
            p.stop(Duration::from_secs(5));
        }
    }
}
