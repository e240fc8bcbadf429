//! The vocabulary shared by every stage: log positions, captured changes, routed events.

use std::collections::BTreeSet;
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
    /// The old row, for deletes (hidden columns already removed by the trigger); for
    /// updates, the old values of the audience columns they changed.
    pub old: Option<serde_json::Value>,
    /// The row as of the change's commit (inserts and updates), hidden columns never
    /// included. `None` for changes written by versions before the log carried rows.
    pub data: Option<serde_json::Value>,
    /// Why the change carries no row: its table's columns no longer matched what
    /// `rowcast migrate` installed, so nothing of the row was kept.
    pub withheld: Option<String>,
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
    /// Who may receive the event; for a delete, who could see the row.
    pub audience: Audience,
    /// An update that changed who sees the row: who (besides the roles) could see it
    /// before. Users it admitted and the new audience does not get [`View::Left`]; the
    /// reverse gets [`View::Entered`].
    pub before: Option<Reach>,
    /// Notifications: who may see the related row the payload carries as `data`. Other
    /// recipients get [`View::Redacted`].
    pub related: Option<Audience>,
    /// The payloads of the other views, each serialized once.
    pub variants: Variants,
}

/// The payloads some users receive instead of [`Event::payload`].
#[derive(Debug, Default)]
pub struct Variants {
    /// [`View::Entered`]: the whole row as an insert.
    pub entered: Option<Box<RawValue>>,
    /// [`View::Left`]: a removal carrying only the key, with a `reason`.
    pub left: Option<Box<RawValue>>,
    /// [`View::Redacted`]: the notification with `data: null`.
    pub redacted: Option<Box<RawValue>>,
}

impl Event {
    /// How `user` receives this event, if at all. The same decision for live delivery,
    /// resume, SSE and polling.
    pub fn view(&self, user: &User) -> Option<View> {
        let by_role = self.audience.by_role(user);
        let now = by_role || self.audience.reach.admits(&user.sub);
        let before = match &self.before {
            Some(r) => by_role || r.admits(&user.sub),
            None => now,
        };
        let view = match (before, now) {
            (true, true) => match &self.related {
                Some(related) if !related.admits(user) => View::Redacted,
                _ => View::Full,
            },
            (false, true) => View::Entered,
            (true, false) => View::Left,
            (false, false) => return None,
        };
        // Fail closed: a view whose payload was not built is withheld, never replaced by
        // the full payload.
        self.variant(view).map(|_| view)
    }

    fn variant(&self, view: View) -> Option<&RawValue> {
        match view {
            View::Full => Some(&self.payload),
            View::Entered => self.variants.entered.as_deref(),
            View::Left => self.variants.left.as_deref(),
            View::Redacted => self.variants.redacted.as_deref(),
        }
    }

    /// The payload of `view` (from [`Event::view`], which only returns views that have one).
    pub fn payload(&self, view: View) -> &RawValue {
        self.variant(view).unwrap_or(&self.payload)
    }
}

pub type SharedEvent = Arc<Event>;

/// Who among the users without an all-seeing role may see a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    Nobody,
    Everyone,
    /// Exactly these users (by `sub`).
    Users(BTreeSet<String>),
}

impl Reach {
    pub fn user(sub: String) -> Reach {
        Reach::Users(BTreeSet::from([sub]))
    }

    pub fn admits(&self, sub: &str) -> bool {
        match self {
            Reach::Nobody => false,
            Reach::Everyone => true,
            Reach::Users(u) => u.contains(sub),
        }
    }

    /// Who both let see the row.
    pub fn and(self, other: Reach) -> Reach {
        match (self, other) {
            (Reach::Nobody, _) | (_, Reach::Nobody) => Reach::Nobody,
            (Reach::Everyone, r) | (r, Reach::Everyone) => r,
            (Reach::Users(a), Reach::Users(b)) => {
                let both: BTreeSet<String> = a.intersection(&b).cloned().collect();
                if both.is_empty() {
                    Reach::Nobody
                } else {
                    Reach::Users(both)
                }
            }
        }
    }

    /// Who either lets see the row.
    pub fn or(self, other: Reach) -> Reach {
        match (self, other) {
            (Reach::Everyone, _) | (_, Reach::Everyone) => Reach::Everyone,
            (Reach::Nobody, r) | (r, Reach::Nobody) => r,
            (Reach::Users(mut a), Reach::Users(b)) => {
                a.extend(b);
                Reach::Users(a)
            }
        }
    }
}

impl fmt::Display for Reach {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reach::Nobody => write!(f, "nobody"),
            Reach::Everyone => write!(f, "everyone"),
            Reach::Users(u) => {
                let list: Vec<&str> = u.iter().map(String::as_str).collect();
                write!(f, "users {}", list.join(", "))
            }
        }
    }
}

/// Who may receive an event: the roles that see every row of its table, and which other
/// users see this row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Audience {
    /// Roles that see every row (lowercase).
    pub roles: Arc<[String]>,
    pub reach: Reach,
}

impl Audience {
    /// Everyone who may join the event's rooms.
    pub fn everyone() -> Audience {
        Audience {
            roles: Arc::from(Vec::new()),
            reach: Reach::Everyone,
        }
    }

    /// Whether `user` sees every row through one of their roles.
    pub fn by_role(&self, user: &User) -> bool {
        user.roles.iter().any(|r| self.roles.contains(r))
    }

    pub fn admits(&self, user: &User) -> bool {
        self.by_role(user) || self.reach.admits(&user.sub)
    }
}

/// How one user receives an event, decided once per (event, user) from the event's
/// audiences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The event as it is.
    Full,
    /// The row became visible to the user: the whole row, as an insert.
    Entered,
    /// The row stopped being visible to the user: a removal carrying only the key.
    Left,
    /// A notification whose related row the user may not see: `data` is null.
    Redacted,
}

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
