//! SNMP v2c and v3 (USM authNoPriv/authPriv) on the `async-snmp` crate:
//! GETBULK walks of a profile's tables and GETs of its scalars.
//!
//! Why async-snmp: of the maintained Rust SNMP clients it is the one with
//! tokio-native async, GETBULK walk streams, SNMPv3 with SHA-2 and AES-256
//! (RFC 7860, the Blumenthal/Reeder key extensions) and per-request
//! timeouts and retries. `snmp2` is synchronous at heart and its v3 needs
//! OpenSSL's legacy ciphers; `csnmp` has no v3 at all.

use std::time::Duration;

use async_snmp::{Auth, Client, Oid as SnmpOid, Retry, Value};

use crate::config::{Address, Credentials};
use crate::error::FacilityError;
use crate::profile::{oid_string, Oid, Raw, Walk};

const SYS_OBJECT_ID: [u32; 9] = [1, 3, 6, 1, 2, 1, 1, 2, 0];

/// A connected SNMP session to one device.
pub struct Session {
    client: Client,
    device: String,
    timeout: Duration,
    max_repetitions: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

fn auth_protocol(s: &str) -> Option<async_snmp::AuthProtocol> {
    use async_snmp::AuthProtocol as A;
    Some(match s.to_ascii_lowercase().as_str() {
        "md5" => A::Md5,
        "sha" | "sha1" => A::Sha1,
        "sha224" => A::Sha224,
        "sha256" => A::Sha256,
        "sha384" => A::Sha384,
        "sha512" => A::Sha512,
        _ => return None,
    })
}

fn priv_protocol(s: &str) -> Option<async_snmp::PrivProtocol> {
    use async_snmp::PrivProtocol as P;
    Some(match s.to_ascii_lowercase().as_str() {
        "des" => P::Des,
        "aes" | "aes128" => P::Aes128,
        "aes192" => P::Aes192Blumenthal,
        "aes256" => P::Aes256Blumenthal,
        "aes192c" => P::Aes192Reeder,
        "aes256c" => P::Aes256Reeder,
        _ => return None,
    })
}

/// The crate's error as ours, naming the device and what was asked; the
/// crate redacts communities and keys, and we only pass its kind and text.
fn convert(device: &str, at: &str, timeout: Duration, e: &async_snmp::Error) -> FacilityError {
    use async_snmp::ErrorKind as K;
    match e.kind() {
        K::Timeout | K::ConstructionTimeout => FacilityError::Timeout {
            device: device.to_owned(),
            protocol: "snmp",
            after_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        },
        K::Network | K::Closed => FacilityError::Unreachable {
            device: device.to_owned(),
            protocol: "snmp",
            detail: e.to_string(),
        },
        K::Auth | K::Report | K::Privacy => FacilityError::Auth {
            device: device.to_owned(),
            protocol: "snmp",
            detail: format!(
                "{} (check the user, protocols and keys in the credentials file)",
                e.kind().as_str()
            ),
        },
        _ => FacilityError::Protocol {
            device: device.to_owned(),
            protocol: "snmp",
            at: at.to_owned(),
            detail: e.to_string(),
        },
    }
}

fn raw(v: &Value) -> Option<Raw> {
    Some(match v {
        Value::Integer(i) => Raw::Int(i64::from(*i)),
        Value::Counter32(u) => Raw::Counter32(u64::from(*u)),
        Value::Gauge32(u) | Value::UInteger32(u) | Value::TimeTicks(u) => Raw::Int(i64::from(*u)),
        Value::Counter64(u) => Raw::Counter64(*u),
        Value::OctetString(b) => {
            Raw::Str(String::from_utf8_lossy(b).trim_end_matches('\0').to_owned())
        }
        Value::ObjectIdentifier(o) => Raw::Oid(oid_string(o.arcs())),
        Value::NoSuchObject => Raw::NoSuch("noSuchObject"),
        Value::NoSuchInstance => Raw::NoSuch("noSuchInstance"),
        Value::EndOfMibView => Raw::NoSuch("endOfMibView"),
        _ => return None,
    })
}

impl Session {
    /// Opens a session (v2c: nothing is sent yet; v3: the engine is
    /// discovered on the first request).
    pub async fn open(
        device: &str,
        address: &Address,
        credentials: &Credentials,
        timeout: Duration,
        retries: u32,
    ) -> Result<Session, FacilityError> {
        let config_err = |m: String| FacilityError::Config {
            message: format!("{device}: {m}"),
        };
        let (host, port, auth) = match address {
            Address::Snmp {
                host,
                port,
                community,
            } => {
                let community = community
                    .as_ref()
                    .or(credentials.community.as_ref())
                    .map(|c| c.expose().to_owned())
                    .unwrap_or_else(|| "public".to_owned());
                (host, *port, Auth::v2c(community))
            }
            Address::SnmpV3 {
                host,
                port,
                user,
                auth,
                privacy,
                context,
            } => {
                let ap = auth_protocol(auth).ok_or_else(|| config_err(format!("unknown auth protocol `{auth}`; use md5, sha, sha224, sha256, sha384, sha512")))?;
                let key = credentials.auth_key.as_ref().ok_or_else(|| {
                    config_err("snmpv3 needs auth_key in the credentials file".into())
                })?;
                let mut usm = async_snmp::UsmConfig::new(bytes_of(user));
                if let Some(c) = context {
                    usm = usm.context_name(bytes_of(c));
                }
                let usm = match privacy {
                    Some(p) => {
                        let pp = priv_protocol(p).ok_or_else(|| {
                            config_err(format!(
                                "unknown privacy protocol `{p}`; use des, aes, aes192, aes256"
                            ))
                        })?;
                        let pkey = credentials.priv_key.as_ref().ok_or_else(|| {
                            config_err(
                                "snmpv3 with privacy needs priv_key in the credentials file".into(),
                            )
                        })?;
                        usm.auth_priv(ap, key.expose(), pp, pkey.expose())
                    }
                    None => usm.auth(ap, key.expose()),
                }
                .map_err(|e| config_err(format!("snmpv3 credentials refused: {e}")))?;
                (host, *port, Auth::from(usm))
            }
            other => {
                return Err(config_err(format!(
                    "not an SNMP address: {}",
                    other.display()
                )))
            }
        };
        let retry = Retry::fixed(retries, Duration::ZERO).unwrap_or_else(|_| Retry::none());
        let client = Client::builder((host.as_str(), port), auth)
            .request_timeout(timeout)
            .retry(retry)
            .connect()
            .await
            .map_err(|e| convert(device, "connect", timeout, &e))?;
        Ok(Session {
            client,
            device: device.to_owned(),
            timeout,
            max_repetitions: 25,
        })
    }

