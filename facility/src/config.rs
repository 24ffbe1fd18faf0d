//! The poller's configuration: `[poller]` defaults and `[[facility]]`
//! devices, from a TOML file with `PITCREW__POLLER__<KEY>` overrides. The
//! same `[[facility]]` entries may sit in the rules stage's inventory file
//! (it reads their name, kind, racks and loop); one file can serve both.
//!
//! ```toml
//! [poller]
//! interval = "10s"        # per-device default; a device may set its own
//! timeout = "2s"          # one request's
//! retries = 1
//! max_backoff = "5m"      # a failing device is polled less often, up to this
//! profiles = ["/etc/pitcrew/profiles"]   # more SNMP profiles and Modbus maps
//!
//! [[facility]]
//! name = "pdu-r[1-4]"
//! kind = "pdu"
//! racks = ["r{n}"]
//! address = "snmp://10.0.9.{n}"          # community from `credentials`
//! credentials = "/etc/pitcrew/snmp.toml" # community, or v3 auth/priv keys
//! ```
//!
//! Secrets (communities, SNMPv3 keys, Redfish passwords) come from the
//! credentials file or the variables it names, never from argv; a
//! community written into an address is accepted for `probe` but never
//! logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pitcrew_config::Secret;
use serde::Deserialize;

use crate::error::FacilityError;
use crate::profile::DeviceKind;

