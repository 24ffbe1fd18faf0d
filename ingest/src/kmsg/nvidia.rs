//! NVIDIA driver findings: Xid lines (every tag form: old, `PCI:`, MIG
//! instances), Xid 154's recovery action, and NVSwitch SXid records.

use pitcrew_contract::{EventData, GpuRef, PciAddress, RecoveryAction, Sxid, Xid};

use super::parse::Finding;

pub(super) fn xid(x: &str, line: u64) -> Option<Finding> {
    // "PCI:0000:2b:00): 79, pid=1234, name=python, message" or "0000:2b:00): 79, ..."
    let (tag, rest) = x.split_once("): ")?;
    let tag = tag.strip_prefix("PCI:").unwrap_or(tag);
    // MIG: "PCI:0000:07:00 GPU-I:01 GPU-CI:00" names the instances too.
    let mut words = tag.split(' ');
    let tag = words.next().unwrap_or("");
    let (mut gpu_instance, mut compute_instance) = (None, None);
    for w in words {
        if let Some(n) = w.strip_prefix("GPU-I:") {
            gpu_instance = n.parse().ok();
        } else if let Some(n) = w.strip_prefix("GPU-CI:") {
            compute_instance = n.parse().ok();
        }
    }
    // The tag is a PCI address in every driver we know; anything else is
    // kept as the GPU's identifier rather than dropping the Xid.
    let gpu = match PciAddress::parse(tag) {
        Ok(pci) => GpuRef {
            index: None,
            uuid: None,
            pci: Some(pci),
        },
        Err(_) if !tag.is_empty() => GpuRef {
            index: None,
            uuid: Some(tag.chars().take(64).collect()),
            pci: None,
        },
        Err(_) => return None,
    };
    let (code, rest) = match rest.split_once(',') {
        Some((c, r)) => (c, r.trim_start()),
        None => (rest, ""),
    };
    let code: u32 = code.trim().parse().ok()?;
    let mut pid = None;
    let mut process = None;
    let mut message = rest;
    loop {
        if let Some(r) = message.strip_prefix("pid=") {
            let (v, r) = r.split_once(',').unwrap_or((r, ""));
            pid = v.trim_matches('\'').parse().ok();
            message = r.trim_start();
        } else if let Some(r) = message.strip_prefix("name=") {
            let (v, r) = r.split_once(',').unwrap_or((r, ""));
            if v != "<unknown>" {
                process = Some(v.to_owned());
            }
            message = r.trim_start();
        } else {
            break;
        }
    }
    let recovery_action = if code == 154 { recovery(message) } else { None };
    Some(Finding {
        data: EventData::GpuXid(Xid {
            code,
            pid,
            process,
            message: (!message.is_empty()).then(|| message.to_owned()),
            recovery_action,
            gpu_instance,
            compute_instance,
        }),
        gpu: Some(gpu),
        line,
    })
}

/// "GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"
pub(super) fn recovery(message: &str) -> Option<RecoveryAction> {
    let (_, after) = message.split_once("from ")?;
    let (from, after) = after.split_once(" to ")?;
    let hex = |s: &str| {
        let s = s.split_whitespace().next()?;
        u8::from_str_radix(s.trim_start_matches("0x"), 16).ok()
    };
    Some(RecoveryAction {
        action: hex(after)?,
        previous: hex(from),
    })
}

/// "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)"
pub(super) fn sxid(text: &str) -> Option<EventData> {
    let (switch, rest) = text.split_once(": SXid (")?;
    let (tag, rest) = rest.split_once("): ")?;
    let pci = PciAddress::parse(tag.strip_prefix("PCI:").unwrap_or(tag)).ok()?;
    let mut parts = rest.splitn(3, ", ");
    let code: u32 = parts.next()?.trim().parse().ok()?;
    // One SXid is several lines ("Data {...}", "Severity 0 Engine ...");
    // the one with the severity and message is the event.
    let severity = parts.next().unwrap_or("");
    let fatal = if severity.eq_ignore_ascii_case("fatal") {
        true
    } else if severity.eq_ignore_ascii_case("non-fatal")
        || severity.eq_ignore_ascii_case("nonfatal")
    {
        false
    } else {
        return None;
    };
    let message = parts.next().unwrap_or("").trim();
    let link = message
        .strip_prefix("Link ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Some(EventData::NvswitchSxid(Sxid {
        switch: switch.to_owned(),
        pci,
        code,
        fatal,
        link,
        message: (!message.is_empty()).then(|| message.to_owned()),
    }))
}
