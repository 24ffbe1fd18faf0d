//! Paging: PagerDuty Events v2, Slack, and a generic webhook that speaks
//! the Alertmanager v4 payload so existing receivers work.
//!
//! Every request can carry an HMAC-SHA256 signature over
//! `<timestamp>.<body>` (`X-Pitcrew-Signature: sha256=<hex>`,
//! `X-Pitcrew-Timestamp: <unix seconds>`), so a receiver can check where a
//! page came from and refuse replays. 429 and 5xx are retried with
//! exponential backoff, honouring `Retry-After`; other 4xx are permanent.
//! Keys, routing keys and Slack URLs are [`Secret`]s: their Debug is
//! redacted and no error message contains them.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;
use pitcrew_contract::Timestamp;
use pitcrew_observe::InternalEvent as _;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde_json::json;

use super::http::HttpClient;
use super::ExecError;

/// A credential read from a file or the environment. Never printed.
pub use pitcrew_config::Secret;

/// What kind of receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverKind {
    /// `url` defaults to `https://events.pagerduty.com/v2/enqueue`.
    PagerDuty { routing_key: Secret },
    /// The incoming-webhook URL is the secret.
    Slack,
    /// Alertmanager v4 webhook payload.
    Webhook,
}

/// One configured receiver.
#[derive(Clone, Debug)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    pub url: Secret,
    pub hmac_key: Option<Secret>,
    /// Teams this receiver pages for; empty: every page.
    pub teams: Vec<String>,
    /// Receives RMA tickets.
    pub rma: bool,
}

impl Receiver {
    pub fn kind_label(&self) -> &'static str {
        match self.kind {
            ReceiverKind::PagerDuty { .. } => "pagerduty",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Webhook => "webhook",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSeverity {
    Info,
    Warning,
    Critical,
}

impl PageSeverity {
    pub const fn as_str(self) -> &'static str {
        match self {
            PageSeverity::Info => "info",
            PageSeverity::Warning => "warning",
            PageSeverity::Critical => "critical",
        }
    }
}

/// One page: a trigger or its resolve share the dedup key.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub dedup_key: String,
    pub summary: String,
    pub severity: PageSeverity,
    /// `node/n17`, `fleet/breaker`...
    pub target: String,
    pub incident: Option<String>,
    pub action: Option<String>,
    pub started_at: Timestamp,
    /// Extra context, shown as details / annotations.
    pub details: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageEvent {
    Trigger,
    Resolve,
}

/// Retry policy for one delivery.
#[derive(Clone, Debug)]
pub struct Retry {
    pub attempts: u32,
    pub base: Duration,
    pub max_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 6,
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// The receivers and how to reach them.
#[derive(Default)]
pub struct Paging {
    receivers: Vec<Receiver>,
    client: Option<HttpClient>,
    retry: Retry,
    /// Who sends: `pitcrew@host`, in payloads.
    source: String,
    sent: Option<Family<PageLabels, Counter>>,
}

/// Labels of `pitcrew_remediate_pages_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct PageLabels {
    pub receiver: String,
    pub event: String,
    pub outcome: String,
}

impl fmt::Debug for Paging {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.receivers.iter().map(|r| r.name.as_str()).collect();
        f.debug_struct("Paging").field("receivers", &names).finish()
    }
}

impl Paging {
    pub fn new(receivers: Vec<Receiver>, retry: Retry, source: String) -> Result<Paging, String> {
        let client = HttpClient::new(Duration::from_secs(10))?;
        Ok(Paging {
            receivers,
            client: Some(client),
            retry,
            source,
            sent: None,
        })
    }

    /// Counts deliveries in `pitcrew_remediate_pages_total`.
    pub fn with_metrics(mut self, family: Family<PageLabels, Counter>) -> Paging {
        self.sent = Some(family);
        self
    }

    pub fn receivers(&self) -> &[Receiver] {
        &self.receivers
    }