/// The file as written.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct FacilityFile {
    #[serde(default)]
    pub poller: PollerSection,
    #[serde(default)]
    pub facility: Vec<DeviceSection>,
    /// Nodes, when the file is also the inventory: ignored here.
    #[serde(default)]
    pub node: Vec<toml::Value>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PollerSection {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub retries: Option<u32>,
    pub max_backoff: Option<String>,
    /// Folders of extra profile (`*.toml`) files.
    #[serde(default)]
    pub profiles: Vec<PathBuf>,
    /// How many devices are polled at once.
    pub concurrency: Option<usize>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceSection {
    pub name: String,
    pub kind: DeviceKind,
    #[serde(default)]
    pub racks: Vec<String>,
    #[serde(default, rename = "loop")]
    pub cooling_loop: Option<String>,
    pub address: Option<String>,
    pub profile: Option<String>,
    /// A Modbus register map's name.
    pub map: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub max_backoff: Option<String>,
    pub credentials: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The poller's settings, resolved.
#[derive(Clone, Debug)]
pub struct PollerSettings {
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub max_backoff: Duration,
    pub profiles: Vec<PathBuf>,
    pub concurrency: usize,
}

impl Default for PollerSettings {
    fn default() -> Self {
        PollerSettings {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            retries: 1,
            max_backoff: Duration::from_secs(300),
            profiles: Vec::new(),
            concurrency: 256,
        }
    }
}

/// How to reach a device.
#[derive(Clone, Debug, PartialEq)]
pub enum Address {
    Snmp {
        host: String,
        port: u16,
        /// From the address (probe) or the credentials.
        community: Option<Secret>,
    },
    SnmpV3 {
        host: String,
        port: u16,
        user: String,
        auth: String,
        privacy: Option<String>,
        /// The SNMPv3 context (agents serving several devices, proxies).
        context: Option<String>,
    },
    Modbus {
        host: String,
        port: u16,
        unit: u8,
        map: Option<String>,
    },
    Redfish {
        /// `https://host[:port]` (or `http://` for `redfish+http://`).
        base: String,
    },
}

impl Address {
    pub fn protocol(&self) -> pitcrew_contract::FacilityProtocol {
        use pitcrew_contract::FacilityProtocol as P;
        match self {
            Address::Snmp { .. } | Address::SnmpV3 { .. } => P::Snmp,
            Address::Modbus { .. } => P::Modbus,
            Address::Redfish { .. } => P::Redfish,
        }
    }

    /// Where it is, without any secret: for logs and errors.
    pub fn display(&self) -> String {
        match self {
            Address::Snmp { host, port, .. } => format!("snmp://{host}:{port}"),
            Address::SnmpV3 {
                host, port, user, ..
            } => format!("snmpv3://{user}@{host}:{port}"),
            Address::Modbus {
                host, port, unit, ..
            } => format!("modbus://{host}:{port}?unit={unit}"),
            Address::Redfish { base } => base.clone(),
        }
    }

    /// Parses `snmp://[COMMUNITY@]host[:161]`,
    /// `snmpv3://user@host[:161][?auth=sha256&priv=aes&context=NAME]`,
    /// `modbus://host[:502][?unit=1&map=NAME]`, `redfish://host[:443]` or
    /// `redfish+http://host:port`.
    pub fn parse(s: &str) -> Result<Address, String> {
        let (scheme, rest) = s.split_once("://").ok_or_else(|| {
            format!(
                "`{}`: an address starts with snmp://, snmpv3://, modbus:// or redfish://",
                shown(s)
            )
        })?;
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, q),
            None => (rest, ""),
        };
        let authority = authority.trim_end_matches('/');
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let params: BTreeMap<&str, &str> = query
            .split('&')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .collect();
        let host_port = |default: u16| -> Result<(String, u16), String> {
            let (h, p) = if let Some(rest) = hostport.strip_prefix('[') {
                // [v6]:port
                let (h, after) = rest
                    .split_once(']')
                    .ok_or_else(|| format!("`{}`: unclosed `[`", shown(s)))?;
                (h, after.strip_prefix(':'))
            } else if hostport.matches(':').count() == 1 {
                let (h, p) = hostport.split_once(':').unwrap_or((hostport, ""));
                (h, Some(p))
            } else {
                // A bare name, IPv4, or an IPv6 literal without a port.
                (hostport, None)
            };
            if h.is_empty() {
                return Err(format!("`{}`: no host", shown(s)));
            }
            let port = match p {
                Some(p) => p
                    .parse()
                    .map_err(|_| format!("`{}`: bad port `{p}`", shown(s)))?,
                None => default,
            };
            Ok((h.to_owned(), port))
        };
        match scheme {
            "snmp" => {
                let (host, port) = host_port(161)?;
                Ok(Address::Snmp {
                    host,
                    port,
                    community: userinfo.map(Secret::new),
                })
            }
            "snmpv3" => {
                let (host, port) = host_port(161)?;
                let user = userinfo.filter(|u| !u.is_empty()).ok_or_else(|| {
                    format!("`{}`: snmpv3:// needs a user: snmpv3://user@host", shown(s))
                })?;
                if user.contains(':') {
                    return Err("snmpv3:// takes no key in the address: give auth/priv keys in the credentials file".into());
                }
                Ok(Address::SnmpV3 {
                    host,
                    port,
                    user: user.to_owned(),
                    auth: params.get("auth").copied().unwrap_or("sha").to_owned(),
                    privacy: match params.get("priv").copied() {
                        Some("none") => None,
                        Some(p) => Some(p.to_owned()),
                        None => Some("aes".to_owned()),
                    },
                    context: params.get("context").map(|c| (*c).to_owned()),
                })
            }
            "modbus" | "modbus+tcp" => {
                let (host, port) = host_port(502)?;
                let unit = match params.get("unit") {
                    Some(u) => u
                        .parse()
                        .map_err(|_| format!("`{}`: unit must be 0-255", shown(s)))?,
                    None => 1,
                };
                Ok(Address::Modbus {
                    host,
                    port,
                    unit,
                    map: params.get("map").map(|m| (*m).to_owned()),
                })
            }
            "redfish" | "redfish+https" | "redfish+http" => {
                let tls = scheme != "redfish+http";
                let (host, port) = host_port(if tls { 443 } else { 80 })?;
                Ok(Address::Redfish {
                    base: format!("{}://{host}:{port}", if tls { "https" } else { "http" }),
                })
            }
            other => Err(format!(
                "unknown scheme `{other}`: use snmp://, snmpv3://, modbus:// or redfish://"
            )),
        }
    }
}

