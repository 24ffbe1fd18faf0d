//! Round trips for every kind and message type, and the decoder's errors.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use pitcrew_contract::*;
use proptest::prelude::*;

fn enc<T: serde::Serialize>(v: &T) -> String {
    String::from_utf8(encode(v)).unwrap()
}

#[test]
fn every_event_kind_round_trips() {
    assert_eq!(examples::all_events().len(), EventKind::ALL.len());
    for ev in examples::all_events() {
        let bytes = encode(&ev);
        let back: Event = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", ev.kind()));
        assert_eq!(back, ev, "{}", ev.kind());
        assert_eq!(encode(&back), bytes, "{} re-encodes identically", ev.kind());
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["v"], 1);
        assert_eq!(v["kind"], ev.kind().as_str());
    }
}

#[test]
fn every_kind_name_parses_back() {
    for &k in EventKind::ALL {
        assert_eq!(EventKind::parse(k.as_str()), Some(k));
    }
}

#[test]
fn other_messages_round_trip() {
    let inc = examples::incident();
    assert_eq!(decode::<Incident>(&encode(&inc)).unwrap(), inc);
    let act = examples::action();
    assert_eq!(decode::<ActionRequest>(&encode(&act)).unwrap(), act);
    let aud = examples::audit();
    assert_eq!(decode::<AuditRecord>(&encode(&aud)).unwrap(), aud);
    let st = examples::state();
    assert_eq!(decode::<RemediationState>(&encode(&st)).unwrap(), st);
}

#[test]
fn action_ids_are_deterministic() {
    let a = examples::action();
    let b = examples::action();
    assert_eq!(a.id, b.id);
    let other = ActionRequest::make_id(&a.incident, &a.target, &a.plan, 1);
    assert_ne!(a.id, other, "a new generation is a new action");
    assert!(a.id.starts_with("act-"));
}

#[test]
fn data_before_kind_is_accepted() {
    let text = r#"{"data":{"code":48},"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","gpu":{"pci":"0000:2B:00"},"kind":"gpu.xid"}"#;
    let ev: Event = decode(text.as_bytes()).unwrap();
    assert_eq!(ev.kind(), EventKind::GpuXid);
    assert_eq!(ev.gpu.unwrap().pci.unwrap().to_string(), "0000:2b:00.0");
}

#[test]
fn unknown_fields_are_ignored_for_forward_compatibility() {
    let text = r#"{"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"agent","kind":"net.link","new_field":[1,2],"data":{"interface":"ib0","up":true,"speed":400}}"#;
    assert!(decode::<Event>(text.as_bytes()).is_ok());
}

fn xid_with(data: &str) -> String {
    format!(
        r#"{{"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"gpu.xid","gpu":{{"index":0}},"data":{data}}}"#
    )
}

