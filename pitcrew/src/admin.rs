//! The remediation admin API (bearer token required) and its client for
//! `pitcrew approve` and `pitcrew breaker`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/v1/breaker` | the breaker's state |
//! | POST | `/v1/breaker/reset` | reset a latched breaker (`{"by": "..."}`) |
//! | POST | `/v1/breaker/open` | latch it by hand (`{"by", "reason"}`) |
//! | POST | `/v1/approve/{action}` | approve a waiting action (`{"by"}`) |
//! | GET | `/v1/targets` | every target's remediation state |
//!
//! A handler on the one server stack ([`crate::http::serve_with`]: read
//! timeouts, a body limit). The token is compared in constant time and
//! never logged.

use std::time::Duration;

use pitcrew_remediate::exec::page::Secret;
use pitcrew_remediate::worker::AdminError;
use pitcrew_remediate::Worker;

use crate::http::{Incoming, Reply};

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn field(body: &str, key: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

async fn handle(req: &Incoming, token: &Secret, worker: &Worker) -> (u16, String) {
    let authorized = req
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.trim().as_bytes(), token.expose().as_bytes()));
    if !authorized {
        return (
            401,
            r#"{"error":"a valid bearer token is required"}"#.into(),
        );
    }
    let by = field(&req.body, "by").unwrap_or_else(|| "admin-api".into());
    let json = |v: serde_json::Value| v.to_string();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v1/breaker") => (
            200,
            json(serde_json::json!({ "breaker": worker.breaker(), "budget": {
                "out_of_service": worker.budget().out_of_service,
                "max_out_of_service": worker.budget().max_out_of_service,
            }})),
        ),
        ("POST", "/v1/breaker/reset") => match worker.reset_breaker(&by).await {
            Ok(()) => (200, json(serde_json::json!({"reset": true, "by": by}))),
            Err(e @ AdminError::BreakerClosed) => {
                (409, json(serde_json::json!({"error": e.to_string()})))
            }
            Err(e) => (503, json(serde_json::json!({"error": e.to_string()}))),
        },
        ("POST", "/v1/breaker/open") => {
            let reason = field(&req.body, "reason").unwrap_or_else(|| "opened by hand".into());
            match worker.open_breaker(&by, &reason).await {
                Ok(()) => (200, json(serde_json::json!({"open": true}))),
                Err(e) => (503, json(serde_json::json!({"error": e.to_string()}))),
            }
        }
        ("GET", "/v1/targets") => (
            200,
            json(serde_json::to_value(worker.states()).unwrap_or_default()),
        ),
        ("POST", p) if p.starts_with("/v1/approve/") => {
            let action = &p["/v1/approve/".len()..];
            match worker.approve(action, &by) {
                Ok(()) => (200, json(serde_json::json!({"approved": action, "by": by}))),
                Err(e) => (404, json(serde_json::json!({"error": e.to_string()}))),
            }
        }
        _ => (404, r#"{"error":"no such route"}"#.into()),
    }
}

/// Serves the admin API until the task is dropped.
pub async fn serve(
    listen: &str,
    token: Secret,
    worker: Worker,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let token = std::sync::Arc::new(token);
    crate::http::serve_with(listen, move |req: Incoming| {
        let (token, worker) = (std::sync::Arc::clone(&token), worker.clone());
        async move {
            let (status, body) = handle(&req, &token, &worker).await;
            tracing::info!(method = %req.method, path = %req.path, status, "admin request");
            Reply::new(status, "application/json", body)
        }
    })
    .await
}

/// One request to the admin API (`http://host:port`), for the CLI.
/// Returns (status, body).
pub fn call(
    base: &str,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> anyhow::Result<(u16, String)> {
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?
        .request(method, &url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {base}: {e}"))?;
    let status = response.status().as_u16();
    Ok((status, response.text()?))
}

/// The admin token for the CLI: `--token-file` or `PITCREW_ADMIN_TOKEN`.
pub fn cli_token(file: Option<&std::path::Path>) -> anyhow::Result<String> {
    match file {
        Some(f) => Ok(std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("token file {}: {}", f.display(), e.kind()))?
            .trim()
            .to_owned()),
        None => std::env::var("PITCREW_ADMIN_TOKEN")
            .map_err(|_| anyhow::anyhow!("give --token-file or set PITCREW_ADMIN_TOKEN")),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
