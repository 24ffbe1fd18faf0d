//! Kernel log lines into findings: the stateful [`Parser`] and its
//! dispatch. Stateful only where the kernel spreads one fault over several
//! lines: PCIe AER records (announcement, header, status line, error bits,
//! per device, interleaved with other devices' lines), DPC's event and its
//! reason, firmware-first CPER records, and the driver's multi-line "fallen
//! off the bus" notice. What each line means is read in the modules beside
//! this one: `pcie`, `nvidia`, `host` and `net`.
//!
//! Contract: any input is accepted and never panics; lines that are not
//! faults give nothing. Hand-written matching (no regex): most lines are
//! rejected after a few byte comparisons, which is what makes the parser
//! fast enough to read a busy node's log as it is written.

use std::collections::HashMap;

use pitcrew_contract::{Aer, AerSeverity, EventData, GpuLost, GpuRef, LinkDown, Mce, PciAddress};

use super::host::{cpu_thermal, edac, finish_ghes, ghes_line, mce, PendingGhes};
use super::net::net_link;
use super::nvidia::{sxid, xid};
use super::pcie::{
    aer_bit, aer_header, aer_received, aer_status, dpc_event, dpc_reason, finish_aer, finish_dpc,
    header_only, hex32, link_down, pcie_layer, with_reason, PendingAer, PendingDpc,
};

/// What one line (or record) means.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub data: EventData,
    pub gpu: Option<GpuRef>,
    /// Index (0-based, as pushed) of the line that started it.
    pub line: u64,
}

/// The stateful parser. Feed it lines in order with [`Parser::push`];
/// call [`Parser::flush`] when input pauses or ends, to complete records
/// still open.
#[derive(Debug, Default)]
pub struct Parser {
    lines: u64,
    aer: HashMap<PciAddress, PendingAer>,
    /// DPC's "containment event" waiting for its "<reason> detected" line.
    dpc: HashMap<PciAddress, PendingDpc>,
    ghes: Option<PendingGhes>,
    /// "The NVIDIA GPU <pci>" seen; waiting for "fallen off the bus".
    fallen: Option<(PciAddress, u64)>,
    /// "NVRM: GPU at PCI:<pci>: <uuid>": the UUID for that GPU's Xids.
    gpu_uuids: HashMap<PciAddress, String>,
}

/// At most this many GPU UUIDs remembered (a node has at most 16 GPUs;
/// more is garbage input).
const MAX_GPU_UUIDS: usize = 64;

