//! Host findings: EDAC memory errors, machine checks (Intel and AMD
//! decoders), CPU thermal throttling, and firmware-first (APEI GHES) CPER
//! records.

use pitcrew_contract::{
    Edac, EventData, HostThermal, Mce, MemoryErrorSeverity, ThermalScope, ThermalState,
};

use super::parse::{bounded, Finding};

/// A firmware-first (APEI GHES) CPER record, `{N}[Hardware Error]: ...`.
#[derive(Debug, Default)]
pub(super) struct PendingGhes {
    pub(super) id: String,
    pub(super) line: u64,
    pub(super) corrected: bool,
    pub(super) section: Option<String>,
    pub(super) fru: Option<String>,
    pub(super) dimm: Option<String>,
    pub(super) node_line: Option<String>,
    pub(super) node: Option<u32>,
    pub(super) error_type: Option<String>,
}

/// `{35}[Hardware Error]: rest`: the record number and the rest.
pub(super) fn ghes_line(text: &str) -> Option<(&str, &str)> {
    let rest = text.strip_prefix('{')?;
    let (id, rest) = rest.split_once('}')?;
    if id.is_empty() || id.len() > 10 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((id, rest.strip_prefix("[Hardware Error]:")?))
}

/// A finished CPER record: a memory section is a memory error
/// (`host.edac`; the memory node stands for the controller), a processor
/// section a machine check; a PCIe section's registers come again as
/// `aer_status:` lines and are read there.
pub(super) fn finish_ghes(g: PendingGhes) -> Option<Finding> {
    let section = g.section.as_deref().unwrap_or("");
    let data = if section.contains("memory error") {
        EventData::HostEdac(Edac {
            controller: g.node.unwrap_or(0),
            severity: if g.corrected {
                MemoryErrorSeverity::Ce
            } else {
                MemoryErrorSeverity::Ue
            },
            count: 1,
            location: g.dimm.or(g.fru).or(g.node_line),
            message: g.error_type,
        })
    } else if section.contains("processor error") {
        EventData::HostMce(Mce {
            cpu: None,
            bank: None,
            message: format!(
                "{} {section}",
                if g.corrected {
                    "corrected"
                } else {
                    "uncorrected"
                }
            ),
        })
    } else {
        return None;
    };
    Some(Finding {
        data,
        gpu: None,
        line: g.line,
    })
}

/// "EDAC MC3: 1 CE memory read error on CPU_SrcID#0_Channel#0_DIMM#0 (...)"
pub(super) fn edac(text: &str) -> Option<EventData> {
    let rest = text.strip_prefix("EDAC MC")?;
    let (mc, rest) = rest.split_once(": ")?;
    let controller: u32 = mc.parse().ok()?;
    let mut words = rest.splitn(3, ' ');
    let count: u64 = words.next()?.parse().ok()?;
    let severity = match words.next()? {
        "CE" => MemoryErrorSeverity::Ce,
        "UE" => MemoryErrorSeverity::Ue,
        _ => return None,
    };
    let tail = words.next().unwrap_or("");
    let location = tail
        .split_once(" on ")
        .map(|(_, l)| l.split(" (").next().unwrap_or(l).trim().to_owned())
        .filter(|l| !l.is_empty());
    Some(EventData::HostEdac(Edac {
        controller,
        severity,
        count,
        location,
        message: Some(text.to_owned()),
    }))
}

/// "mce: [Hardware Error]: Machine check events logged",
/// "mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 7: ..."
pub(super) fn mce(text: &str) -> Option<EventData> {
    let rest = text.strip_prefix("mce: ").unwrap_or(text);
    if rest.starts_with("Uncorrected hardware memory error in user-access") {
        return Some(EventData::HostMce(Mce {
            cpu: None,
            bank: None,
            message: bounded(rest),
        }));
    }
    let rest = rest.strip_prefix("[Hardware Error]: ")?;
    if rest.starts_with("Machine check events logged") || rest.starts_with("Machine check: ") {
        return Some(EventData::HostMce(Mce {
            cpu: None,
            bank: None,
            message: bounded(rest),
        }));
    }
    // AMD's decoder (drivers/edac/mce_amd.c):
    // "CPU:2 (17:71:0) MC27_STATUS[-|CE|MiscV|-|-|-|SyndV|-|-|-]: 0x98..."
    if let Some(amd) = rest.strip_prefix("CPU:") {
        let (cpu, after) = amd.split_once(' ')?;
        let (_, after) = after.split_once(") MC")?;
        let (bank, _) = after.split_once("_STATUS")?;
        return Some(EventData::HostMce(Mce {
            cpu: cpu.parse().ok(),
            bank: bank.parse().ok(),
            message: bounded(rest),
        }));
    }
    let cpu_rest = rest.strip_prefix("CPU ")?;
    let (cpu, after) = cpu_rest.split_once(": ")?;
    if !after.starts_with("Machine Check") {
        return None;
    }
    let bank = after
        .split_once("Bank ")
        .and_then(|(_, b)| b.split(':').next())
        .and_then(|b| b.trim().parse().ok());
    Some(EventData::HostMce(Mce {
        cpu: cpu.parse().ok(),
        bank,
        message: rest.to_owned(),
    }))
}

/// "CPU3: Core temperature above threshold, cpu clock throttled (total events = 12)"
/// "CPU3: Package temperature/speed normal"
pub(super) fn cpu_thermal(text: &str) -> Option<EventData> {
    let rest = text.strip_prefix("CPU")?;
    let (cpu, rest) = rest.split_once(": ")?;
    let cpu: u32 = cpu.parse().ok()?;
    let (scope, rest) = if let Some(r) = rest.strip_prefix("Core ") {
        (ThermalScope::Core, r)
    } else if let Some(r) = rest.strip_prefix("Package ") {
        (ThermalScope::Package, r)
    } else if rest.starts_with("Temperature") {
        // 2.6 kernels: one sensor per CPU, "CPU0: Temperature above
        // threshold, cpu clock throttled".
        (ThermalScope::Core, rest)
    } else {
        return None;
    };
    let lower = |s: &str| s.eq_ignore_ascii_case("temperature");
    let (word, rest) = rest.split_at(rest.find(['/', ' ']).unwrap_or(rest.len()));
    if !lower(word) {
        return None;
    }
    let (state, total_events) = if rest.starts_with(" above threshold") {
        let total = rest
            .split_once("total events = ")
            .and_then(|(_, n)| n.trim_end_matches(')').trim().parse().ok());
        (ThermalState::Throttled, total)
    } else if rest.starts_with("/speed normal") {
        (ThermalState::Normal, None)
    } else {
        return None;
    };
    Some(EventData::HostThermal(HostThermal {
        cpu,
        scope,
        state,
        total_events,
    }))
}