    /// The device's sysObjectID, for profile detection.
    pub async fn sys_object_id(&self) -> Result<String, FacilityError> {
        let w = self.get(&[SYS_OBJECT_ID.to_vec()]).await?;
        match w.values().next() {
            Some(Raw::Oid(o)) => Ok(o.clone()),
            other => Err(FacilityError::Protocol {
                device: self.device.clone(),
                protocol: "snmp",
                at: oid_string(&SYS_OBJECT_ID),
                detail: format!("sysObjectID is not an OID: {other:?}"),
            }),
        }
    }

    /// GETs scalars (in chunks the crate sizes); each varbind lands in the
    /// walk, noSuchObject included.
    pub async fn get(&self, oids: &[Oid]) -> Result<Walk, FacilityError> {
        let mut walk = Walk::new();
        if oids.is_empty() {
            return Ok(walk);
        }
        let wanted: Vec<SnmpOid> = oids.iter().map(|o| SnmpOid::from_slice(o)).collect();
        let at = oids.first().map(|o| oid_string(o)).unwrap_or_default();
        let resp = self
            .client
            .get_many(&wanted)
            .await
            .map_err(|e| convert(&self.device, &at, self.timeout, &e))?;
        for vb in resp.varbinds {
            if let Some(r) = raw(&vb.value) {
                walk.insert(vb.oid.arcs().to_vec(), r);
            }
        }
        Ok(walk)
    }

    /// GETBULK-walks a subtree into `walk`.
    pub async fn walk_into(&self, root: &[u32], walk: &mut Walk) -> Result<usize, FacilityError> {
        let at = oid_string(root);
        let vbs = self
            .client
            .bulk_walk(SnmpOid::from_slice(root), self.max_repetitions)
            .map_err(|e| convert(&self.device, &at, self.timeout, &e))?
            .collect()
            .await
            .map_err(|e| convert(&self.device, &at, self.timeout, &e))?;
        let n = vbs.len();
        for vb in vbs {
            if let Some(r) = raw(&vb.value) {
                walk.insert(vb.oid.arcs().to_vec(), r);
            }
        }
        Ok(n)
    }

    /// Whether the device answers an OID with a value.
    pub async fn answers(&self, oid: &[u32]) -> bool {
        matches!(
            self.get(&[oid.to_vec()]).await.map(|w| w.into_values().next()),
            Ok(Some(r)) if !matches!(r, Raw::NoSuch(_))
        )
    }
}

/// After an SNMPv3 request went unanswered: does the agent answer an
/// unauthenticated request from the same user (with a Report, as RFC 3414
/// agents do)? Then it is up and our keys or protocols are wrong: agents
/// drop a request whose digest does not verify, so the poll itself only
/// sees silence.
pub async fn v3_agent_answers(host: &str, port: u16, user: &str, timeout: Duration) -> bool {
    let Ok(client) = Client::builder((host, port), Auth::usm(user))
        .request_timeout(timeout)
        .retry(Retry::none())
        .connect()
        .await
    else {
        return false;
    };
    match client.get(&SnmpOid::from_slice(&SYS_OBJECT_ID)).await {
        Ok(_) => true,
        Err(e) => !matches!(
            e.kind(),
            async_snmp::ErrorKind::Timeout
                | async_snmp::ErrorKind::ConstructionTimeout
                | async_snmp::ErrorKind::Network
        ),
    }
}

fn bytes_of(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}
