//! The inventory: every node with its place in the topology (rack, leaf
//! switch, PDU), its BMC, its Kubernetes and Slurm names, its GPU count
//! and free labels. Fan-in rules group by it; absence rules expect every
//! node in it; remediation budgets count by it.
//!
//! ```toml
//! [[node]]
//! name = "n[1-32]"          # a range: n1 .. n32 (n[01-32] keeps the zeros)
//! rack = "r1"
//! leaf_switch = "leaf-1a"
//! pdu = "pdu-1"
//! bmc = "10.0.1.{n}:623"   # {n} is the number the range gave the node
//! k8s_node = "n{n}.example"
//! slurm_node = "n{n}"
//! gpus = 8
//! labels = { pool = "train" }
//!
//! [[facility]]              # a PDU, UPS, cooling unit or leak detector
//! name = "pdu-r[1-4]"       # ranges work as for nodes
//! kind = "pdu"              # pdu, ups, cooling, leak
//! racks = ["r{n}"]          # the racks it serves
//! address = "snmp://public@10.0.9.{n}"   # read by `pitcrew facility`
//! ```
//!
//! `[[facility]]` entries are the poller's device list too: keys only the
//! poller reads (`address`, `profile`, `interval`...) are accepted here and
//! left to it (see `pitcrew_facility::config`), so one file can serve both.

use std::collections::{BTreeMap, HashMap};

use crate::diag::{Diagnostic, Level, SourceMap};

/// One node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub rack: Option<String>,
    pub leaf_switch: Option<String>,
    pub pdu: Option<String>,
    pub bmc: Option<String>,
    pub k8s_node: Option<String>,
    pub slurm_node: Option<String>,
    pub gpus: Option<u32>,
    pub driver_version: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// A facility device: what it is and the racks it serves.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FacilityInfo {
    pub name: String,
    /// `pdu`, `ups`, `cooling`, `leak` (free text: the rules only compare it).
    pub kind: String,
    pub racks: Vec<String>,
    /// The cooling loop a cooling unit feeds.
    pub cooling_loop: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// Keys of a `[[facility]]` entry that only the poller reads.
pub const FACILITY_POLLER_KEYS: &[&str] = &[
    "address",
    "profile",
    "map",
    "interval",
    "timeout",
    "max_backoff",
    "credentials",
];

/// Every node, by name, and every facility device.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    facilities: Vec<FacilityInfo>,
    facility_index: HashMap<String, usize>,
}

impl Inventory {
    pub fn new(nodes: Vec<NodeInfo>) -> Inventory {
        let mut inv = Inventory::default();
        for n in nodes {
            inv.insert(n);
        }
        inv
    }

