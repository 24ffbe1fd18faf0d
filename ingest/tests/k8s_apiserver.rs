//! The node-condition source (kube-rs) against a real kube-apiserver (with
//! etcd), started by the harness: the test writes a Node's status as a
//! kubelet or node-problem-detector would, and the source reports the
//! changes; wrong and rotated tokens.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use pitcrew_contract::{ConditionStatus, EventData, Timestamp};
use pitcrew_harness::kube::{KubeApiserver, TOKEN};
use pitcrew_ingest::ipmi::Secret;
use pitcrew_ingest::k8s::{BearerToken, KubeAccess, NodeConditions, NodeReader};

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

    let access = |token: BearerToken| KubeAccess::new(api.url(), token, &api.ca_file()).unwrap();
    let mut reader = NodeReader::new(access(BearerToken::Fixed(Secret::new(TOKEN)))).unwrap();
    let mut conditions = NodeConditions::new("n17");
    let mut read = |c: &mut NodeConditions| {
        c.events(
            &reader.node("gpu-017", Duration::from_secs(10)).unwrap(),
            Timestamp::EPOCH,
        )
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
    let mut bad =
        NodeReader::new(access(BearerToken::Fixed(Secret::new("wrong-token-77")))).unwrap();
    let err = bad.node("gpu-017", Duration::from_secs(10)).unwrap_err();
    assert!(err.unauthorized);
    let err = err.to_string();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains("wrong-token-77"));
    assert!(!format!("{bad:?}").contains("wrong-token-77"));

    // A rotated service-account token is picked up at the next read: the
    // refusal of the old one makes the client read the file again.
    let dir = std::env::temp_dir().join(format!("pitcrew-k8s-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "wrong-token-77\n").unwrap();
    let mut rotating = NodeReader::new(access(BearerToken::File(file.clone()))).unwrap();
    let err = rotating
        .node("gpu-017", Duration::from_secs(10))
        .unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    assert!(rotating.node("gpu-017", Duration::from_secs(10)).is_ok());
    // A token file that cannot be read is said when the reader starts.
    std::fs::remove_file(&file).unwrap();
    let err = NodeReader::new(access(BearerToken::File(file))).unwrap_err();
    assert!(err.to_string().contains("token"), "{err}");
}
