//! The per-user rate limit of test sends (`POST /api/webhook/test`): a token bucket per
//! user in this process, so each replica allows `webhook.test_sends_per_minute` on its own
//! (behind N replicas a user gets at most N times that).
//!
//! Test sends are the one way a user enqueues deliveries at will; without a bound a few
//! users could queue thousands of requests to receivers that never answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept before full (idle) ones are dropped; a dropped bucket is full anyway.
const MAX_BUCKETS: usize = 10_000;

/// Token buckets by user id: `per_minute` sends at once, refilled at `per_minute` a minute.
pub struct TestSendLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl TestSendLimiter {
    pub fn new(per_minute: u32) -> TestSendLimiter {
        TestSendLimiter {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Sends allowed a minute.
    pub fn per_minute(&self) -> u32 {
        self.per_minute as u32
    }

    /// Takes one send for `user`, or says how long until the next one is allowed.
    pub fn take(&self, user: &str) -> Result<(), Duration> {
        self.take_at(user, Instant::now())
    }

    fn take_at(&self, user: &str, now: Instant) -> Result<(), Duration> {
        let rate = self.per_minute / 60.0;
        let cap = self.per_minute;
        let refill =
            |b: &Bucket| (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(cap);
        // A std mutex: held for a few arithmetic operations, never across an await.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(user) {
            buckets.retain(|_, b| refill(b) < cap);
        }
        let b = buckets.entry(user.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens = refill(b);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_one_per_interval_per_user() {
        let l = TestSendLimiter::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(l.take_at("7", t0).is_ok());
        }
        let wait = l.take_at("7", t0).unwrap_err();
        assert!(
            wait > Duration::from_secs(5) && wait <= Duration::from_secs(6),
            "{wait:?}"
        );
        assert!(
            l.take_at("8", t0).is_ok(),
            "another user has their own bucket"
        );
        assert!(l.take_at("7", t0 + Duration::from_secs(6)).is_ok());
        assert!(l.take_at("7", t0 + Duration::from_secs(6)).is_err());
    }
}