    /// Adds or replaces a node.
    pub fn insert(&mut self, node: NodeInfo) {
        match self.index.get(&node.name) {
            Some(&i) => self.nodes[i] = node,
            None => {
                self.index.insert(node.name.clone(), self.nodes.len());
                self.nodes.push(node);
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Adds or replaces a facility device.
    pub fn insert_facility(&mut self, f: FacilityInfo) {
        match self.facility_index.get(&f.name) {
            Some(&i) => self.facilities[i] = f,
            None => {
                self.facility_index
                    .insert(f.name.clone(), self.facilities.len());
                self.facilities.push(f);
            }
        }
    }

    pub fn facility(&self, name: &str) -> Option<&FacilityInfo> {
        self.facility_index.get(name).map(|&i| &self.facilities[i])
    }

    pub fn facilities(&self) -> &[FacilityInfo] {
        &self.facilities
    }

    /// The facility devices serving `rack`.
    pub fn facilities_of_rack<'a>(
        &'a self,
        rack: &'a str,
    ) -> impl Iterator<Item = &'a FacilityInfo> {
        self.facilities
            .iter()
            .filter(move |f| f.racks.iter().any(|r| r == rack))
    }

    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Only the nodes `keep` accepts (a partition's share); every
    /// facility device stays.
    pub fn filtered(&self, keep: impl Fn(&str) -> bool) -> Inventory {
        let mut inv = Inventory::new(
            self.nodes
                .iter()
                .filter(|n| keep(&n.name))
                .cloned()
                .collect(),
        );
        for f in &self.facilities {
            inv.insert_facility(f.clone());
        }
        inv
    }

    /// Parses an inventory file; every problem is a diagnostic.
    pub fn parse(file: &str, text: &str) -> Result<Inventory, Vec<Diagnostic>> {
        let map = SourceMap::new(file, text);
        let doc = match toml::de::DeTable::parse(text) {
            Ok(d) => d,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                return Err(vec![map.diag(&span, Level::Error, e.message().to_owned())]);
            }
        };
        let mut diags = Vec::new();
        let mut nodes = Vec::new();
        let mut facilities = Vec::new();
        for (k, v) in doc.get_ref().iter() {
            let section = k.get_ref().as_ref();
            if section == "poller" {
                // `pitcrew facility`'s own settings, when the file is shared.
                continue;
            }
            if section != "node" && section != "facility" {
                diags.push(map.diag(
                    &k.span(),
                    Level::Error,
                    format!(
                        "unknown key `{section}` in inventory; expected [[node]] or [[facility]]"
                    ),
                ));
                continue;
            }
            let Some(arr) = v.get_ref().as_array() else {
                diags.push(map.diag(
                    &v.span(),
                    Level::Error,
                    format!("`{section}` must be an array of tables ([[{section}]])"),
                ));
                continue;
            };
            for item in arr.iter() {
                let Some(t) = item.get_ref().as_table() else {
                    diags.push(map.diag(
                        &item.span(),
                        Level::Error,
                        format!("each [[{section}]] must be a table"),
                    ));
                    continue;
                };
                if section == "node" {
                    parse_node(&map, t, &item.span(), &mut nodes, &mut diags);
                } else {
                    parse_facility(&map, t, &item.span(), &mut facilities, &mut diags);
                }
            }
        }
        if diags.is_empty() {
            let mut inv = Inventory::new(nodes);
            for f in facilities {
                inv.insert_facility(f);
            }
            Ok(inv)
        } else {
            Err(diags)
        }
    }
}

fn parse_node(
    map: &SourceMap<'_>,
    t: &toml::de::DeTable<'_>,
    span: &std::ops::Range<usize>,
    out: &mut Vec<NodeInfo>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut proto = NodeInfo::default();
    let mut name = None;
    for (k, v) in t.iter() {
        let key = k.get_ref().as_ref();
        let val = v.get_ref();
        let s = || val.as_str().map(str::to_owned);
        let bad = |what: &str| map.diag(&v.span(), Level::Error, format!("`{key}` must be {what}"));
        match key {
            "name" => match s() {
                Some(x) => name = Some((x, v.span())),
                None => diags.push(bad("a string")),
            },
            "rack" | "leaf_switch" | "pdu" | "bmc" | "k8s_node" | "slurm_node" | "driver_version" => {
                let Some(x) = s() else {
                    diags.push(bad("a string"));
                    continue;
                };
                let slot = match key {
                    "rack" => &mut proto.rack,
                    "leaf_switch" => &mut proto.leaf_switch,
                    "pdu" => &mut proto.pdu,
                    "bmc" => &mut proto.bmc,
                    "k8s_node" => &mut proto.k8s_node,
                    "slurm_node" => &mut proto.slurm_node,
                    _ => &mut proto.driver_version,
                };
                *slot = Some(x);
            }
            "gpus" => match val.as_integer().and_then(|i| i.as_str().replace('_', "").parse::<u32>().ok()) {
                Some(n) => proto.gpus = Some(n),
                None => diags.push(bad("a whole number")),
            },
            "labels" => match val.as_table() {
                Some(lt) => parse_labels(map, lt, &mut proto.labels, diags),
                None => diags.push(bad("a table of strings")),
            },
            other => diags.push(map.diag(
                &k.span(),
                Level::Error,
                format!("unknown key `{other}` in [[node]]; expected name, rack, leaf_switch, pdu, bmc, k8s_node, slurm_node, gpus, driver_version, labels"),
            )),
        }
    }
    let Some((pattern, nspan)) = name else {
        diags.push(map.diag(span, Level::Error, "[[node]] needs a `name`".into()));
        return;
    };
    match expand(&pattern) {
        Ok(names) => {
            for (n, num) in names {
                let sub = |o: &Option<String>| o.as_ref().map(|s| s.replace("{n}", &num));
                out.push(NodeInfo {
                    name: n,
                    rack: sub(&proto.rack),
                    leaf_switch: sub(&proto.leaf_switch),
                    pdu: sub(&proto.pdu),
                    bmc: sub(&proto.bmc),
                    k8s_node: sub(&proto.k8s_node),
                    slurm_node: sub(&proto.slurm_node),
                    gpus: proto.gpus,
                    driver_version: sub(&proto.driver_version),
                    labels: proto.labels.clone(),
                });
            }
        }
        Err(msg) => diags.push(map.diag(&nspan, Level::Error, msg)),
    }
}

/// `labels = { k = "v" }` of a `[[node]]` or `[[facility]]`.
fn parse_labels(
    map: &SourceMap<'_>,
    table: &toml::de::DeTable<'_>,
    out: &mut BTreeMap<String, String>,
    diags: &mut Vec<Diagnostic>,
) {
    for (lk, lv) in table.iter() {
        match lv.get_ref().as_str() {
            Some(x) => {
                out.insert(lk.get_ref().to_string(), x.to_owned());
            }
            None => diags.push(map.diag(
                &lv.span(),
                Level::Error,
                "label values must be strings".into(),
            )),
        }
    }
}

fn parse_facility(
    map: &SourceMap<'_>,
    t: &toml::de::DeTable<'_>,
    span: &std::ops::Range<usize>,
    out: &mut Vec<FacilityInfo>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut proto = FacilityInfo::default();
    let mut name = None;
    let mut kind = None;
    for (k, v) in t.iter() {
        let key = k.get_ref().as_ref();
        let val = v.get_ref();
        let bad = |what: &str| map.diag(&v.span(), Level::Error, format!("`{key}` must be {what}"));
        match key {
            "name" => match val.as_str() {
                Some(x) => name = Some((x.to_owned(), v.span())),
                None => diags.push(bad("a string")),
            },
            "kind" => match val.as_str() {
                Some(x @ ("pdu" | "ups" | "cooling" | "leak")) => kind = Some(x.to_owned()),
                _ => diags.push(bad("one of pdu, ups, cooling, leak")),
            },
            "loop" => match val.as_str() {
                Some(x) => proto.cooling_loop = Some(x.to_owned()),
                None => diags.push(bad("a string")),
            },
            "racks" => match val.as_array() {
                Some(a) => {
                    for r in a.iter() {
                        match r.get_ref().as_str() {
                            Some(x) => proto.racks.push(x.to_owned()),
                            None => diags.push(map.diag(&r.span(), Level::Error, "racks must be strings".into())),
                        }
                    }
                }
                None => diags.push(bad("a list of rack names")),
            },
            "labels" => match val.as_table() {
                Some(lt) => parse_labels(map, lt, &mut proto.labels, diags),
                None => diags.push(bad("a table of strings")),
            },
            k if FACILITY_POLLER_KEYS.contains(&k) => {}
            other => diags.push(map.diag(
                &k.span(),
                Level::Error,
                format!(
                    "unknown key `{other}` in [[facility]]; expected name, kind, racks, loop, labels, {}",
                    FACILITY_POLLER_KEYS.join(", ")
                ),
            )),
        }
    }
    let Some((pattern, nspan)) = name else {
        diags.push(map.diag(span, Level::Error, "[[facility]] needs a `name`".into()));
        return;
    };
    let Some(kind) = kind else {
        diags.push(map.diag(
            span,
            Level::Error,
            "[[facility]] needs a `kind` (pdu, ups, cooling, leak)".into(),
        ));
        return;
    };
    match expand(&pattern) {
        Ok(names) => {
            for (n, num) in names {
                out.push(FacilityInfo {
                    name: n,
                    kind: kind.clone(),
                    racks: proto.racks.iter().map(|r| r.replace("{n}", &num)).collect(),
                    cooling_loop: proto.cooling_loop.as_ref().map(|l| l.replace("{n}", &num)),
                    labels: proto.labels.clone(),
                });
            }
        }
        Err(msg) => diags.push(map.diag(&nspan, Level::Error, msg)),
    }
}

pub use pitcrew_config::expand;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_expand_and_substitute() {
        let inv = Inventory::parse(
            "inv.toml",
            "[[node]]\nname = \"n[01-03]\"\nrack = \"r1\"\nbmc = \"10.0.0.{n}:623\"\ngpus = 8\nlabels = { pool = \"a\" }\n",
        )
        .unwrap_or_default();
        assert_eq!(inv.len(), 3);
        let n2 = inv.get("n02").cloned().unwrap_or_default();
        assert_eq!(n2.bmc.as_deref(), Some("10.0.0.02:623"));
        assert_eq!(n2.rack.as_deref(), Some("r1"));
        assert_eq!(n2.labels.get("pool").map(String::as_str), Some("a"));
    }

