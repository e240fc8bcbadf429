//! Who may join which room: per-room role allow-lists, and private `user:<sub>` rooms.

use std::collections::BTreeMap;

use crate::catalog::RoomConfig;
use crate::event::User;

/// Longest room name a client may ask for (its own user room excepted).
pub const MAX_ROOM_NAME: usize = 200;

/// Why a join was refused. The message is shown to the client as is.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("room {0:?} does not exist")]
    UnknownRoom(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("a room name is 1 to {MAX_ROOM_NAME} characters")]
    BadName,
    #[error("a session may be in at most {0} rooms")]
    TooManyRooms(usize),
}

impl JoinError {
    /// Stable machine-readable code for error frames and acknowledgements.
    pub fn code(&self) -> &'static str {
        match self {
            JoinError::UnknownRoom(_) => "unknown_room",
            JoinError::Forbidden(_) => "forbidden",
            JoinError::BadName => "bad_request",
            JoinError::TooManyRooms(_) => "too_many_rooms",
        }
    }
}

/// Room allow-lists from the configuration. `prefix:*` entries cover every `prefix:<x>`.
#[derive(Debug, Clone)]
pub struct Acl {
    exact: BTreeMap<String, Vec<String>>,
    prefixes: Vec<(String, Vec<String>)>,
}

impl Acl {
    pub fn new(rooms: &BTreeMap<String, RoomConfig>) -> Acl {
        let mut exact = BTreeMap::new();
        let mut prefixes = Vec::new();
        for (name, rc) in rooms {
            // Roles compare case-insensitively, as tokens' roles do.
            let roles: Vec<String> = rc.roles.iter().map(|r| r.to_lowercase()).collect();
            match name.strip_suffix('*') {
                Some(prefix) => prefixes.push((prefix.to_string(), roles)),
                None => {
                    exact.insert(name.clone(), roles);
                }
            }
        }
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Acl { exact, prefixes }
    }

    /// Whether `user` may join `room`. The user's own `user:<sub>` room is exempt from the
    /// name limit: its length is the token's (`auth::MAX_SUB_BYTES`), not the client's choice.
    pub fn check(&self, user: &User, room: &str) -> Result<(), JoinError> {
        if room.strip_prefix("user:") == Some(user.sub.as_str()) {
            return Ok(());
        }
        if room.is_empty() || room.len() > MAX_ROOM_NAME {
            return Err(JoinError::BadName);
        }
        if room.starts_with("user:") {
            return Err(JoinError::Forbidden(
                "user rooms are private: you may only be in your own user room".into(),
            ));
        }
        let roles = self.exact.get(room).or_else(|| {
            self.prefixes
                .iter()
                .find(|(p, _)| room.len() > p.len() && room.starts_with(p.as_str()))
                .map(|(_, r)| r)
        });
        let Some(roles) = roles else {
            return Err(JoinError::UnknownRoom(room.to_string()));
        };
        if roles.iter().any(|r| r == "*" || user.roles.contains(r)) {
            Ok(())
        } else {
            Err(JoinError::Forbidden(format!(
                "your role ({}) may not join {room:?}; allowed: {}",
                if user.roles.is_empty() {
                    "none".to_string()
                } else {
                    user.roles.join(", ")
                },
                roles.join(", ")
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::default_rooms;

    fn user(sub: &str, role: &str) -> User {
        User {
            sub: sub.into(),
            roles: vec![role.into()],
            exp: None,
        }
    }

    #[test]
    fn default_allow_lists() {
        let acl = Acl::new(&default_rooms());
        let agent = user("1", "agent");
        let customer = user("3", "customer");
        assert!(acl.check(&agent, "tickets").is_ok());
        assert!(acl.check(&agent, "tickets:12").is_ok());
        assert!(acl.check(&agent, "users").is_ok());
        // Every role may join the helpdesk's rooms: rows are filtered by audience.
        for room in [
            "tickets",
            "tickets:12",
            "comments",
            "attachments",
            "users",
            "kb",
        ] {
            assert!(acl.check(&customer, room).is_ok(), "{room}");
        }
        assert!(acl.check(&customer, "user:3").is_ok());
        assert_eq!(acl.check(&agent, "user:3").unwrap_err().code(), "forbidden");
        assert_eq!(
            acl.check(&agent, "nope").unwrap_err().code(),
            "unknown_room"
        );
        assert_eq!(
            acl.check(&agent, "tickets:").unwrap_err().code(),
            "unknown_room"
        );
        assert_eq!(acl.check(&agent, "").unwrap_err().code(), "bad_request");
    }

    #[test]
    fn the_own_user_room_is_exempt_from_the_name_limit() {
        let acl = Acl::new(&default_rooms());
        let long = user(&"u".repeat(1024), "customer");
        assert!(acl.check(&long, &long.room()).is_ok());
        let other = format!("user:{}", "v".repeat(1024));
        assert_eq!(acl.check(&long, &other).unwrap_err().code(), "bad_request");
        assert_eq!(
            acl.check(&long, &"t".repeat(201)).unwrap_err().code(),
            "bad_request"
        );
    }

    #[test]
    fn allow_lists_refuse_other_roles_case_insensitively() {
        let mut rooms = BTreeMap::new();
        rooms.insert(
            "tickets".to_string(),
            RoomConfig {
                roles: vec!["Agent".into()],
            },
        );
        let acl = Acl::new(&rooms);
        assert!(acl.check(&user("1", "agent"), "tickets").is_ok());
        assert_eq!(
            acl.check(&user("3", "customer"), "tickets")
                .unwrap_err()
                .code(),
            "forbidden"
        );
    }
}
