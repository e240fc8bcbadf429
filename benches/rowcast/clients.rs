//! Benchmark clients: `/ws` and raw Socket.IO (engine.io v4 over WebSocket) connections in
//! this process, and the real npm `socket.io-client` driven by `tests/js/bench_sio.mjs`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt, stream};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Small buffers: thousands of clients live in this process.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(8 * 1024)
        .write_buffer_size(0)
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("connection ended during setup: {other:?}"),
        }
    }
}

/// A `/ws` client that joined the rooms in `url` (waits for `welcome` and `joined`).
pub async fn ws(url: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), false)
        .await
        .expect("connect /ws");
    let welcome = next_text(&mut ws).await;
    assert!(welcome.contains("\"welcome\""), "{welcome}");
    if url.contains("rooms=") {
        let joined = next_text(&mut ws).await;
        assert!(joined.contains("\"joined\""), "{joined}");
    }
    ws
}

/// The `seq` in a `/ws` welcome: the hub's position when the session opened.
pub async fn hub_position(url: &str) -> i64 {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config()), false)
        .await
        .expect("connect /ws");
    let welcome: serde_json::Value =
        serde_json::from_str(&next_text(&mut ws).await).expect("welcome is JSON");
    let _ = ws.close(None).await;
    welcome["seq"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("welcome has a seq")
}

/// The next Socket.IO packet, answering engine.io pings on the way.
async fn next_packet(ws: &mut Ws) -> String {
    loop {
        let t = next_text(ws).await;
        if t == "2" {
            ws.send(Message::Text("3".into())).await.expect("pong");
            continue;
        }
        return t;
    }
}

/// Joins a connected Socket.IO client to `room` and waits for the acknowledgement.
async fn join(mut ws: Ws, room: &str) -> Ws {
    let join = format!("421{}", serde_json::json!(["join", room]));
    ws.send(Message::Text(join.into())).await.expect("send");
    loop {
        let ack = next_packet(&mut ws).await;
        if ack.starts_with("431") {
            assert!(ack.contains("\"ok\":true"), "join: {ack}");
            return ws;
        }
    }
}

/// A Socket.IO v4 client speaking the wire protocol directly (engine.io v4 over WebSocket,
/// default namespace), joined to `room`. Cheap enough for 10,000 in one process.
pub async fn socketio(port: u16, token: &str, room: &str) -> Ws {
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config()), false)
        .await
        .expect("connect /socket.io/");
    let open = next_text(&mut ws).await;
    assert!(open.starts_with('0'), "engine.io open packet: {open}");
    let connect = format!("40{}", serde_json::json!({ "token": token }));
    ws.send(Message::Text(connect.into())).await.expect("send");
    let ok = next_packet(&mut ws).await;
    assert!(ok.starts_with("40"), "Socket.IO connect: {ok}");
    join(ws, room).await
}

/// The same, opened the way `socket.io-client` does by default: an engine.io session over
/// HTTP long polling, the Socket.IO connect over polling, then the upgrade to WebSocket
/// (`2probe` / `3probe` / `5`), and the join over the WebSocket.
pub async fn socketio_upgraded(http: &reqwest::Client, port: u16, token: &str, room: &str) -> Ws {
    let polling = format!("http://127.0.0.1:{port}/socket.io/?EIO=4&transport=polling");
    let get = |url: String| async move {
        let r = http.get(&url).send().await.expect("polling GET");
        assert!(r.status().is_success(), "polling GET: {}", r.status());
        r.text().await.expect("polling body")
    };
    let open = get(polling.clone()).await;
    let open: serde_json::Value = open
        .strip_prefix('0')
        .and_then(|o| serde_json::from_str(o).ok())
        .unwrap_or_else(|| panic!("engine.io open packet: {open}"));
    let sid = open["sid"].as_str().expect("sid").to_string();
    let session = format!("{polling}&sid={sid}");
    let post = |body: String| {
        let url = session.clone();
        async move {
            let r = http
                .post(&url)
                .body(body)
                .send()
                .await
                .expect("polling POST");
            assert!(r.status().is_success(), "polling POST: {}", r.status());
        }
    };
    post(format!("40{}", serde_json::json!({ "token": token }))).await;
    'connect: loop {
        let body = get(session.clone()).await;
        for packet in body.split('\u{1e}') {
            if packet == "2" {
                post("3".into()).await;
            } else if packet.starts_with("40") {
                break 'connect;
            } else {
                assert!(!packet.starts_with("44"), "Socket.IO connect: {packet}");
            }
        }
    }
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config()), false)
        .await
        .expect("upgrade to WebSocket");
    ws.send(Message::Text("2probe".into()))
        .await
        .expect("probe");
    let probe = next_text(&mut ws).await;
    assert_eq!(probe, "3probe", "upgrade probe answer");
    ws.send(Message::Text("5".into())).await.expect("upgrade");
    join(ws, room).await
}

/// Answers engine.io pings (/ws pings are answered by tungstenite) and otherwise discards everything, until the connection ends.
pub async fn idle(mut ws: Ws) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m
            && t.as_str() == "2"
            && ws.send(Message::Text("3".into())).await.is_err()
        {
            return;
        }
    }
}

/// Opens `n` connections with `make`, `parallel` at a time.
pub async fn many<F, Fut>(n: usize, parallel: usize, make: F) -> Vec<Ws>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Ws>,
{
    stream::iter(0..n)
        .map(make)
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// The key `k` of an update written by the bench (`subject = "b<k>"`) in an event's text,
/// without parsing the whole JSON.
pub fn bench_key(text: &str) -> Option<u64> {
    let at = text.find("\"subject\":\"b")? + "\"subject\":\"b".len();
    let digits: &str = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// `node tests/js/bench_sio.mjs`: N real `socket.io-client` sockets in one room. Each
/// received event is recorded as `(key, epoch ms)`; the lines come when stdin closes.
pub struct NodeClients {
    child: Child,
}

impl NodeClients {
    pub async fn start(base: &str, token: &str, n: usize, room: &str) -> NodeClients {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "the npm clients are not installed: run `npm ci --no-audit --no-fund` in tests/js (or `cargo test`, which installs them)"
        );
        let mut child = Command::new("node")
            .arg(dir.join("bench_sio.mjs"))
            .args([base, token, &n.to_string(), room, "ticket.update"])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("cannot run `node` (Node.js 18+)");
        let stdout = child.stdout.as_mut().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
            .await
            .expect("node clients not ready within 120 s")
            .expect("read node output");
        assert_eq!(ready.as_deref(), Some("ready"), "node clients: {ready:?}");
        NodeClients { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// Ends the clients and returns every `(key, epoch ms)` they received.
    pub async fn finish(mut self) -> Vec<(u64, f64)> {
        let mut stdin = self.child.stdin.take().expect("stdin");
        let _ = stdin.shutdown().await;
        drop(stdin);
        let stdout = self.child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut out = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            if l == "end" {
                break;
            }
            let mut it = l.split(' ');
            if let (Some(k), Some(t)) = (it.next(), it.next())
                && let (Ok(k), Ok(t)) = (k.parse(), t.parse())
            {
                out.push((k, t));
            }
        }
        let _ = self.child.kill().await;
        out
    }
}
