//! A small HTTPS client for webhooks (hyper with OpenSSL, which the build
//! already links for Kafka, so no second TLS stack).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

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
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(timeout: Duration) -> Result<HttpClient, String> {
        let https = HttpsConnector::new().map_err(|e| format!("tls setup: {e}"))?;
        let client = Client::builder(TokioExecutor::new()).build(https);
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
        let mut req = http::Request::post(url).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad request: {e}"))?;
        let call = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("request failed: {e}"))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the response: {e}"))?
                .to_bytes();
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
