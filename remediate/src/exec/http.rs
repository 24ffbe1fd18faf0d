//! The webhook client: reqwest, pitcrew's one HTTP client stack, on the
//! OpenSSL the build links for Kafka (no second TLS stack).

use std::time::Duration;

/// One response: status, `Retry-After` (seconds form) and the body (cut to
/// 4 KiB, for error messages).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

#[derive(Clone, Debug)]
pub struct HttpClient {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<HttpClient, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("tls setup: {e}"))?;
        Ok(HttpClient { client, timeout })
    }

    /// POSTs `body` as JSON. Errors are transport errors (retryable);
    /// any HTTP status comes back as a response.
    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, String> {
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let call = async {
            // The URL may be the secret (a Slack webhook): never in errors.
            let resp = req
                .send()
                .await
                .map_err(|e| format!("request failed: {}", e.without_url()))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| format!("reading the response: {}", e.without_url()))?;
            let cut = bytes.len().min(4096);
            Ok(Response {
                status,
                retry_after,
                body: String::from_utf8_lossy(&bytes[..cut]).into_owned(),
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("no answer within {} s", self.timeout.as_secs()))?
    }
}