#[test]
fn errors_name_the_field() {
    let cases: Vec<(String, DecodeError)> = vec![
        (
            r#"{"v":2,"id":"x"}"#.to_owned(),
            DecodeError::UnsupportedVersion {
                found: "2".to_owned(),
                supported: 1,
            },
        ),
        (
            xid_with(r#"{"pid":1}"#),
            DecodeError::MissingField {
                field: "data.code".to_owned(),
            },
        ),
        (
            r#"{"v":1,"node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"net.link","data":{"interface":"x","up":true}}"#.to_owned(),
            DecodeError::MissingField {
                field: "id".to_owned(),
            },
        ),
        (
            r#"{"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"gpu.bogus","data":{}}"#.to_owned(),
            DecodeError::UnknownKind {
                found: "`gpu.bogus`".to_owned(),
            },
        ),
        (
            r#"{"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"gpu.xid","data":{"code":79}}"#.to_owned(),
            DecodeError::InvalidField {
                field: "gpu".to_owned(),
                message: "required for kind gpu.xid (index, uuid or pci)".to_owned(),
            },
        ),
        (
            r#"{"v":1,"id":"","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","kind":"net.link","data":{"interface":"x","up":true}}"#.to_owned(),
            DecodeError::InvalidField {
                field: "id".to_owned(),
                message: "must be 1 to 256 bytes".to_owned(),
            },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(
            decode::<Event>(text.as_bytes()).unwrap_err(),
            want,
            "{text}"
        );
    }
}

#[test]
fn wrong_type_names_nested_field() {
    let err = decode::<Event>(xid_with(r#"{"code":"seventy-nine"}"#).as_bytes()).unwrap_err();
    assert_eq!(err.field(), Some("data.code"), "{err}");
    assert!(err.to_string().contains("invalid type: string"), "{err}");

    let err = decode::<Event>(
        xid_with(r#"{"code":79}"#)
            .replace(r#"{"index":0}"#, r#"{"pci":"zz"}"#)
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("gpu.pci"), "{err}");

    let err = decode::<Event>(
        xid_with(r#"{"code":79}"#)
            .replace("2026-11-24T14:23:32Z", "yesterday")
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(err.field(), Some("time"), "{err}");

    // data before kind keeps the nested path
    let text = r#"{"data":{"code":-1},"v":1,"id":"x","node":"n1","time":"2026-11-24T14:23:32Z","source":"kmsg","gpu":{"index":0},"kind":"gpu.xid"}"#;
    let err = decode::<Event>(text.as_bytes()).unwrap_err();
    assert_eq!(err.field(), Some("data.code"), "{err}");

    let mut act = serde_json::to_value(examples::action()).unwrap();
    act["target"]["kind"] = "planet".into();
    let err = decode::<ActionRequest>(act.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field(), Some("target.kind"), "{err}");
}

#[test]
fn oversize_utf8_and_syntax_errors() {
    let big = vec![b' '; DEFAULT_MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        decode::<Event>(&big).unwrap_err(),
        DecodeError::Oversize {
            size: DEFAULT_MAX_MESSAGE_BYTES + 1,
            limit: DEFAULT_MAX_MESSAGE_BYTES
        }
    );
    let mut bytes = encode(&examples::event(EventKind::GpuXid));
    bytes[20] = 0xff;
    assert_eq!(
        decode::<Event>(&bytes).unwrap_err(),
        DecodeError::InvalidUtf8 { offset: 20 }
    );
    match decode::<Event>(b"{\"v\":1,\n\"id\": }").unwrap_err() {
        DecodeError::Syntax { line, column, .. } => assert_eq!((line, column), (2, 7)),
        other => panic!("{other}"),
    }
    match decode::<Event>(b"").unwrap_err() {
        DecodeError::Syntax { .. } => {}
        other => panic!("{other}"),
    }
    assert!(decode::<Event>(b"[1,2]").is_err());
    assert!(decode::<Event>(b"null").is_err());
}

#[test]
fn duplicate_fields_are_rejected() {
    let text = r#"{"v":1,"v":1}"#;
    let err = decode::<Event>(text.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("duplicate field `v`"), "{err}");
}

#[test]
fn encoded_example_is_about_200_bytes() {
    // The decode benchmark's claim is for events of this size.
    let n = encode(&examples::event(EventKind::GpuXid)).len();
    assert!((150..=260).contains(&n), "{n}");
}

/// The schema document shows every example exactly as encoded, so it
/// cannot drift from the code.
#[test]
fn schema_doc_has_every_example() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/schema.md")).unwrap();
    for ev in examples::all_events() {
        assert!(
            doc.contains(&format!("### `{}`", ev.kind())),
            "docs/schema.md lacks a section for {}",
            ev.kind()
        );
        assert!(
            doc.contains(&enc(&ev)),
            "docs/schema.md lacks the example of {} (run `pitcrew schema examples`)",
            ev.kind()
        );
    }
    for text in [
        enc(&examples::incident()),
        enc(&examples::action()),
        enc(&examples::audit()),
        enc(&examples::state()),
    ] {
        assert!(doc.contains(&text), "docs/schema.md lacks {text}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<Event>(&bytes);
        let _ = decode::<ActionRequest>(&bytes);
    }

    #[test]
    fn decode_never_panics_on_mutated_events(idx in 0usize..64, pos in 0usize..400, byte: u8) {
        let events = examples::all_events();
        let mut bytes = encode(&events[idx % events.len()]);
        let p = pos % bytes.len();
        bytes[p] = byte;
        match decode::<Event>(&bytes) {
            Ok(ev) => { let _ = encode(&ev); }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn truncated_events_error_cleanly(idx in 0usize..64, cut in 0usize..400) {
        let events = examples::all_events();
        let bytes = encode(&events[idx % events.len()]);
        let cut = cut % bytes.len();
        prop_assert!(decode::<Event>(&bytes[..cut]).is_err());
    }
}
