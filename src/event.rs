//! The vocabulary shared by every stage: log positions, captured changes, routed events.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// A position in the change log: the `seq` the sequencer stamped on a change.
///
/// Positions are totally ordered and identical on every replica: once a reader has seen a
/// position, no change at or before it can appear later. Clients see it as the decimal
/// string `seq` (e.g. `"1234"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Position(pub i64);

impl Position {
    pub const ZERO: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a seq: expected the `seq` of an event, a whole number like \"1234\"")]
pub struct BadPosition(pub String);

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Position(n)),
            _ => Err(BadPosition(s.chars().take(64).collect())),
        }
    }
}

impl Serialize for Position {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            N(i64),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
            Raw::N(n) => format!("{n}").parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What happened to a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    /// The op from its one-letter code in `rowcast.changes.op` (`i`, `u`, `d`).
    pub fn from_code(c: u8) -> Option<Op> {
        match c {
            b'i' => Some(Op::Insert),
            b'u' => Some(Op::Update),
            b'd' => Some(Op::Delete),
            _ => None,
        }
    }
    /// The one-letter code stored in `rowcast.changes.op`; the capture triggers write the
    /// same letters.
    pub fn code(self) -> u8 {
        match self {
            Op::Insert => b'i',
            Op::Update => b'u',
            Op::Delete => b'd',
        }
    }
    /// `insert | update | delete`, as in the payload's `op`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
    /// `created | updated | deleted`, as in `ticket.updated`.
    pub fn past(self) -> &'static str {
        match self {
            Op::Insert => "created",
            Op::Update => "updated",
            Op::Delete => "deleted",
        }
    }
}

/// One row of `rowcast.changes`.
#[derive(Debug, Clone)]
pub struct Change {
    pub pos: Position,
    pub at: time::OffsetDateTime,
    pub op: Op,
    pub table: String,
    /// Key values as a JSON array.
    pub pk: serde_json::Value,
    /// The old row, for deletes (hidden columns already removed by the trigger).
    pub old: Option<serde_json::Value>,
}

/// An enriched, routed event, serialized once and shared by every session that receives it.
#[derive(Debug)]
pub struct Event {
    pub seq: Position,
    /// Name sent on Socket.IO and `/ws`: `ticket.update`, `notification`, `notification.update`.
    pub name: String,
    /// Event type for webhooks and payloads: `ticket.updated`, `notification.created`.
    pub event_type: String,
    /// Schema-qualified table.
    pub table: String,
    /// Rooms the event goes to, most general first.
    pub rooms: Vec<String>,
    /// For notifications: the recipient's user id.
    pub recipient: Option<String>,
    /// The contract's payload, serialized.
    pub payload: Box<RawValue>,
    /// Time of the transaction that made the change.
    pub committed_at: time::OffsetDateTime,
}

pub type SharedEvent = Arc<Event>;

/// Who a session or request belongs to: the token's `sub` and role(s). Built by the token
/// check (`api::auth`), read by room allow-lists and sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub sub: String,
    pub roles: Vec<String>,
    /// Expiry as unix seconds.
    pub exp: Option<i64>,
}

impl User {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }
    /// Seconds until the token expires (0 if it already has).
    pub fn seconds_left(&self) -> Option<u64> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        self.exp.map(|e| (e - now).max(0) as u64)
    }
    /// The user's private room, `user:<sub>`.
    pub fn room(&self) -> String {
        format!("user:{}", self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_and_orders() {
        let p: Position = "812".parse().unwrap();
        assert_eq!(p, Position(812));
        assert_eq!(p.to_string(), "812");
        assert!(Position(9) < Position(10));
        assert!("12-1".parse::<Position>().is_err());
        assert!("a".parse::<Position>().is_err());
        assert!("-1".parse::<Position>().is_err());
        let v: Position = serde_json::from_str("\"7\"").unwrap();
        assert_eq!(v, Position(7));
    }
}
