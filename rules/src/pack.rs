//! The default rule pack, compiled into the binary. Its files live in
//! `rules/pack/` so `pitcrew check` and `pitcrew test` can read them too.

use crate::SourceFile;

macro_rules! pack {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../pack/", $name)))),*]
    };
}

const FILES: &[(&str, &str)] = pack![
    "xid.toml",
    "pcie.toml",
    "memory.toml",
    "host.toml",
    "network.toml",
    "nvlink.toml",
    "fleet.toml"
];

/// The default pack's files, named `pack/<file>`.
pub fn default_pack() -> Vec<SourceFile> {
    FILES
        .iter()
        .map(|(n, t)| SourceFile {
            name: format!("pack/{n}"),
            text: (*t).to_owned(),
        })
        .collect()
}

/// An inventory example, for docs and the demo.
pub const DEFAULT_INVENTORY_EXAMPLE: &str = "[[node]]\nname = \"n[1-8]\"\nrack = \"r1\"\nleaf_switch = \"leaf-1\"\npdu = \"pdu-1\"\ngpus = 8\n";
