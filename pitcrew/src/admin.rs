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
//! Hand-rolled on tokio like the metrics endpoint: a handful of routes.
//! The token is compared in constant time and never logged.

use std::io::{Read as _, Write as _};
use std::time::Duration;

use pitcrew_remediate::exec::page::Secret;
use pitcrew_remediate::worker::AdminError;
use pitcrew_remediate::Worker;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

struct Request {
    method: String,
    path: String,
    auth: Option<String>,
    body: String,
}

async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let mut auth = None;
    let mut length = 0usize;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "authorization" => auth = Some(v.trim().to_owned()),
                "content-length" => length = v.trim().parse().unwrap_or(0).min(64 * 1024),
                _ => {}
            }
        }
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        auth,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn field(body: &str, key: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get(key)?
        .as_str()
        .map(str::to_owned)
}

async fn handle(req: Request, token: &Secret, worker: &Worker) -> (u16, String) {
    let authorized = req
        .auth
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
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let token = std::sync::Arc::new(token);
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let token = std::sync::Arc::clone(&token);
            let worker = worker.clone();
            tokio::spawn(async move {
                let Some(req) = read_request(&mut conn).await else {
                    return;
                };
                let (method, path) = (req.method.clone(), req.path.clone());
                let (status, body) = handle(req, &token, &worker).await;
                tracing::info!(method = %method, path = %path, status, "admin request");
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    if status < 300 { "OK" } else { "Error" },
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok((addr, handle))
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
    let hostport = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("--admin must be an http:// address"))?
        .trim_end_matches('/');
    let mut conn = std::net::TcpStream::connect(hostport)
        .map_err(|e| anyhow::anyhow!("cannot reach the admin API at {base}: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes())?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)?;
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
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
