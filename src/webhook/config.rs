//! The webhook configuration section (`[webhook]`, `ROWCAST_WEBHOOK_*`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Delays between attempts; the number of entries + 1 is the number of attempts.
    #[serde(
        deserialize_with = "crate::serde_ext::durations",
        serialize_with = "crate::serde_ext::ser_durations"
    )]
    pub retry_schedule: Vec<Duration>,
    /// Total time allowed for one request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed to connect.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Networks that are allowed although private (tests, local setups).
    #[serde(deserialize_with = "crate::serde_ext::comma_list")]
    pub allow_cidrs: Vec<ipnet::IpNet>,
    /// Deliveries in flight at once, over all endpoints.
    pub concurrency: usize,
    /// Deliveries leased at once to one endpoint, over the whole cluster (counted in
    /// PostgreSQL when claiming): an endpoint that never answers holds this many slots.
    pub per_endpoint_concurrency: usize,
    /// How long a rotated-out secret keeps signing as a second signature.
    #[serde(with = "humantime_serde")]
    pub secret_grace: Duration,
    /// Largest `Retry-After` honoured.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// How long a worker holds a claimed delivery; must exceed `timeout`. A worker that
    /// dies mid-request releases nothing: another takes the delivery when the lease ends.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often workers look for due deliveries (retries) when nothing woke them.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most deliveries claimed by one query.
    pub batch: i64,
    /// Most change-log rows turned into deliveries by one outbox transaction.
    pub enqueue_batch: i64,
    /// Test sends (`POST /api/webhook/test`) one user may make a minute, per replica.
    pub test_sends_per_minute: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        let m = 60;
        WebhookConfig {
            retry_schedule: [5, 5 * m, 30 * m, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(5),
            allow_cidrs: Vec::new(),
            concurrency: 64,
            per_endpoint_concurrency: 32,
            secret_grace: Duration::from_secs(24 * 3600),
            max_retry_after: Duration::from_secs(3600),
            lease: Duration::from_secs(45),
            poll_interval: Duration::from_secs(1),
            batch: 256,
            enqueue_batch: 1000,
            test_sends_per_minute: 10,
        }
    }
}

impl WebhookConfig {
    /// What is wrong with this section, if anything.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.retry_schedule.len() > 50 {
            problems.push("webhook.retry_schedule has more than 50 entries".into());
        }
        if self.concurrency == 0 || self.per_endpoint_concurrency == 0 {
            problems.push(
                "webhook.concurrency and webhook.per_endpoint_concurrency must be at least 1"
                    .into(),
            );
        }
        if self.lease <= self.timeout {
            problems.push(
                "webhook.lease must be longer than webhook.timeout (a lease that ends mid-request lets a second worker send the same delivery)"
                    .into(),
            );
        }
        if self.batch < 1 || self.enqueue_batch < 1 {
            problems.push("webhook.batch and webhook.enqueue_batch must be at least 1".into());
        }
        if self.test_sends_per_minute == 0 {
            problems.push("webhook.test_sends_per_minute must be at least 1".into());
        }
        if self.poll_interval.is_zero() {
            problems.push("webhook.poll_interval must be positive".into());
        }
        problems
    }
}
