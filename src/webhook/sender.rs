//! The HTTP side of a delivery: one signed POST with Standard Webhooks headers, through a
//! client that follows no redirects, uses no proxy, resolves names through the SSRF guard
//! and reads at most 4 KiB of the answer.

use std::sync::Arc;

use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};

use super::WebhookConfig;
use super::deliveries::Claimed;
use super::sign;
use super::ssrf::{Guard, GuardedResolver, forbidden_kind};

/// Bytes of a response body kept in the attempt log.
pub const RESPONSE_LIMIT: usize = 4096;

/// What came back from one attempt.
#[derive(Debug)]
pub enum Sent {
    Response {
        status: u16,
        retry_after: Option<String>,
        /// The first [`RESPONSE_LIMIT`] bytes of the body (lossy UTF-8).
        body: String,
        /// The address answering was not globally reachable (it was let through only by
        /// `webhook.allow_cidrs`), or is unknown: the body is shown to admins only.
        private: bool,
    },
    /// No HTTP answer: refused address, DNS, connect, timeout, TLS, …
    Failed(String),
}

/// Sends deliveries. Cheap to share.
pub struct Sender {
    client: reqwest::Client,
    guard: Arc<Guard>,
}

impl Sender {
    pub fn new(config: &WebhookConfig, guard: Arc<Guard>) -> Result<Sender, reqwest::Error> {
        let mut headers = HeaderMap::new();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("rowcast-webhooks/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .pool_max_idle_per_host(config.per_endpoint_concurrency)
            .dns_resolver(GuardedResolver {
                guard: guard.clone(),
            })
            .build()?;
        Ok(Sender { client, guard })
    }

    /// One attempt: checks an IP-literal host (the resolver never sees those), signs with
    /// the current secret (and the previous one in its grace period), POSTs, reads a
    /// bounded answer. Never panics; every failure is a [`Sent::Failed`] with its reason.
    pub async fn send(&self, d: &Claimed) -> Sent {
        if let Err(e) = self.guard.check_url_host(&d.url) {
            return Sent::Failed(format!("refused: {e}"));
        }
        let id = d.id.to_string();
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut secrets = vec![d.secret.as_str()];
        secrets.extend(d.old_secret.as_deref());
        let signature = match sign::header(&secrets, &id, timestamp, d.payload.as_bytes()) {
            Ok(s) => s,
            Err(e) => return Sent::Failed(e.to_string()),
        };
        let request = self
            .client
            .post(&d.url)
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => return Sent::Failed(crate::telemetry::error_chain(&e)),
        };
        let status = response.status().as_u16();
        // The address actually connected to, not the one the URL was checked with: a name
        // may resolve to several. Unknown counts as private (fail closed).
        let private = response
            .remote_addr()
            .is_none_or(|a| forbidden_kind(a.ip()).is_some());
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let mut body = Vec::new();
        // Read only what we keep; the rest is dropped with the connection.
        while body.len() < RESPONSE_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let take = chunk.len().min(RESPONSE_LIMIT - body.len());
                    body.extend_from_slice(&chunk[..take]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        Sent::Response {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
            private,
        }
    }
}
