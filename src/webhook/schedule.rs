//! The retry schedule: which delay follows the n-th failed attempt, with ±20% jitter
//! (from backon), and how a receiver's `Retry-After` bends it.

use std::time::Duration;

use backon::{BackoffBuilder, ConstantBuilder};

/// What happens after an attempt that did not succeed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Next {
    /// Try again after this delay.
    RetryIn(Duration),
    /// The schedule is exhausted: the delivery is failed (a dead letter).
    GiveUp,
}

/// The configured delays between attempts. With `n` delays a delivery gets `n + 1`
/// attempts.
#[derive(Debug, Clone)]
pub struct Schedule {
    delays: Vec<Duration>,
    max_retry_after: Duration,
}

impl Schedule {
    pub fn new(delays: Vec<Duration>, max_retry_after: Duration) -> Schedule {
        Schedule {
            delays,
            max_retry_after,
        }
    }

    /// Attempts a delivery gets before it is failed.
    pub fn max_attempts(&self) -> usize {
        self.delays.len() + 1
    }

    /// After the `tries`-th failed attempt (1-based): the jittered delay from the schedule,
    /// or the receiver's `Retry-After` when that is longer (capped at `max_retry_after`).
    pub fn after_failure(&self, tries: usize, retry_after: Option<Duration>) -> Next {
        let Some(&base) = tries.checked_sub(1).and_then(|i| self.delays.get(i)) else {
            return Next::GiveUp;
        };
        let delay = jitter(base);
        let asked = retry_after.map(|r| r.min(self.max_retry_after));
        Next::RetryIn(asked.map_or(delay, |a| a.max(delay)))
    }
}

/// `base` ±20%: backon's constant backoff with jitter yields `d + d·U(0,1)`; with
/// `d = 0.4·base` and a fixed `0.4·base` added that is `base·U(0.8, 1.2)`.
pub fn jitter(base: Duration) -> Duration {
    let part = base.mul_f64(0.4);
    let jittered = ConstantBuilder::new()
        .with_delay(part)
        .with_jitter()
        .with_max_times(1)
        .build()
        .next()
        .unwrap_or(part);
    part + jittered
}

/// `Retry-After` as seconds or an HTTP date (RFC 7231), as a delay from now.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (when - time::OffsetDateTime::now_utc()).as_seconds_f64();
    Some(Duration::from_secs_f64(secs.max(0.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_twenty_percent() {
        let base = Duration::from_secs(100);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..2000 {
            let d = jitter(base);
            assert!(
                d >= Duration::from_secs(80) && d <= Duration::from_secs(120),
                "{d:?}"
            );
            seen_low |= d < Duration::from_secs(90);
            seen_high |= d > Duration::from_secs(110);
        }
        assert!(seen_low && seen_high, "jitter spreads over the range");
    }

    #[test]
    fn schedule_gives_up_after_the_last_delay_and_honours_retry_after() {
        let s = Schedule::new(
            vec![Duration::from_secs(5), Duration::from_secs(300)],
            Duration::from_secs(600),
        );
        assert_eq!(s.max_attempts(), 3);
        assert!(
            matches!(s.after_failure(1, None), Next::RetryIn(d) if d <= Duration::from_secs(6))
        );
        assert!(
            matches!(s.after_failure(2, None), Next::RetryIn(d) if d >= Duration::from_secs(240))
        );
        assert_eq!(s.after_failure(3, None), Next::GiveUp);
        assert_eq!(
            s.after_failure(1, Some(Duration::from_secs(60))),
            Next::RetryIn(Duration::from_secs(60))
        );
        assert_eq!(
            s.after_failure(1, Some(Duration::from_secs(9999))),
            Next::RetryIn(Duration::from_secs(600))
        );
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
