//! The node-condition source against a real kube-apiserver (with etcd),
//! started by the harness: the test writes a Node's status as a kubelet or
//! node-problem-detector would, and the source reports the changes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{ConditionStatus, EventData, Timestamp};
use pitcrew_harness::kube::{KubeApiserver, TOKEN};
use pitcrew_ingest::ipmi::Secret;
use pitcrew_ingest::k8s::{BearerToken, KubeAccess, NodeConditions};

fn set_conditions(api: &KubeApiserver, conditions: &str) {
    api.request(
        "PATCH",
        "/api/v1/nodes/gpu-017/status",
        Some(&format!(r#"{{"status":{{"conditions":[{conditions}]}}}}"#)),
    )
    .unwrap();
}

#[test]
fn node_conditions_from_a_real_api_server() {
    let api = KubeApiserver::start().unwrap();
    api.request(
        "POST",
        "/api/v1/nodes",
        Some(r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"gpu-017"}}"#),
    )
    .unwrap();
    set_conditions(
        &api,
        r#"{"type":"Ready","status":"True","reason":"KubeletReady","lastHeartbeatTime":"2026-11-24T16:00:00Z","lastTransitionTime":"2026-11-24T16:00:00Z"}"#,
    );

    let access = KubeAccess {
        address: api.url().trim_start_matches("https://").to_owned(),
        token: BearerToken::Fixed(Secret::new(TOKEN)),
        ca_file: api.ca_file(),
    };
    let path = NodeConditions::path("gpu-017");
    let mut conditions = NodeConditions::new("n17");
    let read = |c: &mut NodeConditions| {
        c.events(
            &access.get(&path, Duration::from_secs(10)).unwrap(),
            Timestamp::EPOCH,
        )
        .unwrap()
    };
    assert!(read(&mut conditions).is_empty(), "a ready node is not news");

    set_conditions(
        &api,
        r#"{"type":"Ready","status":"False","reason":"KubeletNotReady","message":"PLEG is not healthy","lastHeartbeatTime":"2026-11-24T16:05:00Z","lastTransitionTime":"2026-11-24T16:05:00Z"},{"type":"KernelDeadlock","status":"True","reason":"DockerHung","lastHeartbeatTime":"2026-11-24T16:05:00Z","lastTransitionTime":"2026-11-24T16:05:00Z"}"#,
    );
    let events = read(&mut conditions);
    let got: Vec<(String, ConditionStatus)> = events
        .iter()
        .map(|e| match &e.data {
            EventData::NodeCondition(n) => (n.condition.clone(), n.status),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            ("Ready".to_owned(), ConditionStatus::False),
            ("KernelDeadlock".to_owned(), ConditionStatus::True)
        ]
    );
    assert_eq!(events[0].node, "n17");
    assert!(read(&mut conditions).is_empty(), "unchanged is not news");

    // A wrong token is refused, and the error does not carry it.
    let bad = KubeAccess {
        token: BearerToken::Fixed(Secret::new("wrong-token-77")),
        ..access.clone()
    };
    let err = bad
        .get(&path, Duration::from_secs(10))
        .unwrap_err()
        .to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong-token-77"));

    // A rotated service-account token is picked up at the next request.
    let dir = std::env::temp_dir().join(format!("pitcrew-k8s-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "wrong-token-77\n").unwrap();
    let rotating = KubeAccess {
        token: BearerToken::File(file.clone()),
        ..access.clone()
    };
    let err = rotating.get(&path, Duration::from_secs(10)).unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    assert!(rotating.get(&path, Duration::from_secs(10)).is_ok());
}
