//! The real NVML on the machine at hand. Where there is an NVIDIA GPU
//! (`/dev/nvidia0`), NVML must load and every GPU must sample sensibly;
//! where there is none, loading must fail with a clear "absent" error.
//! Neither case is skipped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout
)]

use pitcrew_contract::{EventKind, Timestamp};
use pitcrew_ingest::nvml::{Gpus, NvmlError, NvmlGpus, NvmlSource};

fn has_gpu() -> bool {
    std::path::Path::new("/dev/nvidia0").exists()
}

#[test]
fn nvml_loads_where_there_is_a_gpu_and_says_absent_where_not() {
    match NvmlGpus::load() {
        Err(NvmlError::Absent(why)) => {
            assert!(
                !has_gpu(),
                "/dev/nvidia0 exists but nvml did not load: {why}"
            );
            assert!(!why.is_empty());
            println!("no gpu here; nvml absent: {why}");
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(gpus) => {
            assert!(has_gpu(), "nvml loaded without /dev/nvidia0");
            let count = gpus.count().unwrap();
            assert!(count > 0);
            let driver = gpus.driver_version().unwrap();
            println!("driver {driver}, {count} gpu(s)");
            for i in 0..count {
                let s = gpus.sample(i).unwrap();
                println!("{s:?}");
                assert!(s.uuid.starts_with("GPU-"), "{}", s.uuid);
                assert!(s.pci.is_some(), "pci address of gpu {i}");
                let temp = s.gpu_temp_c.expect("gpu temperature");
                assert!((5.0..110.0).contains(&temp), "{temp}");
                assert!(s.power_w.expect("power") > 0.0);
                assert!(s.clock_event_reasons.is_some());
            }
            let mut src = NvmlSource::new("this-node", "boot");
            let (events, errors) = src.sample(&gpus, Timestamp::now());
            assert!(errors.is_empty(), "{errors:?}");
            let thermal = events
                .iter()
                .filter(|e| e.kind() == EventKind::GpuThermal)
                .count();
            assert_eq!(thermal, count as usize);
        }
    }
}

#[test]
fn the_xid_watcher_registers_where_there_is_a_gpu() {
    let Ok(gpus) = NvmlGpus::load() else {
        assert!(!has_gpu());
        return;
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (handle, registered) =
        pitcrew_ingest::nvml::spawn_xid_watcher(gpus.handle(), tx, std::sync::Arc::clone(&stop))
            .unwrap();
    println!("xid events registered for {registered} gpu(s)");
    assert_eq!(
        registered,
        gpus.count().unwrap(),
        "every gpu delivers xid events"
    );
    // A healthy GPU delivers no Xid within a second.
    assert!(rx.recv_timeout(std::time::Duration::from_secs(1)).is_err());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    handle.join().unwrap();
}
