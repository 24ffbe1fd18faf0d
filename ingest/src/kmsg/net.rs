//! Network link changes from the NIC, bonding, IPv6 and InfiniBand
//! drivers' printk formats, as `net.link`.

use pitcrew_contract::{NetLink, PciAddress};

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
pub(super) fn net_link(text: &str) -> Option<NetLink> {
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
pub(super) fn mentions_link(text: &str) -> bool {
    text.contains("ink")
}

pub(super) fn nic_message(iface: &str, pci: Option<PciAddress>, msg: &str) -> Option<NetLink> {
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

pub(super) fn bond_link(slave: &str, msg: &str) -> Option<NetLink> {
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
pub(super) fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'@'))
}

/// The first speed in a message: `10 Gbps`, `100000 Mbps`, `1Gbps/Full`,
/// ice's `100 Gbps` (its "%sbps" with "100 G"), in Mbps.
pub(super) fn speed_mbps(msg: &str) -> Option<u32> {
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
