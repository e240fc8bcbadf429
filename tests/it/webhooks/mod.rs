//! Webhooks end to end: the API, the outbox, signed delivery to a real receiver that
//! verifies with the npm `standardwebhooks` library, retries, dead letters, replay, crash
//! recovery, several replicas, and the SSRF guard.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use rowcast::Settings as Config;
use serde_json::{Value, json};

mod crash;
mod fairness;
mod retries;
mod routing;
mod ssrf;

use crate::support::eventually;

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Loopback allowed (the receiver is local), short retries, quick polling.
pub fn fast(c: &mut Config) {
    c.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    c.webhook.retry_schedule = vec![ms(100), ms(100), ms(100)];
    c.webhook.poll_interval = ms(50);
    c.webhook.timeout = Duration::from_secs(2);
    c.webhook.lease = Duration::from_secs(4);
}

/// Calls rowcast's API as a user.
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Api {
        Api {
            base,
            http: reqwest::Client::new(),
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("rowcast answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(token), Some(body)).await
    }

    /// Sets the caller's endpoint; returns its secret.
    pub async fn set_url(&self, token: &str, url: &str) -> String {
        let (s, ep) = self.put("/api/webhook", token, json!({ "url": url })).await;
        assert!(s.is_success(), "{s} {ep}");
        ep["secret"].as_str().expect("secret").to_string()
    }

    /// Sends a test notification; returns the delivery id.
    pub async fn test_send(&self, token: &str) -> String {
        let (s, b) = self.post("/api/webhook/test", token, json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        b["delivery_id"].as_str().unwrap().to_string()
    }

    /// Waits until the delivery has `status`; returns it with its attempt log.
    #[track_caller]
    pub fn delivery_with_status<'a>(
        &'a self,
        token: &'a str,
        id: &'a str,
        status: &'a str,
    ) -> impl Future<Output = Value> + 'a {
        eventually(20, move || async move {
            let (s, d) = self
                .get(&format!("/api/webhook/deliveries/{id}"), token)
                .await;
            if s == StatusCode::OK {
                // Every read, also one taken while an attempt is being recorded, shows
                // the attempt log and the counter from the same moment.
                let logged = d["attempt_log"].as_array().map_or(0, Vec::len);
                assert_eq!(
                    d["attempts"], logged,
                    "attempts and attempt_log disagree: {d}"
                );
            }
            (s == StatusCode::OK && d["status"] == status).then_some(d)
        })
    }
}
