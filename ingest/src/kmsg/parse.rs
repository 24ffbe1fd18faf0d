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
}

/// The stateful parser. Feed it lines in order with [`Parser::push`];
/// call [`Parser::flush`] when input pauses or ends, to complete records
/// still open.
#[derive(Debug, Default)]
pub struct Parser {
    lines: u64,
    aer: HashMap<PciAddress, PendingAer>,
    /// "The NVIDIA GPU <pci>" seen; waiting for "fallen off the bus".
    fallen: Option<(PciAddress, u64)>,
}

/// At most this many AER records open at once (one per device); more is
/// garbage input, and the oldest are completed early.
const MAX_OPEN_AER: usize = 256;

impl Parser {
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Records still open (state size).
    pub fn open_records(&self) -> usize {
        self.aer.len() + usize::from(self.fallen.is_some())
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
        let mut open: Vec<PendingAer> = self.aer.drain().map(|(_, p)| p).collect();
        open.sort_by_key(|p| p.line);
        out.extend(open.into_iter().map(finish_aer));
        self.fallen = None;
    }

    fn nvrm(&mut self, rest: &str, line: u64, out: &mut Vec<Finding>) {
        if let Some(x) = rest.strip_prefix("Xid (") {
            if let Some(f) = xid(x, line) {
                out.push(f);
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
    /// was consumed (part of an AER record, or a DPC/pciehp finding).
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
            if let Some(done) = self.aer.remove(&device) {
                out.push(finish_aer(done));
            }
            if self.aer.len() >= MAX_OPEN_AER {
                self.flush(out);
            }
            self.aer.insert(
                device,
                PendingAer {
                    aer: aer_header(device, header),
                    line,
                },
            );
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
            // Any other line of this device ends its record.
            if let Some(done) = self.aer.remove(&device) {
                out.push(finish_aer(done));
            }
        }
        if let Some(dpc) = body.strip_prefix("DPC: containment event") {
            out.push(Finding {
                data: EventData::PcieDpc(Dpc {
                    port: device,
                    reason: None,
                    source: dpc_source(device, dpc),
                }),
                gpu: None,
                line,
            });
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
            layer = match t {
                "Physical Layer" => Some(PcieLayer::Physical),
                "Data Link Layer" => Some(PcieLayer::DataLink),
                "Transaction Layer" => Some(PcieLayer::Transaction),
                _ => None,
            };
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

/// "pciehp: Slot(400): Link Down" or "Slot(400): Link Down"
fn link_down(body: &str) -> Option<Option<String>> {
    let b = body.strip_prefix("pciehp: ").unwrap_or(body);
    let rest = b.strip_prefix("Slot(")?;
    let (slot, tail) = rest.split_once("): ")?;
    if tail.trim() != "Link Down" {
        return None;
    }
    Some(Some(slot.to_owned()))
}

/// Findings that stand on one line and name no PCI device.
fn standalone(text: &str) -> Option<EventData> {
    let b = text.as_bytes();
    match b[0] {
        b'n' if text.starts_with("nvidia-nvswitch") => sxid(text),
        b'E' if text.starts_with("EDAC MC") => edac(text),
        b'm' | b'M' | b'[' => mce(text),
        b'C' if text.starts_with("CPU") => cpu_thermal(text),
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
    let severity = parts.next().unwrap_or("");
    let message = parts.next().unwrap_or("").trim();
    let link = message
        .strip_prefix("Link ")
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    Some(EventData::NvswitchSxid(Sxid {
        switch: switch.to_owned(),
        pci,
        code,
        fatal: severity.eq_ignore_ascii_case("fatal"),
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
    let rest = rest.strip_prefix("[Hardware Error]: ")?;
    if rest.starts_with("Machine check events logged") {
        return Some(EventData::HostMce(Mce {
            cpu: None,
            bank: None,
            message: rest.to_owned(),
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
    } else {
        return None;
    };
    let (state, total_events) = if rest.starts_with("temperature above threshold") {
        let total = rest
            .split_once("total events = ")
            .and_then(|(_, n)| n.trim_end_matches(')').trim().parse().ok());
        (ThermalState::Throttled, total)
    } else if rest.starts_with("temperature/speed normal") {
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
