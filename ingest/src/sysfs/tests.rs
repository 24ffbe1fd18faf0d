use pitcrew_contract::{EventKind, IbCounterName, MemoryErrorSeverity, SensorState};

use super::*;

/// A temp sysfs tree, removed on drop.
struct Tree(PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        Tree(std::env::temp_dir().join(format!(
            "pitcrew-sysfs-{name}-{}-{nanos}",
            std::process::id()
        )))
    }
    fn write(&self, rel: &str, value: &str) {
        let p = self.0.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{value}\n")).unwrap();
    }
    fn remove(&self, rel: &str) {
        std::fs::remove_file(self.0.join(rel)).unwrap();
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn t(s: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_795_530_000_000 + s * 1000)
}

fn node_tree(name: &str) -> Tree {
    let tree = Tree::new(name);
    tree.write("devices/system/edac/mc/mc0/ce_count", "5");
    tree.write("devices/system/edac/mc/mc0/ue_count", "0");
    tree.write("devices/system/edac/mc/mc1/ce_count", "0");
    tree.write("devices/system/edac/mc/mc1/ue_count", "0");
    for (file, _) in IB_ERROR_COUNTERS {
        tree.write(
            &format!("class/infiniband/mlx5_0/ports/1/counters/{file}"),
            "0",
        );
    }
    tree.write(
        "class/infiniband/mlx5_0/ports/1/counters/port_xmit_data",
        "123456789",
    );
    tree.write("class/hwmon/hwmon0/name", "coretemp");
    tree.write("class/hwmon/hwmon0/temp1_label", "Package id 0");
    tree.write("class/hwmon/hwmon0/temp1_input", "45000");
    tree.write("class/hwmon/hwmon0/temp1_max", "90000");
    tree.write("class/hwmon/hwmon0/temp1_crit", "100000");
    tree.write("class/net/ib0/carrier", "1");
    tree.write("class/net/lo/carrier", "1");
    tree
}

#[test]
fn a_healthy_node_gives_only_first_readings_of_sensors() {
    let tree = node_tree("healthy");
    let mut src = SysfsSource::new(&tree.0, "n17", "boot-a");
    let (ev, errors) = src.sample(t(0));
    assert!(errors.is_empty(), "{errors:?}");
    let kinds: Vec<EventKind> = ev.iter().map(Event::kind).collect();
    assert_eq!(
        kinds,
        [EventKind::HostSensor],
        "first reading of the one temperature"
    );
    let (ev, _) = src.sample(t(1));
    assert!(ev.is_empty(), "{ev:#?}");
}

#[test]
fn edac_and_ib_counters_become_deltas() {
    let tree = node_tree("deltas");
    let mut src = SysfsSource::new(&tree.0, "n17", "boot-a");
    src.sample(t(0));
    tree.write("devices/system/edac/mc/mc0/ce_count", "8");
    tree.write("devices/system/edac/mc/mc1/ue_count", "1");
    tree.write("class/infiniband/mlx5_0/ports/1/counters/link_downed", "1");
    tree.write(
        "class/infiniband/mlx5_0/ports/1/counters/symbol_error",
        "40",
    );
    tree.write(
        "class/infiniband/mlx5_0/ports/1/counters/port_xmit_data",
        "999999999",
    );
    let (ev, errors) = src.sample(t(1));
    assert!(errors.is_empty());
    let edac: Vec<(u32, MemoryErrorSeverity, u64)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::HostEdac(d) => Some((d.controller, d.severity, d.count)),
            _ => None,
        })
        .collect();
    assert_eq!(
        edac,
        [
            (0, MemoryErrorSeverity::Ce, 3),
            (1, MemoryErrorSeverity::Ue, 1)
        ]
    );
    let ib: Vec<(IbCounterName, u64, u64, bool)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetIbCounter(c) => Some((c.counter, c.delta, c.total, c.reset)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ib,
        [
            (IbCounterName::SymbolError, 40, 40, false),
            (IbCounterName::LinkDowned, 1, 1, false)
        ],
        "data counters are not sampled"
    );
}