/// An address with any community in it replaced, for messages.
fn shown(s: &str) -> String {
    match (s.split_once("://"), s.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***{}", &s[at..]),
        _ => s.to_owned(),
    }
}

/// Credentials of a device, from its `credentials` file:
///
/// ```toml
/// community = "..."            # SNMP v2c
/// auth_key = "..."             # SNMPv3, or auth_key_env = "VAR"
/// priv_key = "..."             # or priv_key_env = "VAR"
/// username = "..."             # Redfish
/// password = "..."             # or password_env = "VAR"
/// ```
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub community: Option<Secret>,
    pub auth_key: Option<Secret>,
    pub priv_key: Option<Secret>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsFile {
    community: Option<String>,
    community_env: Option<String>,
    auth_key: Option<String>,
    auth_key_env: Option<String>,
    priv_key: Option<String>,
    priv_key_env: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_env: Option<String>,
}

impl Credentials {
    /// Reads a credentials file; values given as `*_env` come from those
    /// variables. Errors name the file and the key, never a value.
    pub fn load(path: &Path) -> Result<Credentials, FacilityError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FacilityError::Config {
            message: format!("{origin}: {e}"),
        })?;
        let f: CredentialsFile = toml::from_str(&text).map_err(|e| FacilityError::Config {
            message: pitcrew_config::ConfigError::from_toml(&origin, &text, &e).to_string(),
        })?;
        let pick = |name: &str,
                    value: Option<String>,
                    env: Option<String>|
         -> Result<Option<Secret>, FacilityError> {
            match (value, env) {
                (Some(v), _) => Ok(Some(Secret::new(v))),
                (None, Some(var)) => {
                    Secret::from_env(name, &var)
                        .map(Some)
                        .map_err(|e| FacilityError::Config {
                            message: format!("{origin}: {e}"),
                        })
                }
                (None, None) => Ok(None),
            }
        };
        Ok(Credentials {
            community: pick("community", f.community, f.community_env)?,
            auth_key: pick("auth_key", f.auth_key, f.auth_key_env)?,
            priv_key: pick("priv_key", f.priv_key, f.priv_key_env)?,
            username: f.username,
            password: pick("password", f.password, f.password_env)?,
        })
    }

    /// For `probe`: from `PITCREW_FACILITY_COMMUNITY`,
    /// `PITCREW_FACILITY_AUTH_KEY`, `PITCREW_FACILITY_PRIV_KEY`,
    /// `PITCREW_FACILITY_USERNAME`, `PITCREW_FACILITY_PASSWORD`.
    pub fn from_env() -> Credentials {
        let get = |v: &str| std::env::var(v).ok().filter(|s| !s.is_empty());
        Credentials {
            community: get("PITCREW_FACILITY_COMMUNITY").map(Secret::new),
            auth_key: get("PITCREW_FACILITY_AUTH_KEY").map(Secret::new),
            priv_key: get("PITCREW_FACILITY_PRIV_KEY").map(Secret::new),
            username: get("PITCREW_FACILITY_USERNAME"),
            password: get("PITCREW_FACILITY_PASSWORD").map(Secret::new),
        }
    }
}

/// One device, resolved.
#[derive(Clone, Debug)]
pub struct Device {
    pub name: String,
    pub kind: DeviceKind,
    pub racks: Vec<String>,
    pub cooling_loop: Option<String>,
    pub address: Address,
    pub profile: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub max_backoff: Duration,
    pub credentials: Credentials,
    pub labels: BTreeMap<String, String>,
}

impl Device {
    /// A device with the poller's default settings, no racks, loop,
    /// profile, credentials or labels.
    pub fn new(name: &str, kind: DeviceKind, address: Address) -> Device {
        let d = PollerSettings::default();
        Device {
            name: name.to_owned(),
            kind,
            racks: Vec::new(),
            cooling_loop: None,
            address,
            profile: None,
            interval: d.interval,
            timeout: d.timeout,
            retries: d.retries,
            max_backoff: d.max_backoff,
            credentials: Credentials::default(),
            labels: BTreeMap::new(),
        }
    }
}

