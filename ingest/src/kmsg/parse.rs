//! Kernel log lines into findings. Stateful only where the kernel spreads
//! one fault over several lines: PCIe AER records (header, status line,
//! error bits, per device, interleaved with other devices' lines) and the
//! driver's multi-line "fallen off the bus" notice.
//!
//! Contract: any input is accepted and never panics; lines that are not
//! faults give nothing. Hand-written matching (no regex): most lines are
//! rejected after a few byte comparisons, which is what makes the parser
//! fast enough to read a busy node's log as it is written.

use std::collections::HashMap;

use pitcrew_contract::{
    Aer, AerSeverity, Dpc, Edac, EventData, GpuLost, GpuRef, HostThermal, LinkDown, Mce,
    MemoryErrorSeverity, NetLink, PciAddress, PcieLayer, RecoveryAction, Sxid, ThermalScope,
    ThermalState, Xid,
};

/// What one line (or record) means.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub data: EventData,
    pub gpu: Option<GpuRef>,
    /// Index (0-based, as pushed) of the line that started it.
    pub line: u64,
}

#[derive(Debug)]
struct PendingAer {
    aer: Aer,
    line: u64,
    /// Opened by the port's "error received" line; the device's detail
    /// lines, if they come, complete it.
    header_only: bool,
    /// Firmware-first record (`aer_status:`): its uncorrectable status,
    /// to weigh against `aer_uncor_severity`.
    firmware_first: bool,
}

#[derive(Debug)]
struct PendingDpc {
    dpc: Dpc,
    line: u64,
}