    #[test]
    fn facility_entries_expand_and_know_their_racks() {
        let inv = Inventory::parse(
            "inv.toml",
            "[poller]\ninterval = \"10s\"\n[[node]]\nname = \"n1\"\nrack = \"r1\"\n[[facility]]\nname = \"pdu-r[1-2]\"\nkind = \"pdu\"\nracks = [\"r{n}\"]\naddress = \"snmp://public@10.0.9.{n}\"\n[[facility]]\nname = \"cdu-1\"\nkind = \"cooling\"\nloop = \"L1\"\nracks = [\"r1\", \"r2\"]\n",
        )
        .unwrap();
        assert_eq!(
            inv.facility("pdu-r2").map(|f| f.racks.clone()),
            Some(vec!["r2".to_owned()])
        );
        let of_r1: Vec<&str> = inv
            .facilities_of_rack("r1")
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(of_r1, ["pdu-r1", "cdu-1"]);
        assert_eq!(
            inv.facility("cdu-1")
                .and_then(|f| f.cooling_loop.clone())
                .as_deref(),
            Some("L1")
        );
        // A partition's share keeps every facility device.
        assert_eq!(inv.filtered(|_| false).facilities().len(), 3);
        let err = Inventory::parse(
            "inv.toml",
            "[[facility]]\nname = \"x\"\nkind = \"fridge\"\n",
        )
        .unwrap_err();
        assert!(err[0].to_string().contains("inv.toml:3:8"), "{}", err[0]);
        assert!(
            err[0]
                .to_string()
                .contains("one of pdu, ups, cooling, leak"),
            "{}",
            err[0]
        );
    }

    #[test]
    fn errors_name_line_and_column() {
        let err = Inventory::parse("inv.toml", "[[node]]\nname = \"n1\"\nrak = \"r1\"\n")
            .err()
            .unwrap_or_default();
        assert_eq!(err.len(), 1);
        assert_eq!((err[0].line, err[0].column), (3, 1));
        assert!(err[0].message.contains("unknown key `rak`"));
        let err = Inventory::parse("inv.toml", "[[node]]\nname = \"n[3-1]\"\n")
            .err()
            .unwrap_or_default();
        assert!(err[0].message.contains("bad range"));
    }
}