/// The whole configuration, resolved.
#[derive(Clone, Debug, Default)]
pub struct FacilityConfig {
    pub settings: PollerSettings,
    pub devices: Vec<Device>,
}

fn dur(what: &str, v: &Option<String>, default: Duration) -> Result<Duration, FacilityError> {
    match v {
        Some(s) => pitcrew_config::duration(s).map_err(|e| FacilityError::Config {
            message: format!("{what}: {e}"),
        }),
        None => Ok(default),
    }
}

impl FacilityConfig {
    /// Parses the file's text (with `PITCREW__POLLER__*` overrides from
    /// `env`); `origin` names it in errors.
    pub fn parse(
        origin: &str,
        text: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<FacilityConfig, FacilityError> {
        let file: FacilityFile = pitcrew_config::layered(text, origin, &["poller"], env.clone())
            .map_err(|e| FacilityError::Config {
                message: e.to_string(),
            })?;
        let d = PollerSettings::default();
        let settings = PollerSettings {
            interval: dur("poller.interval", &file.poller.interval, d.interval)?,
            timeout: dur("poller.timeout", &file.poller.timeout, d.timeout)?,
            retries: file.poller.retries.unwrap_or(d.retries),
            max_backoff: dur(
                "poller.max_backoff",
                &file.poller.max_backoff,
                d.max_backoff,
            )?,
            profiles: file.poller.profiles.clone(),
            concurrency: file.poller.concurrency.unwrap_or(d.concurrency).max(1),
        };
        let mut devices = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for sec in &file.facility {
            let names = pitcrew_config::expand(&sec.name).map_err(|m| FacilityError::Config {
                message: format!("{origin}: [[facility]] {m}"),
            })?;
            for (name, num) in names {
                let sub = |s: &str| s.replace("{n}", &num);
                let what = format!("{origin}: [[facility]] {name}");
                let Some(address) = &sec.address else {
                    // An inventory-only entry (a device another poller reads).
                    continue;
                };
                let address = Address::parse(&sub(address)).map_err(|m| FacilityError::Config {
                    message: format!("{what}: {m}"),
                })?;
                let credentials = match &sec.credentials {
                    Some(p) => Credentials::load(p)?,
                    None => Credentials::default(),
                };
                if !seen.insert(name.clone()) {
                    return Err(FacilityError::Config {
                        message: format!("{what}: the name is used twice"),
                    });
                }
                devices.push(Device {
                    racks: sec.racks.iter().map(|r| sub(r)).collect(),
                    cooling_loop: sec.cooling_loop.as_deref().map(sub),
                    kind: sec.kind,
                    address,
                    profile: sec.profile.clone().or_else(|| sec.map.clone()),
                    interval: dur(
                        &format!("{what}: interval"),
                        &sec.interval,
                        settings.interval,
                    )?,
                    timeout: dur(&format!("{what}: timeout"), &sec.timeout, settings.timeout)?,
                    retries: settings.retries,
                    max_backoff: dur(
                        &format!("{what}: max_backoff"),
                        &sec.max_backoff,
                        settings.max_backoff,
                    )?,
                    credentials,
                    labels: sec.labels.clone(),
                    name,
                });
            }
        }
        Ok(FacilityConfig { settings, devices })
    }

    /// Reads the file at `path` with the process environment's overrides.
    pub fn load(path: &Path) -> Result<FacilityConfig, FacilityError> {
        let (text, origin) =
            pitcrew_config::read(Some(path)).map_err(|e| FacilityError::Config {
                message: e.to_string(),
            })?;
        let env: BTreeMap<String, String> = std::env::vars().collect();
        FacilityConfig::parse(&origin, &text, &env)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn addresses_name_their_protocol_and_never_show_a_community() {
        match Address::parse("snmp://s3cret@10.0.0.5").unwrap() {
            Address::Snmp {
                host,
                port,
                community,
            } => {
                assert_eq!((host.as_str(), port), ("10.0.0.5", 161));
                assert_eq!(
                    community.map(|c| c.expose().to_owned()).as_deref(),
                    Some("s3cret")
                );
            }
            other => panic!("{other:?}"),
        }
        let a = Address::parse("snmp://s3cret@10.0.0.5:1161").unwrap();
        assert_eq!(a.display(), "snmp://10.0.0.5:1161");
        assert!(!format!("{a:?}").contains("s3cret"));
        let e = Address::parse("snmpx://s3cret@h").unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(matches!(
            Address::parse("modbus://cdu-1?unit=3&map=cdu-generic").unwrap(),
            Address::Modbus {
                port: 502,
                unit: 3,
                ..
            }
        ));
        assert_eq!(
            Address::parse("redfish+http://127.0.0.1:8000").unwrap(),
            Address::Redfish {
                base: "http://127.0.0.1:8000".into()
            }
        );
        assert!(Address::parse("snmpv3://user:key@h").is_err());
        match Address::parse("snmpv3://ops@pdu-1?auth=sha256&priv=aes256").unwrap() {
            Address::SnmpV3 {
                user,
                auth,
                privacy,
                ..
            } => {
                assert_eq!(
                    (user.as_str(), auth.as_str(), privacy.as_deref()),
                    ("ops", "sha256", Some("aes256"))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    proptest::proptest! {
        /// Any text is an address or a clear error, and an error never
        /// repeats what stood before an `@` (a community).
        #[test]
        fn any_address_parses_or_errs_without_its_secret(secret in "[a-z]{12}", rest in ".{0,40}") {
            let text = format!("snmp://{secret}@{rest}");
            if let Err(e) = Address::parse(&text) {
                proptest::prop_assert!(!e.contains(&secret), "{}", e);
            }
            let _ = Address::parse(&rest);
        }
    }

    #[test]
    fn a_file_loads_and_its_errors_name_it() {
        let dir = std::env::temp_dir().join(format!("pitcrew-fac-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("facility.toml");
        std::fs::write(
            &path,
            "[[facility]]\nname = \"p\"\nkind = \"pdu\"\naddress = \"snmp://h\"\n",
        )
        .unwrap();
        assert_eq!(FacilityConfig::load(&path).unwrap().devices[0].name, "p");
        std::fs::write(&path, "[[facility]]\nname = 3\n").unwrap();
        let e = FacilityConfig::load(&path).unwrap_err().to_string();
        assert!(e.starts_with(&format!("{}:2:", path.display())), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn devices_expand_with_defaults_and_overrides() {
        let text = "[poller]\ninterval = \"10s\"\n[[node]]\nname = \"n1\"\n[[facility]]\nname = \"pdu-r[1-3]\"\nkind = \"pdu\"\nracks = [\"r{n}\"]\naddress = \"snmp://public@10.0.9.{n}\"\n[[facility]]\nname = \"cdu-1\"\nkind = \"cooling\"\nloop = \"L1\"\naddress = \"modbus://10.0.8.1\"\nmap = \"cdu-generic\"\ninterval = \"5s\"\n[[facility]]\nname = \"ups-remote\"\nkind = \"ups\"\n";
        let mut env = BTreeMap::new();
        env.insert("PITCREW__POLLER__TIMEOUT".to_owned(), "750ms".to_owned());
        let c = FacilityConfig::parse("f.toml", text, &env).unwrap();
        assert_eq!(c.devices.len(), 4);
        assert_eq!(c.devices[2].racks, ["r3"]);
        assert_eq!(c.devices[2].address.display(), "snmp://10.0.9.3:161");
        assert_eq!(c.devices[3].interval, Duration::from_secs(5));
        assert_eq!(c.devices[0].timeout, Duration::from_millis(750));
        assert_eq!(c.devices[3].profile.as_deref(), Some("cdu-generic"));
        let e = FacilityConfig::parse(
            "f.toml",
            "[[facility]]\nname = \"x\"\nkind = \"pdu\"\nadress = \"snmp://h\"\n",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("f.toml:4:1"), "{e}");
    }
}
