//! The one HTTP server stack (hyper's HTTP/1 server, with a head read
//! timeout, a body timeout and a body limit) that every endpoint runs on:
//! [`serve`] gives every service `/metrics` (Prometheus text from the
//! process registry), `/healthz` and `/readyz`; the admin API
//! (`crate::admin`) is another handler on [`serve_with`]. Clients are
//! reqwest's, everywhere.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// Answers whether the service is healthy, with a reason when it is not.
pub type Health = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Sums the samples of `name` in a Prometheus text exposition: a metric
/// name sums every label set, a name with labels (`x{stage="node"}`)
/// matches those exactly.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| name.ends_with('}') || rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A request as the handlers see it: the head read within
/// [`HEADER_TIMEOUT`], the body whole and at most [`MAX_BODY`] bytes.
#[derive(Debug)]
pub struct Incoming {
    pub method: String,
    pub path: String,
    /// The `Authorization` header, when there is one.
    pub authorization: Option<String>,
    pub body: String,
}

/// What a handler answers: status, content type and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type,
            body: body.into(),
        }
    }
}

/// How long a client may take to send a request's head (a slow client
/// holds a connection, not the server).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send the body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest body a handler is given; a larger one is refused (413).
pub const MAX_BODY: usize = 64 * 1024;

/// The one server stack every endpoint runs on (hyper's HTTP/1 server):
/// binds `listen` and serves `handler` until the task is dropped, with the
/// head and body read timeouts and the body limit above. Returns the bound
/// address (port 0 picks one).
pub async fn serve_with<H, F>(
    listen: &str,
    handler: H,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)>
where
    H: Fn(Incoming) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = Reply> + Send + 'static,
{
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(req, handler).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(conn), service)
                    .await;
            });
        }
    });
    Ok((addr, handle))
}

async fn answer<H, F>(
    req: hyper::Request<hyper::body::Incoming>,
    handler: H,
) -> hyper::Response<Full<Bytes>>
where
    H: Fn(Incoming) -> F,
    F: std::future::Future<Output = Reply>,
{
    let (parts, body) = req.into_parts();
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    let reply = match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Reply::new(408, "text/plain", "the body took too long\n"),
        Ok(Err(_)) => Reply::new(413, "text/plain", "the body is too large or broken\n"),
        Ok(Ok(collected)) => {
            let incoming = Incoming {
                method: parts.method.as_str().to_owned(),
                path: parts.uri.path().to_owned(),
                authorization: parts
                    .headers
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
            };
            handler(incoming).await
        }
    };
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = hyper::header::HeaderValue::from_str(reply.content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, v);
    }
    response
}

/// `/metrics` (Prometheus text from `registry`), `/healthz` and `/readyz`
/// (`health`), on [`serve_with`].
pub async fn serve(
    listen: &str,
    registry: Arc<Registry>,
    health: Health,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    serve_with(listen, move |req: Incoming| {
        let (registry, health) = (Arc::clone(&registry), Arc::clone(&health));
        async move {
            match req.path.as_str() {
                "/metrics" => {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => Reply::new(
                            200,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ),
                        Err(e) => Reply::new(500, "text/plain", e.to_string()),
                    }
                }
                "/healthz" | "/readyz" => match health() {
                    Ok(()) => Reply::new(200, "text/plain", "ok\n"),
                    Err(why) => Reply::new(503, "text/plain", format!("{why}\n")),
                },
                _ => Reply::new(404, "text/plain", "not found\n"),
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test]
    async fn a_slow_client_is_cut_off_and_a_large_body_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (addr, _task) = serve_with("127.0.0.1:0", |req: Incoming| async move {
            Reply::new(
                200,
                "text/plain",
                format!("{} {} {}", req.method, req.path, req.body.len()),
            )
        })
        .await
        .unwrap();
        let url = format!("http://{addr}/x");
        let client = reqwest::Client::new();
        let r = client.post(&url).body("hello").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(r.text().await.unwrap(), "POST /x 5");
        let big = "x".repeat(MAX_BODY + 1);
        let r = client.post(&url).body(big).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 413);
        // A client that never finishes its head is disconnected after the
        // header timeout instead of holding the connection.
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            HEADER_TIMEOUT + Duration::from_secs(5),
            slow.read_to_end(&mut buf),
        )
        .await;
        assert!(read.is_ok(), "the connection was closed by the server");
    }

    #[test]
    fn metric_sum_adds_label_sets_and_not_longer_names() {
        let text = "# HELP x_total help\nx_total{stage=\"node\"} 3\nx_total{stage=\"group\"} 4\nx_total_more 100\nx_total 1\n";
        assert_eq!(metric_sum(text, "x_total"), 8.0);
        assert_eq!(metric_sum(text, "x_total{stage=\"node\"}"), 3.0);
        assert_eq!(metric_sum(text, "y_total"), 0.0);
    }
}