/// At most this many AER (or DPC) records open at once (one per device);
/// more is garbage input, and the open ones are completed early.
const MAX_OPEN_AER: usize = 256;

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Records still open (state size).
    pub fn open_records(&self) -> usize {
        self.aer.len()
            + self.dpc.len()
            + usize::from(self.ghes.is_some())
            + usize::from(self.fallen.is_some())
    }

    /// Parses one message (prefix already removed, see [`super::Line`]).
    pub fn push(&mut self, text: &str, out: &mut Vec<Finding>) {
        let line = self.lines;
        self.lines += 1;
        let text = text.trim_start();
        if text.len() < 8 {
            return;
        }
        if let Some(rest) = text.strip_prefix("NVRM: ") {
            self.nvrm(rest, line, out);
            return;
        }
        self.fallen = None;
        if text.as_bytes()[0] == b'{' {
            if let Some((id, rest)) = ghes_line(text) {
                self.ghes_line(id, rest, line, out);
                return;
            }
        }
        if let Some(done) = self.ghes.take() {
            out.extend(finish_ghes(done));
        }
        if let Some(link) = net_link(text) {
            out.push(Finding {
                data: EventData::NetLink(link),
                gpu: None,
                line,
            });
            return;
        }
        if let Some((device, body)) = device_prefix(text) {
            if self.device_line(device, body, line, out) {
                return;
            }
        }
        if let Some(f) = standalone(text) {
            out.push(Finding {
                data: f,
                gpu: None,
                line,
            });
        }
    }

    /// Completes every open record.
    pub fn flush(&mut self, out: &mut Vec<Finding>) {
        let mut open: Vec<Finding> = self
            .aer
            .drain()
            .map(|(_, p)| finish_aer(p))
            .chain(self.dpc.drain().map(|(_, p)| finish_dpc(p)))
            .chain(self.ghes.take().and_then(finish_ghes))
            .collect();
        open.sort_by_key(|f| f.line);
        out.extend(open);
        self.fallen = None;
    }

    fn ghes_line(&mut self, id: &str, rest: &str, line: u64, out: &mut Vec<Finding>) {
        let rest = rest.trim_start();
        if rest.starts_with("Hardware error from APEI") {
            if let Some(done) = self.ghes.take() {
                out.extend(finish_ghes(done));
            }
            self.ghes = Some(PendingGhes {
                id: id.to_owned(),
                line,
                corrected: true,
                ..PendingGhes::default()
            });
            return;
        }
        let Some(g) = self.ghes.as_mut().filter(|g| g.id == id) else {
            return;
        };
        let bounded = |v: &str| v.trim().chars().take(128).collect::<String>();
        if let Some(sev) = rest.strip_prefix("event severity: ") {
            g.corrected = sev.trim() == "corrected";
        } else if let Some(t) = rest.strip_prefix("section_type: ") {
            g.section = Some(bounded(t));
        } else if let Some(t) = rest.strip_prefix("fru_text: ") {
            g.fru = Some(bounded(t));
        } else if let Some(t) = rest.strip_prefix("DIMM location: ") {
            g.dimm = Some(bounded(t));
        } else if let Some(t) = rest.strip_prefix("error_type: ") {
            g.error_type = Some(bounded(t));
        } else if let Some(t) = rest
            .strip_prefix("node:")
            .or_else(|| rest.strip_prefix("node: "))
        {
            g.node = t.split_whitespace().next().and_then(|n| n.parse().ok());
            g.node_line = Some(bounded(rest));
        }
    }

    fn nvrm(&mut self, rest: &str, line: u64, out: &mut Vec<Finding>) {
        if let Some(x) = rest.strip_prefix("Xid (") {
            if let Some(mut f) = xid(x, line) {
                if let Some(g) = f.gpu.as_mut() {
                    if g.uuid.is_none() {
                        g.uuid = g.pci.and_then(|p| self.gpu_uuids.get(&p).cloned());
                    }
                }
                out.push(f);
            }
            self.fallen = None;
            return;
        }
        // "GPU at PCI:0000:00:05: GPU-efbdfde9-5798-a6e7-4c46-12518fa15375"
        if let Some(at) = rest.strip_prefix("GPU at PCI:") {
            if let Some((pci, uuid)) = at.split_once(": ") {
                let uuid = uuid.trim();
                if let (Ok(pci), true) = (
                    PciAddress::parse(pci),
                    uuid.starts_with("GPU-") && uuid.len() <= 64,
                ) {
                    if self.gpu_uuids.len() >= MAX_GPU_UUIDS {
                        self.gpu_uuids.clear();
                    }
                    self.gpu_uuids.insert(pci, uuid.to_owned());
                }
            }
            self.fallen = None;
            return;
        }
        if let Some(gpu) = rest.strip_prefix("The NVIDIA GPU ") {
            let addr = gpu.split_whitespace().next().unwrap_or("");
            self.fallen = PciAddress::parse(addr).ok().map(|a| (a, line));
            if rest.contains("fallen off the bus") {
                self.emit_fallen(out);
            }
            return;
        }
        if rest.contains("fallen off the bus") {
            self.emit_fallen(out);
        } else if !rest.starts_with('(') && !rest.contains("installed in this system") {
            self.fallen = None;
        }
    }

    fn emit_fallen(&mut self, out: &mut Vec<Finding>) {
        if let Some((pci, line)) = self.fallen.take() {
            out.push(Finding {
                data: EventData::GpuLost(GpuLost {
                    reason: "fallen off the bus and not responding to commands".to_owned(),
                }),
                gpu: Some(GpuRef {
                    index: None,
                    uuid: None,
                    pci: Some(pci),
                }),
                line,
            });
        }
    }

    /// A line that starts `<driver> <pci address>: `. Returns true when it
    /// was consumed (part of an AER or DPC record, or a pciehp finding).
    fn device_line(
        &mut self,
        device: PciAddress,
        body: &str,
        line: u64,
        out: &mut Vec<Finding>,
    ) -> bool {
        let body = body.trim_start();
        let aer_body = body
            .strip_prefix("AER:")
            .map(str::trim_start)
            .unwrap_or(body);
        if let Some(header) = aer_body.strip_prefix("PCIe Bus Error: ") {
            let detail = aer_header(device, header);
            match self.aer.get_mut(&device) {
                // The port announced this record; its details arrive.
                Some(p) if p.header_only => {
                    p.header_only = false;
                    p.aer.severity = detail.severity;
                    p.aer.layer = detail.layer;
                    p.aer.agent = detail.agent;
                }
                _ => self.open_aer(device, detail, line, false, out),
            }
            return true;
        }
        if let Some((source, severity)) = aer_received(device, aer_body) {
            self.open_aer(source, header_only(source, severity), line, true, out);
            return true;
        }
        if let Some(sm) = aer_body.strip_prefix("aer_status: ") {
            // Firmware first (APEI): pci_print_aer's registers, no header.
            let mut aer = header_only(device, AerSeverity::Corrected);
            let mut parts = sm.split(", aer_mask: ");
            aer.status = parts.next().and_then(hex32);
            aer.mask = parts.next().and_then(hex32);
            self.open_aer(device, aer, line, false, out);
            if let Some(p) = self.aer.get_mut(&device) {
                p.firmware_first = true;
            }
            return true;
        }
        if let Some(p) = self.aer.get_mut(&device) {
            if let Some(status) = aer_body.strip_prefix("device [") {
                aer_status(&mut p.aer, status);
                return true;
            }
            if aer_body.starts_with('[') {
                aer_bit(&mut p.aer, aer_body);
                return true;
            }
            if aer_body.starts_with("TLP Header") || aer_body.starts_with("Error of this Agent") {
                return true;
            }
            if p.firmware_first {
                if let Some(la) = aer_body.strip_prefix("aer_layer=") {
                    let (layer, agent) = la.split_once(", aer_agent=").unwrap_or((la, ""));
                    p.aer.layer = pcie_layer(layer.trim());
                    p.aer.agent = (!agent.trim().is_empty()).then(|| agent.trim().to_owned());
                    return true;
                }
                if let Some(sev) = aer_body.strip_prefix("aer_uncor_severity: ") {
                    let unmasked = p.aer.status.unwrap_or(0) & !p.aer.mask.unwrap_or(0);
                    p.aer.severity = if hex32(sev).is_some_and(|s| s & unmasked != 0) {
                        AerSeverity::UncorrectedFatal
                    } else {
                        AerSeverity::UncorrectedNonFatal
                    };
                    return true;
                }
            }
            // Any other line of this device ends its record.
            if let Some(done) = self.aer.remove(&device) {
                out.push(finish_aer(done));
            }
        }
        if let Some(p) = (!self.dpc.is_empty())
            .then(|| self.dpc.remove(&device))
            .flatten()
        {
            // "DPC: <reason> detected" completes the containment event.
            match dpc_reason(body) {
                Some(reason) => {
                    out.push(finish_dpc(with_reason(p, reason)));
                    return true;
                }
                None => out.push(finish_dpc(p)),
            }
        }
        if let Some(event) = body
            .strip_prefix("DPC: containment event")
            .or_else(|| body.strip_prefix("DPC containment event"))
        {
            let (dpc, complete) = dpc_event(device, event);
            let pending = PendingDpc { dpc, line };
            if complete {
                out.push(finish_dpc(pending));
            } else {
                if self.dpc.len() >= MAX_OPEN_AER {
                    self.flush(out);
                }
                self.dpc.insert(device, pending);
            }
            return true;
        }
        if let Some(slot) = link_down(body) {
            out.push(Finding {
                data: EventData::PcieLinkDown(LinkDown {
                    port: Some(device),
                    slot,
                }),
                gpu: None,
                line,
            });
            return true;
        }
        false
    }

    /// Starts a record for `device`, completing the one it had.
    fn open_aer(
        &mut self,
        device: PciAddress,
        aer: Aer,
        line: u64,
        header_only: bool,
        out: &mut Vec<Finding>,
    ) {
        if let Some(done) = self.aer.remove(&device) {
            out.push(finish_aer(done));
        }
        if self.aer.len() >= MAX_OPEN_AER {
            self.flush(out);
        }
        self.aer.insert(
            device,
            PendingAer {
                aer,
                line,
                header_only,
                firmware_first: false,
            },
        );
    }
}

