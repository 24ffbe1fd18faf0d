use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use pitcrew_contract::{EventData, EventKind};
use proptest::prelude::*;

use super::*;

const FIXTURE: &str = include_str!("../../testdata/dcgm-exporter.txt");

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_795_530_000_000 + s * 1000)
}

fn scrape_of(text: &str) -> DcgmScrape {
    let (samples, bad) = parse_prometheus(text);
    assert_eq!(bad, 0);
    DcgmScrape::from_samples(&samples)
}

#[test]
fn prometheus_text_with_escapes() {
    let (s, bad) =
        parse_prometheus("# c\nm{a=\"x\\\"y\",b=\"\\\\\"} 1.5 1795530000000\nbad line here\nn 2\n");
    assert_eq!(bad, 1);
    assert_eq!(s[0].label("a"), Some("x\"y"));
    assert_eq!(s[0].label("b"), Some("\\"));
    assert_eq!(s[0].value, 1.5);
    assert_eq!((s[1].name.as_str(), s[1].value), ("n", 2.0));
}

#[test]
fn readings_per_gpu() {
    let scrape = scrape_of(FIXTURE);
    assert_eq!(scrape.count().unwrap(), 2);
    assert_eq!(scrape.driver_version().unwrap(), "580.159.04");
    let g0 = scrape.sample(0).unwrap();
    assert_eq!(g0.uuid, "GPU-2ffc797b-a610-12f0-d426-6e49156750b9");
    assert_eq!(g0.pci.unwrap().to_string(), "0000:18:00.0");
    assert_eq!(
        (g0.gpu_temp_c, g0.memory_temp_c, g0.pcie_replay),
        (Some(36.0), Some(38.0), Some(3))
    );
    assert_eq!(g0.remapped_rows, Some(RemappedRows::default()));
    assert_eq!(g0.nvlink, [(u32::MAX, NvlinkCounter::CrcFlit, 10)]);
}

#[test]
fn a_stale_last_xid_does_not_fire_and_a_new_one_does() {
    let mut a = DcgmAdapter::new("n17", "boot-1");
    let first = a.ingest(&scrape_of(FIXTURE), t(0));
    assert!(
        !first.iter().any(|e| e.kind() == EventKind::GpuXid),
        "79 at start is a stale gauge"
    );
    assert_eq!(
        first
            .iter()
            .filter(|e| e.kind() == EventKind::GpuThermal)
            .count(),
        2
    );
    assert!(first.iter().all(|e| e.source == Source::Dcgm));

    let later = FIXTURE
        .replace("} 79", "} 48")
        .replace("DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu=\"0\",UUID=\"GPU-2ffc797b-a610-12f0-d426-6e49156750b9\",pci_bus_id=\"00000000:18:00.0\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"n17\",DCGM_FI_DRIVER_VERSION=\"580.159.04\"} 3", "DCGM_FI_DEV_PCIE_REPLAY_COUNTER{gpu=\"0\",UUID=\"GPU-2ffc797b-a610-12f0-d426-6e49156750b9\",pci_bus_id=\"00000000:18:00.0\",device=\"nvidia0\",modelName=\"NVIDIA H100 80GB HBM3\",Hostname=\"n17\",DCGM_FI_DRIVER_VERSION=\"580.159.04\"} 13");
    let ev = a.ingest(&scrape_of(&later), t(30));
    let xids: Vec<u32> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::GpuXid(x) => Some(x.code),
            _ => None,
        })
        .collect();
    assert_eq!(xids, [48]);
    let replay = ev
        .iter()
        .find(|e| e.kind() == EventKind::GpuPcieReplay)
        .unwrap();
    match &replay.data {
        EventData::GpuPcieReplay(r) => assert_eq!((r.delta, r.total), (10, 13)),
        other => panic!("{other:?}"),
    }
    // The same gauge again: nothing new.
    let ev = a.ingest(&scrape_of(&later), t(60));
    assert!(!ev.iter().any(|e| e.kind() == EventKind::GpuXid));
}

#[test]
fn scrapes_a_real_http_endpoint() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request_line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut request_line)
            .unwrap();
        write!(
            conn,
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n{FIXTURE}"
        )
        .unwrap();
        request_line
    });
    let body = scrape(&format!("http://{addr}/metrics"), Duration::from_secs(5)).unwrap();
    // A plain GET of the exporter's path (HTTP/1.1 since the scrape is
    // reqwest's), answered by an HTTP/1.0 server that closes to end.
    let line = server.join().unwrap();
    assert!(line.starts_with("GET /metrics HTTP/1."), "{line}");
    assert_eq!(scrape_of(&body).count().unwrap(), 2);
}

#[test]
fn scrape_errors_are_clear() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(conn.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        write!(conn, "HTTP/1.0 503 Service Unavailable\r\n\r\n").unwrap();
    });
    let err = scrape(&format!("http://{addr}/metrics"), Duration::from_secs(5)).unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    assert!(scrape("https://x/metrics", Duration::from_secs(1)).is_err());
}

proptest! {
    #[test]
    fn the_parser_never_panics(text in "\\PC{0,300}") {
        let (samples, _) = parse_prometheus(&text);
        let _ = DcgmScrape::from_samples(&samples);
    }

    #[test]
    fn mutated_fixture_never_panics(pos in 0usize..5000, byte in 0u8..128) {
        let mut b = FIXTURE.as_bytes().to_vec();
        let p = pos % b.len();
        b[p] = byte;
        let text = String::from_utf8_lossy(&b);
        let (samples, _) = parse_prometheus(&text);
        let mut a = DcgmAdapter::new("n", "b");
        a.ingest(&DcgmScrape::from_samples(&samples), Timestamp::EPOCH);
    }
}
