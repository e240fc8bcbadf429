//! A real WebSocket client (tokio-tungstenite) speaking rowcast's `/ws` protocol.

use std::panic::Location;
use std::time::Duration;

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

impl WsClient {
    /// Connects and reads the `welcome` frame.
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
            .ok()
            .flatten()
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
}