pub(super) fn bounded(s: &str) -> String {
    s.chars().take(128).collect()
}

/// `<driver> <dddd:bb:dd.f>: rest` (also `pciehp <addr>:pcie004: rest`).
fn device_prefix(text: &str) -> Option<(PciAddress, &str)> {
    let sp = text.find(' ')?;
    if sp > 32 {
        return None;
    }
    let after = &text[sp + 1..];
    // The address is 12 characters: dddd:bb:dd.f
    let addr = after.get(..12)?;
    if addr.as_bytes()[4] != b':' || addr.as_bytes()[10] != b'.' {
        return None;
    }
    let pci = PciAddress::parse(addr).ok()?;
    let rest = &after[12..];
    let rest = rest.strip_prefix(':')?;
    // Old pciehp form: "0000:00:1c.4:pcie004: Slot(4): Link Down"
    let rest = match rest.split_once(": ") {
        Some((port, r)) if port.starts_with("pcie") && !port.contains(' ') => r,
        _ => rest,
    };
    Some((pci, rest))
}

/// Findings that stand on one line and name no PCI device.
fn standalone(text: &str) -> Option<EventData> {
    let b = text.as_bytes();
    match b[0] {
        b'n' if text.starts_with("nvidia-nvswitch") => sxid(text),
        b'E' if text.starts_with("EDAC MC") => edac(text),
        b'm' if text.starts_with("mce: CPU") => cpu_thermal(&text[5..]),
        b'm' | b'M' | b'[' => mce(text),
        b'C' if text.starts_with("CPU") => cpu_thermal(text),
        b'K' if text.starts_with("Kernel panic - not syncing: Fatal machine check") => {
            Some(EventData::HostMce(Mce {
                cpu: None,
                bank: None,
                message: bounded(text),
            }))
        }
        _ => None,
    }
}
