//! The small HTTP endpoint every service has: `/metrics` (Prometheus text
//! from the process registry), `/healthz` and `/readyz`. Hand-rolled on
//! tokio's TcpListener: three GET routes do not need a web framework.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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

/// Binds `listen` and serves until the task is dropped. Returns the bound
/// address (port 0 picks one).
pub async fn serve(
    listen: &str,
    registry: Arc<Registry>,
    health: Health,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                continue;
            };
            let registry = Arc::clone(&registry);
            let health = Arc::clone(&health);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut len = 0;
                while len < buf.len() {
                    match conn.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            len += n;
                            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                }
                let request = String::from_utf8_lossy(&buf[..len]);
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let (status, content_type, body) = match path {
                    "/metrics" => {
                        let mut text = String::new();
                        match prometheus_client::encoding::text::encode(&mut text, &registry) {
                            Ok(()) => (
                                "200 OK",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                text,
                            ),
                            Err(e) => ("500 Internal Server Error", "text/plain", e.to_string()),
                        }
                    }
                    "/healthz" | "/readyz" => match health() {
                        Ok(()) => ("200 OK", "text/plain", "ok\n".to_owned()),
                        Err(why) => ("503 Service Unavailable", "text/plain", format!("{why}\n")),
                    },
                    _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok((addr, handle))
}

#[cfg(test)]
mod tests {
    use super::metric_sum;

    #[test]
    fn metric_sum_adds_label_sets_and_not_longer_names() {
        let text = "# HELP x_total help\nx_total{stage=\"node\"} 3\nx_total{stage=\"group\"} 4\nx_total_more 100\nx_total 1\n";
        assert_eq!(metric_sum(text, "x_total"), 8.0);
        assert_eq!(metric_sum(text, "x_total{stage=\"node\"}"), 3.0);
        assert_eq!(metric_sum(text, "y_total"), 0.0);
    }
}
