//! PCIe findings: AER records (the root port's announcement, the
//! device's header, status and error bits, firmware-first registers), DPC
//! containment with its reason, pciehp link-down. The formats are those of
//! drivers/pci/pcie/aer.c, dpc.c and hotplug/pciehp, kernels 3.x to 6.16.

use pitcrew_contract::{Aer, AerSeverity, Dpc, EventData, PciAddress, PcieLayer};

use super::parse::{bounded, Finding};

#[derive(Debug)]
pub(super) struct PendingAer {
    pub(super) aer: Aer,
    pub(super) line: u64,
    /// Opened by the port's "error received" line; the device's detail
    /// lines, if they come, complete it.
    pub(super) header_only: bool,
    /// Firmware-first record (`aer_status:`): its uncorrectable status,
    /// to weigh against `aer_uncor_severity`.
    pub(super) firmware_first: bool,
}

#[derive(Debug)]
pub(super) struct PendingDpc {
    pub(super) dpc: Dpc,
    pub(super) line: u64,
}

pub(super) fn hex32(s: &str) -> Option<u32> {
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

pub(super) fn header_only(device: PciAddress, severity: AerSeverity) -> Aer {
    Aer {
        device,
        severity,
        layer: None,
        agent: None,
        vendor_device: None,
        status: None,
        mask: None,
        errors: Vec::new(),
        first: None,
    }
}

pub(super) fn aer_severity(s: &str) -> Option<AerSeverity> {
    Some(match s {
        "Corrected" | "Correctable" => AerSeverity::Corrected,
        "Uncorrected (Non-Fatal)" | "Uncorrectable (Non-Fatal)" => AerSeverity::UncorrectedNonFatal,
        "Uncorrected (Fatal)" | "Uncorrectable (Fatal)" => AerSeverity::UncorrectedFatal,
        _ => return None,
    })
}

/// The root port's announcement of a record, in every kernel's words
/// (drivers/pci/pcie/aer.c, aer_print_port_info / aer_print_source):
/// `Corrected error received: id=00e5` (4.x), `Corrected error received:
/// 0000:00:1c.1` (4.19 to 6.15), `Correctable error message received from
/// 0000:80:1b.4` (6.16, ` (no details found)` when the details are
/// rate-limited or lost), each maybe `Multiple `. Gives the error source
/// (an `id=` is bus/devfn on the port's domain) and the severity.
pub(super) fn aer_received(port: PciAddress, body: &str) -> Option<(PciAddress, AerSeverity)> {
    let body = body.strip_prefix("Multiple ").unwrap_or(body);
    // Most device lines are not this: two byte comparisons reject them
    // before any scan.
    if !(body.starts_with("Correct") || body.starts_with("Uncorrect")) {
        return None;
    }
    let (severity, source) = match body.split_once(" error message received from ") {
        Some(x) => x,
        None => body.split_once(" error received: ")?,
    };
    let severity = aer_severity(severity)?;
    let source = source.trim_end();
    let source = source.strip_suffix(" (no details found)").unwrap_or(source);
    let pci = match source.strip_prefix("id=") {
        Some(id) => {
            let v = u16::from_str_radix(id.get(..4)?, 16).ok()?;
            let [bus, devfn] = v.to_be_bytes();
            PciAddress {
                domain: port.domain,
                bus,
                device: devfn >> 3,
                function: devfn & 7,
            }
        }
        None => PciAddress::parse(source.split_whitespace().next()?).ok()?,
    };
    Some((pci, severity))
}

/// After "DPC: containment event": `, status:0x1f01 source:0x0000` (4.19
/// to 6.15, the reason on the next line), `, status:0x0009: unmasked
/// uncorrectable error detected` or `, status:0x000d, ERR_FATAL received
/// from 0000:02:00.0` (6.16). Returns the event and whether it is complete.
pub(super) fn dpc_event(port: PciAddress, s: &str) -> (Dpc, bool) {
    let mut dpc = Dpc {
        port,
        reason: None,
        source: None,
    };
    if let Some((_, after)) = s.split_once(" received from ") {
        dpc.source = after
            .split_whitespace()
            .next()
            .and_then(|a| PciAddress::parse(a).ok());
        let before = &s[..s.len() - after.len() - " received from ".len()];
        dpc.reason = before.rsplit(", ").next().map(|r| bounded(r.trim()));
        return (dpc, true);
    }
    if let Some(reason) = s.strip_suffix(" detected") {
        dpc.reason = reason.rsplit(": ").next().map(|r| bounded(r.trim()));
        return (dpc, true);
    }
    dpc.source = dpc_source(port, s);
    (dpc, false)
}

/// "DPC: ERR_FATAL detected" (4.19+) or "DPC unmasked uncorrectable error
/// detected, remove downstream devices" (4.x).
pub(super) fn dpc_reason(body: &str) -> Option<&str> {
    let r = body
        .strip_prefix("DPC: ")
        .or_else(|| body.strip_prefix("DPC "))?;
    let (reason, _) = r.split_once(" detected")?;
    (!reason.starts_with("containment")).then_some(reason)
}

pub(super) fn with_reason(mut p: PendingDpc, reason: &str) -> PendingDpc {
    // The source id is valid only when the port received ERR_FATAL or
    // ERR_NONFATAL; otherwise it is whatever the register held.
    if reason != "ERR_FATAL" && reason != "ERR_NONFATAL" {
        p.dpc.source = None;
    }
    p.dpc.reason = Some(bounded(reason));
    p
}

pub(super) fn finish_dpc(p: PendingDpc) -> Finding {
    Finding {
        data: EventData::PcieDpc(p.dpc),
        gpu: None,
        line: p.line,
    }
}

pub(super) fn aer_header(device: PciAddress, header: &str) -> Aer {
    // "severity=Corrected, type=Physical Layer, (Receiver ID)"
    // "severity=Uncorrectable (Fatal), type=Transaction Layer, id=00e8(Requester ID)"
    let mut severity = AerSeverity::Corrected;
    let mut layer = None;
    let mut agent = None;
    for part in header.split(", ") {
        if let Some(s) = part.strip_prefix("severity=") {
            severity = if s.starts_with("Correct") {
                AerSeverity::Corrected
            } else if s.contains("Non-Fatal") {
                AerSeverity::UncorrectedNonFatal
            } else {
                AerSeverity::UncorrectedFatal
            };
        } else if let Some(t) = part.strip_prefix("type=") {
            layer = pcie_layer(t);
        } else if let Some(open) = part.find('(') {
            let a = part[open + 1..].trim_end_matches(')');
            if !a.is_empty() {
                agent = Some(a.to_owned());
            }
        }
    }
    Aer {
        device,
        severity,
        layer,
        agent,
        vendor_device: None,
        status: None,
        mask: None,
        errors: Vec::new(),
        first: None,
    }
}

pub(super) fn pcie_layer(t: &str) -> Option<PcieLayer> {
    match t {
        "Physical Layer" => Some(PcieLayer::Physical),
        "Data Link Layer" => Some(PcieLayer::DataLink),
        "Transaction Layer" => Some(PcieLayer::Transaction),
        _ => None,
    }
}

/// "8086:9d14] error status/mask=00000001/00002000"
pub(super) fn aer_status(aer: &mut Aer, s: &str) {
    if let Some((vd, rest)) = s.split_once(']') {
        aer.vendor_device = Some(vd.to_owned());
        if let Some((_, sm)) = rest.split_once("status/mask=") {
            if let Some((st, mk)) = sm.trim().split_once('/') {
                aer.status = u32::from_str_radix(st, 16).ok();
                aer.mask = u32::from_str_radix(mk.trim(), 16).ok();
            }
        }
    }
}

/// "[ 0] RxErr                  (First)"
pub(super) fn aer_bit(aer: &mut Aer, s: &str) {
    let Some((_, rest)) = s.split_once(']') else {
        return;
    };
    let rest = rest.trim();
    let (name, first) = match rest.strip_suffix("(First)") {
        Some(n) => (n.trim_end(), true),
        None => (rest, false),
    };
    if name.is_empty() || aer.errors.len() >= 32 {
        return;
    }
    let name = short_error_name(name).to_owned();
    if first {
        aer.first = Some(name.clone());
    }
    aer.errors.push(name);
}

/// Older kernels print long names; newer ones the short ones. One name per
/// error, the short one.
pub(super) fn short_error_name(name: &str) -> &str {
    match name {
        "Receiver Error" => "RxErr",
        "Bad TLP" => "BadTLP",
        "Bad DLLP" => "BadDLLP",
        "RELAY_NUM Rollover" => "Rollover",
        "Replay Timer Timeout" => "Timeout",
        "Advisory Non-Fatal" => "NonFatalErr",
        "Corrected Internal Error" => "CorrIntErr",
        "Header Log Overflow" => "HeaderOF",
        "Data Link Protocol" => "DLP",
        "Surprise Down Error" => "SDES",
        "Poisoned TLP" => "TLP",
        "Flow Control Protocol" => "FCP",
        "Completion Timeout" => "CmpltTO",
        "Completer Abort" => "CmpltAbrt",
        "Unexpected Completion" => "UnxCmplt",
        "Receiver Overflow" => "RxOF",
        "Malformed TLP" => "MalfTLP",
        "ECRC" => "ECRC",
        "Unsupported Request" => "UnsupReq",
        "ACS Violation" => "ACSViol",
        other => other,
    }
}

pub(super) fn finish_aer(p: PendingAer) -> Finding {
    Finding {
        data: EventData::PcieAer(p.aer),
        gpu: None,
        line: p.line,
    }
}

/// ", status:0x1f01 source:0x2b00": the source is a bus/devfn on the
/// port's domain.
pub(super) fn dpc_source(port: PciAddress, s: &str) -> Option<PciAddress> {
    let (_, src) = s.split_once("source:0x")?;
    let v = u16::from_str_radix(src.get(..4)?, 16).ok()?;
    if v == 0 {
        return None;
    }
    let [bus, devfn] = v.to_be_bytes();
    Some(PciAddress {
        domain: port.domain,
        bus,
        device: devfn >> 3,
        function: devfn & 7,
    })
}

/// pciehp's link-down notice (drivers/pci/hotplug/pciehp_ctrl.c and
/// _hpc.c): "pciehp: Slot(400): Link Down" (4.19+), "Slot(4): Link Down"
/// (4.x, service device), "slot(6): Link Down event" (3.x).
pub(super) fn link_down(body: &str) -> Option<Option<String>> {
    let b = body.strip_prefix("pciehp: ").unwrap_or(body);
    let rest = b
        .strip_prefix("Slot(")
        .or_else(|| b.strip_prefix("slot("))?;
    let (slot, tail) = rest.split_once("): ")?;
    let tail = tail.trim();
    if tail != "Link Down" && tail != "Link Down event" {
        return None;
    }
    Some(Some(bounded(slot)))
}