    /// The receivers for a team (`None`: all), or the RMA receivers.
    pub fn route(&self, team: Option<&str>, rma: bool) -> Vec<String> {
        let pick: Vec<&Receiver> = if rma {
            let r: Vec<&Receiver> = self.receivers.iter().filter(|r| r.rma).collect();
            if r.is_empty() {
                self.receivers.iter().collect()
            } else {
                r
            }
        } else {
            self.receivers
                .iter()
                .filter(|r| match team {
                    Some(t) => r.teams.is_empty() || r.teams.iter().any(|x| x == t),
                    None => true,
                })
                .collect()
        };
        pick.into_iter().map(|r| r.name.clone()).collect()
    }

    /// Sends to the named receivers; every one is tried. Returns the first
    /// error after trying all.
    pub async fn send(
        &self,
        receivers: &[String],
        page: &Page,
        event: PageEvent,
    ) -> Result<(), ExecError> {
        let mut first_err = None;
        for name in receivers {
            let Some(r) = self.receivers.iter().find(|r| &r.name == name) else {
                continue;
            };
            let result = self.deliver(r, page, event).await;
            let delivery = PageDelivery {
                receiver: r,
                dedup_key: &page.dedup_key,
                event,
                error: result.as_ref().err(),
            };
            match &self.sent {
                Some(sent) => delivery.emit(sent),
                None => delivery.log(),
            }
            if let Err(e) = result {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn deliver(&self, r: &Receiver, page: &Page, event: PageEvent) -> Result<(), ExecError> {
        let Some(client) = &self.client else {
            return Err(ExecError::NotConfigured { system: "paging" });
        };
        let body = serde_json::to_vec(&payload(r, page, event, &self.source))
            .map_err(|e| ExecError::permanent("paging", e.to_string()))?;
        let mut delay = self.retry.base;
        let mut last = String::new();
        for attempt in 1..=self.retry.attempts.max(1) {
            let mut headers = Vec::new();
            if let Some(key) = &r.hmac_key {
                let ts = Timestamp::now().unix_millis() / 1000;
                let sig = sign(key, ts, &body)
                    .map_err(|e| ExecError::permanent("paging", format!("hmac: {e}")))?;
                headers.push(("x-pitcrew-timestamp", ts.to_string()));
                headers.push(("x-pitcrew-signature", format!("sha256={sig}")));
            }
            let wait = match client
                .post_json(r.url.expose(), &headers, body.clone())
                .await
            {
                Ok(resp) if (200..300).contains(&resp.status) => return Ok(()),
                Ok(resp) if resp.status == 429 || resp.status >= 500 => {
                    last = format!("{} answered {}", r.name, resp.status);
                    resp.retry_after.unwrap_or(delay)
                }
                Ok(resp) => {
                    return Err(ExecError::permanent(
                        "paging",
                        format!(
                            "{} refused the page: {} {}",
                            r.name,
                            resp.status,
                            resp.body.chars().take(200).collect::<String>()
                        ),
                    ))
                }
                Err(e) => {
                    last = format!("{}: {e}", r.name);
                    delay
                }
            };
            if attempt < self.retry.attempts {
                tracing::debug!(receiver = %r.name, attempt, wait_ms = wait.as_millis() as u64, "page retry");
                tokio::time::sleep(wait.min(self.retry.max_delay)).await;
                delay = (delay * 2).min(self.retry.max_delay);
            }
        }
        Err(ExecError::retryable(
            "paging",
            format!("{last} after {} attempts", self.retry.attempts),
        ))
    }
}

/// Hex HMAC-SHA256 of `<ts>.<body>`.
pub fn sign(key: &Secret, ts: i64, body: &[u8]) -> Result<String, openssl::error::ErrorStack> {
    let pkey = PKey::hmac(key.expose().as_bytes())?;
    let mut signer = Signer::new(MessageDigest::sha256(), &pkey)?;
    signer.update(ts.to_string().as_bytes())?;
    signer.update(b".")?;
    signer.update(body)?;
    let mac = signer.sign_to_vec()?;
    Ok(mac.iter().map(|b| format!("{b:02x}")).collect())
}

fn rfc3339(t: Timestamp) -> String {
    t.to_string()
}

/// The body each receiver kind expects.
pub fn payload(r: &Receiver, page: &Page, event: PageEvent, source: &str) -> serde_json::Value {
    match &r.kind {
        ReceiverKind::PagerDuty { routing_key } => json!({
            "routing_key": routing_key.expose(),
            "event_action": match event { PageEvent::Trigger => "trigger", PageEvent::Resolve => "resolve" },
            "dedup_key": page.dedup_key,
            "payload": {
                "summary": page.summary.chars().take(1024).collect::<String>(),
                "source": page.target,
                "severity": page.severity.as_str(),
                "timestamp": rfc3339(page.started_at),
                "component": page.target,
                "group": source,
                "class": "pitcrew",
                "custom_details": page.details,
            },
            "client": "pitcrew",
        }),
        ReceiverKind::Slack => {
            let text = match event {
                PageEvent::Trigger => format!(
                    ":rotating_light: [{}] {}: {}",
                    page.severity.as_str(),
                    page.target,
                    page.summary
                ),
                PageEvent::Resolve => format!(
                    ":white_check_mark: resolved: {}: {}",
                    page.target, page.summary
                ),
            };
            json!({ "text": text })
        }
        ReceiverKind::Webhook => {
            let status = match event {
                PageEvent::Trigger => "firing",
                PageEvent::Resolve => "resolved",
            };
            let mut labels = BTreeMap::from([
                ("alertname".to_owned(), "PitcrewRemediation".to_owned()),
                ("target".to_owned(), page.target.clone()),
                ("severity".to_owned(), page.severity.as_str().to_owned()),
                ("dedup_key".to_owned(), page.dedup_key.clone()),
            ]);
            if let Some(i) = &page.incident {
                labels.insert("incident".to_owned(), i.clone());
            }
            let mut annotations = page.details.clone();
            annotations.insert("summary".to_owned(), page.summary.clone());
            let ends_at = match event {
                PageEvent::Trigger => "0001-01-01T00:00:00Z".to_owned(),
                PageEvent::Resolve => rfc3339(Timestamp::now()),
            };
            json!({
                "version": "4",
                "groupKey": format!("{{}}:{{dedup_key=\"{}\"}}", page.dedup_key),
                "truncatedAlerts": 0,
                "status": status,
                "receiver": r.name,
                "groupLabels": { "dedup_key": page.dedup_key },
                "commonLabels": labels,
                "commonAnnotations": annotations,
                "externalURL": source,
                "alerts": [{
                    "status": status,
                    "labels": labels,
                    "annotations": annotations,
                    "startsAt": rfc3339(page.started_at),
                    "endsAt": ends_at,
                    "generatorURL": "",
                    "fingerprint": &pitcrew_contract::deterministic_id("fp", &[&page.dedup_key])[3..19],
                }],
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Page {
        Page {
            dedup_key: "pitcrew/inc-1".into(),
            summary: "Xid 79 on n17 GPU 3".into(),
            severity: PageSeverity::Critical,
            target: "node/n17".into(),
            incident: Some("inc-1".into()),
            action: Some("act-1".into()),
            started_at: Timestamp::from_unix_millis(1_764_000_000_000),
            details: BTreeMap::new(),
        }
    }

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // `printf '1.what do ya want for nothing?' | openssl dgst -sha256 -hmac Jefe`
        assert_eq!(
            sign(&Secret::new("Jefe"), 1, b"what do ya want for nothing?").unwrap(),
            "a9049465ce89cfb8e9aac62333abda66f80e3403f51f57f6bae3c3a4485eca38"
        );
        // The timestamp is signed too.
        assert_eq!(
            sign(&Secret::new("Jefe"), 2, b"what do ya want for nothing?").unwrap(),
            "5b45c666b628d5320b21fac655832a90f25fffefd966144874b8b576e8b82e63"
        );
    }

    #[test]
    fn payloads_have_each_receivers_shape() {
        let pd = Receiver {
            name: "pd".into(),
            kind: ReceiverKind::PagerDuty {
                routing_key: Secret::new("R0UTING"),
            },
            url: Secret::new("http://x"),
            hmac_key: None,
            teams: vec![],
            rma: false,
        };
        let v = payload(&pd, &page(), PageEvent::Resolve, "pitcrew@t");
        assert_eq!(v["event_action"], "resolve");
        assert_eq!(v["dedup_key"], "pitcrew/inc-1");
        assert_eq!(v["payload"]["severity"], "critical");
        let am = Receiver {
            kind: ReceiverKind::Webhook,
            name: "am".into(),
            ..pd.clone()
        };
        let v = payload(&am, &page(), PageEvent::Trigger, "pitcrew@t");
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["labels"]["target"], "node/n17");
        assert_eq!(
            v["alerts"][0]["annotations"]["summary"],
            "Xid 79 on n17 GPU 3"
        );
        assert_eq!(v["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert!(!format!("{s:?}").contains("hunter2"));
        let r = Receiver {
            name: "pd".into(),
            kind: ReceiverKind::PagerDuty {
                routing_key: Secret::new("R0UTING"),
            },
            url: Secret::new("https://hooks.slack.com/services/T/B/XYZ"),
            hmac_key: Some(Secret::new("k3y")),
            teams: vec![],
            rma: false,
        };
        let d = format!("{r:?}");
        assert!(
            !d.contains("R0UTING") && !d.contains("XYZ") && !d.contains("k3y"),
            "{d}"
        );
    }

    #[test]
    fn routing_by_team_and_rma() {
        let mk = |name: &str, teams: &[&str], rma: bool| Receiver {
            name: name.into(),
            kind: ReceiverKind::Webhook,
            url: Secret::new("http://x"),
            hmac_key: None,
            teams: teams.iter().map(|s| (*s).to_owned()).collect(),
            rma,
        };
        let p = Paging {
            receivers: vec![
                mk("all", &[], false),
                mk("net", &["network"], false),
                mk("hw", &["hw"], true),
            ],
            ..Paging::default()
        };
        assert_eq!(p.route(Some("network"), false), vec!["all", "net"]);
        assert_eq!(p.route(None, false).len(), 3);
        assert_eq!(p.route(None, true), vec!["hw"]);
    }
}

/// One page to one receiver: counted by receiver kind, event and outcome,
/// and a failure logged with it.
#[derive(Debug)]
pub struct PageDelivery<'a> {
    pub receiver: &'a Receiver,
    pub dedup_key: &'a str,
    pub event: PageEvent,
    /// Why it was not delivered; `None` when it was.
    pub error: Option<&'a ExecError>,
}

impl PageDelivery<'_> {
    fn log(&self) {
        if let Some(e) = self.error {
            tracing::warn!(receiver = %self.receiver.name, dedup_key = %self.dedup_key, error = %e, "page not delivered");
        }
    }
}

impl pitcrew_observe::InternalEvent<Family<PageLabels, Counter>> for PageDelivery<'_> {
    fn emit(self, pages: &Family<PageLabels, Counter>) {
        pages
            .get_or_create(&PageLabels {
                receiver: self.receiver.kind_label().to_owned(),
                event: match self.event {
                    PageEvent::Trigger => "trigger",
                    PageEvent::Resolve => "resolve",
                }
                .to_owned(),
                outcome: if self.error.is_none() {
                    "sent"
                } else {
                    "failed"
                }
                .to_owned(),
            })
            .inc();
        self.log();
    }
}
