//! Chassis power through the BMC: IPMI v2 RMCP+ (lanplus) with ipmi-rs.
//!
//! ipmi-rs has no chassis commands, so Get Chassis Status (netfn 0x00,
//! cmd 0x01) and Chassis Control (cmd 0x02: 0 off, 1 on, 2 cycle) are sent
//! raw, after raising the session to administrator (Set Session Privilege
//! Level, netfn 0x06 cmd 0x3B): BMCs answer 0xD4 to chassis control at the
//! default operator level. ipmi-rs is blocking, so every call runs on
//! tokio's blocking pool. A cycle of a chassis that is off is refused by
//! real BMCs: the worker reads the status first.
//!
//! The password is a [`Secret`]: no log line, error or argv carries it.

use std::collections::HashMap;
use std::time::Duration;

use ipmi_rs::connection::{
    IpmiConnection, LogicalUnit, Message, NetFn, Request, RequestTargetAddress,
};
use ipmi_rs::rmcp::Rmcp;

use super::page::Secret;
use super::{BoxFuture, ExecError, Power, PowerOp, PowerState};

#[derive(Clone, Debug)]
pub struct Ipmi {
    /// Node name -> `host:port` of its BMC.
    pub addresses: HashMap<String, String>,
    pub username: String,
    pub password: Secret,
    pub timeout: Duration,
}

fn raw(
    rmcp: &mut Rmcp,
    address: &str,
    netfn: NetFn,
    cmd: u8,
    data: Vec<u8>,
    what: &str,
) -> Result<Vec<u8>, ExecError> {
    let mut request = Request::new(
        Message::new_request(netfn, cmd, data),
        RequestTargetAddress::Bmc(LogicalUnit::Zero),
    );
    let response = rmcp
        .send_recv(&mut request)
        .map_err(|e| ExecError::retryable("ipmi", format!("bmc {address}: {what}: {e:?}")))?;
    if response.cc() != 0 {
        return Err(ExecError::retryable(
            "ipmi",
            format!(
                "bmc {address}: {what}: completion code {:#04x}",
                response.cc()
            ),
        ));
    }
    Ok(response.data().to_vec())
}

impl Ipmi {
    fn address(&self, node: &str) -> Result<String, ExecError> {
        self.addresses.get(node).cloned().ok_or_else(|| {
            ExecError::permanent("ipmi", format!("no bmc for {node} in the inventory"))
        })
    }

    /// Opens an administrator session and runs `f` on it, off the async
    /// threads.
    async fn with_session<T: Send + 'static>(
        &self,
        node: &str,
        f: impl FnOnce(&mut Rmcp, &str) -> Result<T, ExecError> + Send + 'static,
    ) -> Result<T, ExecError> {
        let address = self.address(node)?;
        let user = self.username.clone();
        let password = self.password.clone();
        let timeout = self.timeout;
        tokio::task::spawn_blocking(move || {
            let mut rmcp = Rmcp::new(address.as_str(), timeout).map_err(|e| {
                ExecError::retryable("ipmi", format!("bmc {address}: cannot connect: {e}"))
            })?;
            rmcp.activate(true, Some(&user), Some(password.expose().as_bytes()))
                .map_err(|e| {
                    // The error names the step (authentication, no answer),
                    // never the credential.
                    ExecError::retryable(
                        "ipmi",
                        format!(
                            "bmc {address}: cannot open a session: {}",
                            session_error(&format!("{e:?}"))
                        ),
                    )
                })?;
            raw(
                &mut rmcp,
                &address,
                NetFn::App,
                0x3B,
                vec![0x04],
                "set session privilege",
            )?;
            f(&mut rmcp, &address)
        })
        .await
        .map_err(|e| ExecError::permanent("ipmi", format!("bmc task: {e}")))?
    }
}

/// A short, credential-free reason from ipmi-rs's debug text.
fn session_error(debug: &str) -> &'static str {
    let d = debug.to_ascii_lowercase();
    if d.contains("timed out") || d.contains("wouldblock") || d.contains("timeout") {
        "no answer"
    } else if d.contains("auth")
        || d.contains("integrity")
        || d.contains("rakp")
        || d.contains("unauthorized")
        || d.contains("invalid")
    {
        "authentication failed (user or password wrong?)"
    } else {
        "session establishment failed"
    }
}

impl Power for Ipmi {
    fn status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<PowerState, ExecError>> {
        Box::pin(self.with_session(node, |rmcp, address| {
            let data = raw(
                rmcp,
                address,
                NetFn::Chassis,
                0x01,
                Vec::new(),
                "get chassis status",
            )?;
            let first = data.first().ok_or_else(|| {
                ExecError::retryable("ipmi", format!("bmc {address}: empty chassis status"))
            })?;
            Ok(if first & 0x01 == 1 {
                PowerState::On
            } else {
                PowerState::Off
            })
        }))
    }

    fn control<'a>(&'a self, node: &'a str, op: PowerOp) -> BoxFuture<'a, Result<(), ExecError>> {
        let code = match op {
            PowerOp::Off => 0u8,
            PowerOp::On => 1,
            PowerOp::Cycle => 2,
        };
        Box::pin(self.with_session(node, move |rmcp, address| {
            raw(
                rmcp,
                address,
                NetFn::Chassis,
                0x02,
                vec![code],
                "chassis control",
            )
            .map(|_| ())
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_errors_name_no_secret() {
        assert_eq!(session_error("Io(Os { kind: WouldBlock })"), "no answer");
        assert_eq!(
            session_error("RakpMessage2(InvalidIntegrityCheckValue)"),
            "authentication failed (user or password wrong?)"
        );
    }

    #[test]
    fn an_unknown_node_is_a_permanent_error() {
        let ipmi = Ipmi {
            addresses: HashMap::new(),
            username: "admin".into(),
            password: Secret::new("pw"),
            timeout: Duration::from_secs(1),
        };
        let err = ipmi.address("n9").unwrap_err();
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("no bmc for n9"));
    }
}
