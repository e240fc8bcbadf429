//! The attempt log as the API shows it: one attempt's outcome, and who may read the
//! response body (bodies from addresses that are not globally reachable are for admins).

use serde::Serialize;

/// What one attempt came to, as stored in `webhook_attempts.outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; another attempt is scheduled.
    Retry,
    /// Failed, and it was the last attempt.
    Failed,
    /// The receiver answered 410 Gone: the endpoint is disabled.
    Gone,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::Retry => "retry",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::Gone => "gone",
        }
    }

    /// The stored text back; anything unknown reads as `failed`.
    pub fn parse(s: &str) -> AttemptOutcome {
        [
            AttemptOutcome::Delivered,
            AttemptOutcome::Retry,
            AttemptOutcome::Gone,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
        .unwrap_or(AttemptOutcome::Failed)
    }
}

/// One stored attempt.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub attempted_at: String,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub outcome: AttemptOutcome,
    pub error: Option<String>,
    /// The first 4 KiB of the response body.
    pub response: Option<String>,
    /// Why `response` is `null` although the receiver answered: `"private_address"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_withheld: Option<&'static str>,
    /// `webhook_attempts.private`: the address that answered is not globally reachable
    /// (it passed the SSRF guard only through `webhook.allow_cidrs`). `None`: nothing
    /// answered, or the attempt predates migration 008. Not shown.
    #[serde(skip)]
    pub private: Option<bool>,
}

impl Attempt {
    /// The value of `response_withheld` for a body from a private address.
    pub const PRIVATE_ADDRESS: &'static str = "private_address";

    /// Blanks the body unless it is known to come from a public address, so a user cannot
    /// read internal services through their own endpoint's attempt log (status code,
    /// timing and error stay). Fails closed: an attempt recorded before the column
    /// existed is withheld too.
    pub fn withhold(&mut self) {
        if self.response.is_some() && self.private != Some(false) {
            self.response = None;
            self.response_withheld = Some(Self::PRIVATE_ADDRESS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(response: Option<&str>, private: Option<bool>) -> Attempt {
        Attempt {
            attempted_at: "2026-12-01T00:00:00Z".into(),
            duration_ms: 7,
            status_code: response.map(|_| 200),
            outcome: AttemptOutcome::Delivered,
            error: None,
            response: response.map(String::from),
            response_withheld: None,
            private,
        }
    }

    #[test]
    fn bodies_are_withheld_unless_known_to_come_from_a_public_address() {
        for (response, private, shown, withheld) in [
            (Some("internal"), Some(true), None, Some("private_address")),
            // Recorded before migration 008: not known to be public.
            (Some("internal"), None, None, Some("private_address")),
            (Some(""), Some(true), None, Some("private_address")),
            (Some("public"), Some(false), Some("public"), None),
            // Nothing answered: nothing to withhold, no reason shown.
            (None, None, None, None),
        ] {
            let mut a = attempt(response, private);
            a.withhold();
            assert_eq!(
                (a.response.as_deref(), a.response_withheld),
                (shown, withheld),
                "{response:?} {private:?}"
            );
            assert_eq!(a.status_code, response.map(|_| 200), "status stays");
            assert_eq!(a.duration_ms, 7, "timing stays");
            let json = serde_json::to_value(&a).unwrap();
            assert!(json.get("private").is_none(), "{json}");
            assert_eq!(json.get("response_withheld").is_some(), withheld.is_some());
        }
    }
}