#[test]
fn a_reboot_resets_counters_without_negative_or_phantom_deltas() {
    let tree = node_tree("reboot");
    let mut src = SysfsSource::new(&tree.0, "n17", "boot-a");
    tree.write(
        "class/infiniband/mlx5_0/ports/1/counters/symbol_error",
        "500",
    );
    tree.write("devices/system/edac/mc/mc0/ce_count", "90");
    src.sample(t(0));

    // The node reboots: counters restart from 0 and have risen a little.
    tree.write("class/infiniband/mlx5_0/ports/1/counters/symbol_error", "3");
    tree.write("devices/system/edac/mc/mc0/ce_count", "2");
    src.observe_boot("boot-b");
    let (ev, _) = src.sample(t(60));
    assert!(
        !ev.iter()
            .any(|e| matches!(e.kind(), EventKind::HostEdac | EventKind::NetIbCounter)),
        "first readings of a new boot are baselines: {ev:#?}"
    );
    tree.write("class/infiniband/mlx5_0/ports/1/counters/symbol_error", "5");
    let (ev, _) = src.sample(t(61));
    let ib: Vec<(u64, bool)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetIbCounter(c) => Some((c.delta, c.reset)),
            _ => None,
        })
        .collect();
    assert_eq!(ib, [(2, false)]);

    // Without a boot change (a driver reload), a drop is a reset event.
    tree.write("class/infiniband/mlx5_0/ports/1/counters/symbol_error", "0");
    let (ev, _) = src.sample(t(62));
    let ib: Vec<(u64, u64, bool)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetIbCounter(c) => Some((c.delta, c.total, c.reset)),
            _ => None,
        })
        .collect();
    assert_eq!(ib, [(0, 0, true)]);
}

#[test]
fn temperature_states_and_carrier_changes() {
    let tree = node_tree("states");
    let mut src = SysfsSource::new(&tree.0, "n17", "boot-a");
    src.sample(t(0));
    tree.write("class/hwmon/hwmon0/temp1_input", "95000");
    tree.remove("class/net/ib0/carrier");
    let (ev, _) = src.sample(t(1));
    let states: Vec<(String, SensorState)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::HostSensor(s) => Some((s.sensor.clone(), s.state)),
            _ => None,
        })
        .collect();
    assert_eq!(
        states,
        [("coretemp/Package id 0".to_owned(), SensorState::NonCritical)]
    );
    let links: Vec<(String, bool)> = ev
        .iter()
        .filter_map(|e| match &e.data {
            EventData::NetLink(l) => Some((l.interface.clone(), l.up)),
            _ => None,
        })
        .collect();
    assert_eq!(
        links,
        [("ib0".to_owned(), false)],
        "unreadable carrier is down; lo is ignored"
    );
    tree.write("class/hwmon/hwmon0/temp1_input", "101000");
    tree.write("class/net/ib0/carrier", "1");
    let (ev, _) = src.sample(t(2));
    assert!(ev
        .iter()
        .any(|e| matches!(&e.data, EventData::HostSensor(s) if s.state == SensorState::Critical)));
    assert!(ev
        .iter()
        .any(|e| matches!(&e.data, EventData::NetLink(l) if l.up)));
}

#[test]
fn garbage_files_are_errors_that_name_the_file() {
    let tree = node_tree("garbage");
    tree.write("devices/system/edac/mc/mc0/ce_count", "lots");
    let mut src = SysfsSource::new(&tree.0, "n17", "boot-a");
    let (_, errors) = src.sample(t(0));
    assert_eq!(errors.len(), 1);
    assert!(errors[0].path.ends_with("mc0/ce_count"));
    assert_eq!(errors[0].reason, "not a number: `lots`");
}

#[test]
fn a_missing_root_is_empty_not_an_error() {
    let mut src = SysfsSource::new(Path::new("/nonexistent/pitcrew-sys"), "n17", "boot-a");
    let (ev, errors) = src.sample(t(0));
    assert!(ev.is_empty() && errors.is_empty());
}