/// A firmware-first (APEI GHES) CPER record, `{N}[Hardware Error]: ...`.
#[derive(Debug, Default)]
struct PendingGhes {
    id: String,
    line: u64,
    corrected: bool,
    section: Option<String>,
    fru: Option<String>,
    dimm: Option<String>,
    node_line: Option<String>,
    node: Option<u32>,
    error_type: Option<String>,
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

/// At most this many AER records open at once (one per device); more is
/// garbage input, and the oldest are completed early.
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
        if let Some(p) = self.dpc.remove(&device) {
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

fn hex32(s: &str) -> Option<u32> {
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

fn header_only(device: PciAddress, severity: AerSeverity) -> Aer {
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

fn aer_severity(s: &str) -> Option<AerSeverity> {
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
fn aer_received(port: PciAddress, body: &str) -> Option<(PciAddress, AerSeverity)> {
    let body = body.strip_prefix("Multiple ").unwrap_or(body);
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
fn dpc_event(port: PciAddress, s: &str) -> (Dpc, bool) {
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
fn dpc_reason(body: &str) -> Option<&str> {
    let r = body
        .strip_prefix("DPC: ")
        .or_else(|| body.strip_prefix("DPC "))?;
    let (reason, _) = r.split_once(" detected")?;
    (!reason.starts_with("containment")).then_some(reason)
}

fn with_reason(mut p: PendingDpc, reason: &str) -> PendingDpc {
    // The source id is valid only when the port received ERR_FATAL or
    // ERR_NONFATAL; otherwise it is whatever the register held.
    if reason != "ERR_FATAL" && reason != "ERR_NONFATAL" {
        p.dpc.source = None;
    }
    p.dpc.reason = Some(bounded(reason));
    p
}

fn finish_dpc(p: PendingDpc) -> Finding {
    Finding {
        data: EventData::PcieDpc(p.dpc),
        gpu: None,
        line: p.line,
    }
}

fn bounded(s: &str) -> String {
    s.chars().take(128).collect()
}

/// `{35}[Hardware Error]: rest`: the record number and the rest.
fn ghes_line(text: &str) -> Option<(&str, &str)> {
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
fn finish_ghes(g: PendingGhes) -> Option<Finding> {
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

/// A network link change as the drivers print it (the formats of their
/// printk calls, kernels 4.x to 6.x):
///
/// - `netdev_info` lines, `<driver> <device> <ifname>: <message>`:
///   mlx5 `Link up` / `Link down`; ixgbe `NIC Link is Up 10 Gbps, Flow
///   Control: RX/TX`; i40e `NIC Link is Up, Requested Speed: 40 Gbps, ...`;
///   ice `NIC Link is up 100 Gbps Full Duplex, ...`; igc, igb and e1000e
///   `NIC Link is Up 1000 Mbps Full Duplex, ...`; bnxt `NIC Link is Up,
///   100000 Mbps full duplex, ...`; all Intel and bnxt `NIC Link is Down`;
///   phylib `Link is Up - 1Gbps/Full - flow control rx/tx` / `Link is Down`;
/// - older `pr_info` forms: `e1000e: eth0 NIC Link is Up 1000 Mbps ...`;
/// - bonding, 5.x+: `bond0: (slave eth1): link status definitely down,
///   disabling slave` / `... definitely up, 40000 Mbps full duplex`; before:
///   `bond0: link status definitely down for interface eth1, disabling it`;
/// - IPv6 address configuration: `ADDRCONF(NETDEV_CHANGE): ib0: link
///   becomes ready` (the carrier came up; IPoIB interfaces say it too);
/// - InfiniBand ports, `ibdev_info` (6.x): `mlx5_core 0000:ab:00.0 mlx5_5:
///   Port: 1 Link ACTIVE` / `Link DOWN`, as interface `mlx5_5/1`.
fn net_link(text: &str) -> Option<NetLink> {
    if !mentions_link(text) {
        return None;
    }
    if let Some(rest) = text.split_once("ADDRCONF(NETDEV_CHANGE): ").map(|(_, r)| r) {
        let (iface, msg) = rest.split_once(": ")?;
        return (msg.trim_end() == "link becomes ready" && plain_name(iface)).then(|| NetLink {
            interface: iface.to_owned(),
            up: true,
            ..NetLink::default()
        });
    }
    // bonding
    if let Some((bond, rest)) = text.split_once(": ") {
        if plain_name(bond) {
            if let Some(r) = rest.strip_prefix("(slave ") {
                let (slave, msg) = r.split_once("): ")?;
                return bond_link(slave, msg);
            }
            if let Some(r) = rest.strip_prefix("link status definitely ") {
                let (state, r) = r.split_once(" for interface ")?;
                let (slave, speed) = r.split_once(',').unwrap_or((r, ""));
                let up = match state {
                    "up" => true,
                    "down" => false,
                    _ => return None,
                };
                return Some(NetLink {
                    interface: slave.trim().to_owned(),
                    up,
                    pci: None,
                    speed_mbps: if up { speed_mbps(speed) } else { None },
                });
            }
            // Old pr_info: "e1000e: eth0 NIC Link is Up 1000 Mbps Full Duplex, ..."
            if let Some((iface, msg)) = rest.split_once(' ') {
                if plain_name(iface) && msg.starts_with("NIC Link is ") {
                    return nic_message(iface, None, msg);
                }
            }
        }
    }
    // netdev_info: "<driver> <device> <ifname>: <message>"
    let (driver, rest) = text.split_once(' ')?;
    if !plain_name(driver) {
        return None;
    }
    let (device, rest) = rest.split_once(' ')?;
    let (iface, msg) = rest.split_once(": ")?;
    if !plain_name(iface) || device.is_empty() || device.len() > 64 {
        return None;
    }
    let pci = PciAddress::parse(device).ok();
    // igc and igb repeat "<driver>: <ifname> " inside the message.
    let msg = match msg.split_once(": ") {
        Some((d, m)) if d == driver || d == "igb" || d == "igc" => {
            m.strip_prefix(iface).map_or(m, str::trim_start)
        }
        _ => msg,
    };
    nic_message(iface, pci, msg)
}

/// Every form says `Link` or `link` (ADDRCONF's "link becomes ready"
/// too): one substring scan rejects the other lines.
fn mentions_link(text: &str) -> bool {
    text.contains("ink")
}

fn nic_message(iface: &str, pci: Option<PciAddress>, msg: &str) -> Option<NetLink> {
    let msg = msg.trim_end();
    // InfiniBand (drivers/infiniband/core/cache.c, 6.x): `ibdev_info(device,
    // "Port: %d Link %s", port, state)`; the link is usable when ACTIVE.
    // INIT and ARMED are steps of a port coming up, not changes of their own.
    if let Some(r) = msg.strip_prefix("Port: ") {
        let (port, state) = r.split_once(" Link ")?;
        let port: u32 = port.trim().parse().ok()?;
        let up = match state.trim() {
            "ACTIVE" | "ACTIVE_DEFER" => true,
            "DOWN" => false,
            _ => return None,
        };
        return Some(NetLink {
            interface: format!("{iface}/{port}"),
            up,
            pci,
            speed_mbps: None,
        });
    }
    let up = if msg == "Link up" || msg.starts_with("Link is Up") {
        true
    } else if msg == "Link down" || msg.starts_with("Link is Down") {
        false
    } else if let Some(r) = msg.strip_prefix("NIC Link is ") {
        if r.starts_with("Up") || r.starts_with("up") {
            true
        } else if r.starts_with("Down") || r.starts_with("down") {
            false
        } else {
            return None;
        }
    } else {
        return None;
    };
    Some(NetLink {
        interface: iface.to_owned(),
        up,
        pci,
        speed_mbps: if up { speed_mbps(msg) } else { None },
    })
}

fn bond_link(slave: &str, msg: &str) -> Option<NetLink> {
    let r = msg.strip_prefix("link status definitely ")?;
    let up = if r.starts_with("up") {
        true
    } else if r.starts_with("down") {
        false
    } else {
        return None;
    };
    Some(NetLink {
        interface: slave.to_owned(),
        up,
        pci: None,
        speed_mbps: if up { speed_mbps(r) } else { None },
    })
}

/// An interface or driver name: no spaces, not empty, not absurdly long.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

/// The first speed in a message: `10 Gbps`, `100000 Mbps`, `1Gbps/Full`,
/// ice's `100 Gbps` (its "%sbps" with "100 G"), in Mbps.
fn speed_mbps(msg: &str) -> Option<u32> {
    let b = msg.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let n: f64 = msg[start..i].parse().ok()?;
            let unit = msg[i..].trim_start();
            let factor =
                if unit.starts_with("Gbps") || unit.starts_with("Gb/s") || unit.starts_with("G ") {
                    1000.0
                } else if unit.starts_with("Mbps") || unit.starts_with("Mb/s") {
                    1.0
                } else {
                    continue;
                };
            let v = n * factor;
            return (v > 0.0 && v < 10_000_000.0).then(|| v.round() as u32);
        }
        i += 1;
    }
    None
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

fn xid(x: &str, line: u64) -> Option<Finding> {
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
fn recovery(message: &str) -> Option<RecoveryAction> {
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

fn aer_header(device: PciAddress, header: &str) -> Aer {
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

fn pcie_layer(t: &str) -> Option<PcieLayer> {
    match t {
        "Physical Layer" => Some(PcieLayer::Physical),
        "Data Link Layer" => Some(PcieLayer::DataLink),
        "Transaction Layer" => Some(PcieLayer::Transaction),
        _ => None,
    }
}

/// "8086:9d14] error status/mask=00000001/00002000"
fn aer_status(aer: &mut Aer, s: &str) {
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
fn aer_bit(aer: &mut Aer, s: &str) {
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
fn short_error_name(name: &str) -> &str {
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

fn finish_aer(p: PendingAer) -> Finding {
    Finding {
        data: EventData::PcieAer(p.aer),
        gpu: None,
        line: p.line,
    }
}

/// ", status:0x1f01 source:0x2b00": the source is a bus/devfn on the
/// port's domain.
fn dpc_source(port: PciAddress, s: &str) -> Option<PciAddress> {
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
fn link_down(body: &str) -> Option<Option<String>> {
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

/// "nvidia-nvswitch3: SXid (PCI:0000:05:00.0): 12028, Non-fatal, Link 32 egress non-posted PRIV error (First)"
fn sxid(text: &str) -> Option<EventData> {
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

/// "EDAC MC3: 1 CE memory read error on CPU_SrcID#0_Channel#0_DIMM#0 (...)"
fn edac(text: &str) -> Option<EventData> {
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
fn mce(text: &str) -> Option<EventData> {
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
fn cpu_thermal(text: &str) -> Option<EventData> {
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
