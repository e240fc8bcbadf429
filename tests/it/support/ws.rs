//! A real WebSocket client (tokio-tungstenite) speaking rowcast's `/ws` protocol.

use std::collections::BTreeSet;
use std::panic::Location;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

pub type Stream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsClient {
    pub stream: Stream,
    /// The close frame, once the server closed.
    pub closed: Option<Option<CloseFrame>>,
}

/// Row ids received in events and the `seq` of the last one: what a client that resumes
/// after a crash has to account for.
#[derive(Debug, Default)]
pub struct Received {
    pub ids: BTreeSet<i64>,
    pub last: String,
}

impl Received {
    fn take(&mut self, ev: &Value) -> bool {
        self.last = ev["seq"].as_str().expect("seq").to_string();
        self.ids
            .insert(ev["payload"]["id"].as_i64().expect("row id"))
    }
}

impl WsClient {
    /// Connects and reads the `welcome` frame.
    /// A client on a socket with a 4 KiB receive buffer (so that the kernel does not absorb
    /// megabytes on its behalf when it stops reading), after its `welcome`.
    pub async fn connect_small_buffer(addr: std::net::SocketAddr, url: &str) -> WsClient {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (stream, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
                .await
                .expect("WebSocket connect");
        let mut c = WsClient {
            stream,
            closed: None,
        };
        assert_eq!(c.next_json().await.unwrap()["type"], "welcome");
        c
    }

    pub async fn connect(url: &str) -> (WsClient, Value) {
        let (stream, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("WebSocket connect");
        let mut c = WsClient {
            stream,
            closed: None,
        };
        let welcome = c.next_json().await.expect("welcome frame");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .unwrap();
    }

    pub async fn send_text(&mut self, s: String) {
        self.stream.send(Message::Text(s.into())).await.unwrap();
    }

    /// Next JSON text frame, or `None` when the connection closed (see `closed`).
    pub async fn next_json(&mut self) -> Option<Value> {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.stream.next()).await {
                Err(_) => panic!("no frame within 15 s"),
                Ok(None) => return None,
                Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(Message::Close(f)))) => {
                    self.closed = Some(f);
                    return None;
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Next frame within `ms`, or `None` if nothing arrives.
    pub async fn maybe_json(&mut self, ms: u64) -> Option<Value> {
        tokio::time::timeout(Duration::from_millis(ms), self.next_json())
            .await
            .unwrap_or_default()
    }

    /// Joins a room and waits for the `joined` answer.
    #[track_caller]
    pub fn join<'a>(&'a mut self, room: &'a str) -> impl std::future::Future<Output = Value> + 'a {
        let at = Location::caller();
        async move {
            self.send(json!({"type": "join", "room": room})).await;
            let v = self
                .next_json()
                .await
                .unwrap_or_else(|| panic!("closed while joining (at {at})"));
            assert_eq!(v["type"], "joined", "join {room} (at {at}): {v}");
            assert_eq!(v["room"], room, "join {room} (at {at}): {v}");
            v
        }
    }

    /// Next frame of type `event`, skipping others.
    #[track_caller]
    pub fn next_event(&mut self) -> impl std::future::Future<Output = Value> + '_ {
        let at = Location::caller();
        async move {
            loop {
                let v = self.next_json().await.unwrap_or_else(|| {
                    panic!(
                        "closed while waiting for an event (at {at}): {:?}",
                        self.closed
                    )
                });
                if v["type"] == "event" {
                    return v;
                }
            }
        }
    }

    /// Events until `got` holds `n` row ids.
    pub async fn receive_ids(&mut self, got: &mut Received, n: usize) {
        while got.ids.len() < n {
            let ev = self.next_event().await;
            got.take(&ev);
        }
    }

    /// The events still in flight after the server died: until 200 ms pass without a frame
    /// (then the connection is gone).
    pub async fn drain_ids(&mut self, got: &mut Received) {
        while let Some(v) = self.maybe_json(200).await {
            if v["type"] == "event" {
                got.take(&v);
            }
        }
    }

    /// Events until every id of `want` has been received (within `secs`); returns the ids
    /// received.
    #[track_caller]
    pub fn receive_all<'a>(
        &'a mut self,
        want: &'a BTreeSet<i64>,
        secs: u64,
    ) -> impl std::future::Future<Output = BTreeSet<i64>> + 'a {
        let at = Location::caller();
        async move {
            let mut seen = BTreeSet::new();
            let deadline = Instant::now() + Duration::from_secs(secs);
            while !want.is_subset(&seen) {
                assert!(
                    Instant::now() < deadline,
                    "not delivered (at {at}): {:?}",
                    want.difference(&seen).take(10).collect::<Vec<_>>()
                );
                let ev = self.next_event().await;
                seen.insert(ev["payload"]["id"].as_i64().expect("row id"));
            }
            seen
        }
    }

    /// On a session resumed after `got.last`: events in increasing `seq`, none twice, until
    /// every id of `want` has been received (30 s at the most).
    #[track_caller]
    pub fn resume_ids<'a>(
        &'a mut self,
        got: &'a mut Received,
        want: &'a BTreeSet<i64>,
    ) -> impl std::future::Future<Output = ()> + 'a {
        let at = Location::caller();
        async move {
            let mut prev: i64 = got.last.parse().expect("a resumed seq");
            let deadline = Instant::now() + Duration::from_secs(30);
            while !want.is_subset(&got.ids) {
                assert!(
                    Instant::now() < deadline,
                    "missing (at {at}): {:?}",
                    want.difference(&got.ids).take(10).collect::<Vec<_>>()
                );
                let ev = self.next_event().await;
                let seq: i64 = ev["seq"].as_str().unwrap().parse().unwrap();
                assert!(
                    seq > prev,
                    "in order, no duplicates ({prev} then {seq}) (at {at})"
                );
                prev = seq;
                assert!(got.take(&ev), "no event twice (at {at}): {ev}");
            }
        }
    }
}
