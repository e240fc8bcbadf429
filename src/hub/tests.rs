//! Unit tests of the hub: rooms, queues, refresh, replay.
use super::*;
use crate::catalog::default_rooms;

fn event(seq: i64, room: &str) -> Event {
    Event {
        seq: Position(seq),
        name: "ticket.update".into(),
        event_type: "ticket.updated".into(),
        table: "public.tickets".into(),
        rooms: vec![room.into()],
        recipient: None,
        payload: serde_json::value::to_raw_value(&serde_json::json!({})).unwrap(),
        committed_at: time::OffsetDateTime::now_utc(),
        audience: crate::event::Audience::everyone(),
        before: None,
        related: None,
        variants: Default::default(),
    }
}

/// A session kicked for being too slow leaves no empty room entries behind, as `leave`
/// and `close` do not either.
#[test]
fn a_kicked_session_leaves_no_empty_rooms() {
    let config = HubConfig {
        session_queue: 16,
        ..HubConfig::default()
    };
    let hub = Arc::new(Hub::new(
        config,
        Acl::new(&default_rooms()),
        None,
        Position::ZERO,
    ));
    let user = User {
        sub: "1".into(),
        roles: vec!["agent".into()],
        exp: None,
    };
    let session = hub.open(user, Transport::WebSocket);
    let (results, _) = session.join_many(&["tickets".into(), "comments".into()]);
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(hub.room_count(), 3, "user room, tickets, comments");
    let burst: Vec<Event> = (1..=20).map(|s| event(s, "tickets")).collect();
    hub.publish(burst, Position(20));
    assert!(session.kicked.is_cancelled(), "the queue overflowed");
    assert_eq!(hub.room_count(), 0, "no room entry is left behind");
    drop(session);
    assert_eq!(hub.session_count(), 0);
}

/// Deliveries queued before a token refresh are decided again for the new token: an
/// agents-only row and a row of a room the new role may not join never reach it.
#[test]
fn a_refresh_redecides_what_is_already_queued() {
    let mut rooms = default_rooms();
    rooms.insert(
        "users".into(),
        crate::catalog::RoomConfig {
            roles: vec!["agent".into()],
        },
    );
    let hub = Arc::new(Hub::new(
        HubConfig::default(),
        Acl::new(&rooms),
        None,
        Position::ZERO,
    ));
    let user = |role: &str| User {
        sub: "3".into(),
        roles: vec![role.into()],
        exp: None,
    };
    let mut session = hub.open(user("agent"), Transport::WebSocket);
    let (results, _) = session.join_many(&["tickets".into(), "users".into()]);
    assert!(results.iter().all(|r| r.is_ok()));
    let mut agents_only = event(1, "tickets");
    agents_only.audience = crate::event::Audience {
        roles: Arc::from(vec!["agent".to_string()]),
        reach: crate::event::Reach::Nobody,
    };
    let mut own = event(2, "tickets");
    own.audience = crate::event::Audience {
        roles: Arc::from(vec!["agent".to_string()]),
        reach: crate::event::Reach::user("3".into()),
    };
    hub.publish(vec![agents_only, own, event(3, "users")], Position(3));

    let refreshed = session.refresh(user("customer")).unwrap();
    let left: Vec<&str> = refreshed.left.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(left, ["users"]);
    assert_eq!(session.rooms(), ["tickets", "user:3"]);
    hub.publish(vec![event(4, "tickets")], Position(4));
    let mut got = Vec::new();
    let mut batch = Vec::new();
    session.rx.take_into(&mut batch, 10);
    for d in batch {
        if let Some(d) = session.admit(d) {
            got.push(d.event.seq.0);
        }
    }
    assert_eq!(got, [2, 4]);
    let other = User {
        sub: "4".into(),
        ..user("agent")
    };
    assert!(session.refresh(other).is_err());
    assert_eq!(session.user.roles, ["customer"]);
}
