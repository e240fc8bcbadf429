//! A real HTTP webhook receiver: `tests/js/receiver.mjs` under node, which verifies every
//! request with the npm `standardwebhooks` library and reports it as a JSON line.

use std::panic::Location;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

pub struct Receiver {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<Value>,
    pub port: u16,
}

impl Receiver {
    /// Starts the receiver with `args` (`--port`, `--fail-first`, `--hold-first`, `--status`).
    /// Installs the npm packages first if they are missing; panics with a clear message when
    /// node or the packages are missing and cannot be installed.
    pub async fn start(args: &[&str]) -> Receiver {
        let dir = super::install::npm_packages_async().await;
        let mut child = Command::new("node")
            .arg("receiver.mjs")
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node` (needed for webhook tests): {e}"));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("receiver: {line}"),
                }
            }
        });
        let mut r = Receiver {
            child,
            stdin,
            lines,
            port: 0,
        };
        let first = r.next_line().await;
        r.port = first["listening"]
            .as_u64()
            .unwrap_or_else(|| panic!("receiver did not start: {first}")) as u16;
        r
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Registers a secret to verify with.
    pub async fn add_secret(&mut self, secret: &str) {
        let line = format!("{}\n", json!({ "secret": secret }));
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let ack = self.next_line().await;
        assert_eq!(ack["ack"], "secret", "{ack}");
    }

    #[track_caller]
    fn next_line(&mut self) -> impl Future<Output = Value> + '_ {
        let at = Location::caller();
        async move {
            match tokio::time::timeout(Duration::from_secs(20), self.lines.recv()).await {
                Ok(Some(v)) => v,
                Ok(None) => panic!("receiver exited (waited at {at})"),
                Err(_) => panic!("no request reached the receiver within 20 s (waited at {at})"),
            }
        }
    }

    /// The next request, asserted to carry a valid Standard Webhooks signature.
    #[track_caller]
    pub fn next(&mut self) -> impl Future<Output = Value> + '_ {
        let at = Location::caller();
        async move {
            let r = self.next_line().await;
            assert_eq!(
                r["verified"], true,
                "standardwebhooks rejected a request (at {at}): {r}"
            );
            r
        }
    }

    /// A request arriving within `ms`, if any.
    pub async fn maybe_next(&mut self, ms: u64) -> Option<Value> {
        tokio::time::timeout(Duration::from_millis(ms), self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}
