//! Real npm clients (socket.io-client, eventsource) run by node scripts in `tests/js`,
//! talking JSON lines over stdin/stdout. `tests/js/node_modules` is installed on first use
//! when it is missing (`support::install`).

use std::collections::VecDeque;
use std::panic::Location;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// A running node script. Killed on drop.
pub struct Node {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    /// Lines read but not yet asked for.
    pending: VecDeque<Value>,
}

impl Node {
    /// Starts `node tests/js/<script> <args>`, installing the npm packages first if they
    /// are missing ([`super::install::npm_packages`]). Panics with a clear message when
    /// node or the packages are missing and cannot be installed (never skips).
    pub fn start(script: &str, args: &[&str]) -> Node {
        let dir = super::install::npm_packages();
        let mut child = Command::new("node")
            .arg(dir.join(script))
            .args(args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run `node` (Node.js 18+ is needed for the client tests): {e}")
            });
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        Node {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
            pending: VecDeque::new(),
        }
    }

    /// Sends one command line.
    pub async fn send(&mut self, v: Value) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin
            .write_all(format!("{v}\n").as_bytes())
            .await
            .expect("write to node");
        stdin.flush().await.expect("flush to node");
    }

    /// Closes stdin: the scripts finish and exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next output line within `secs` (lines set aside by `next_where` first), or
    /// `None` if nothing arrives.
    pub async fn maybe_next(&mut self, secs: f64) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        self.read_line(secs).await
    }

    /// The lines set aside by `next_where`, then whatever else arrives until `secs` pass
    /// without a line.
    pub async fn drain(&mut self, secs: f64) -> Vec<Value> {
        let mut out: Vec<Value> = self.pending.drain(..).collect();
        while let Some(v) = self.read_line(secs).await {
            out.push(v);
        }
        out
    }

    async fn read_line(&mut self, secs: f64) -> Option<Value> {
        match tokio::time::timeout(Duration::from_secs_f64(secs), self.lines.next_line()).await {
            Err(_) => None,
            Ok(Ok(Some(line))) => Some(
                serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("node printed a non-JSON line {line:?}: {e}")),
            ),
            Ok(Ok(None)) => panic!("node exited: {:?}", self.child.try_wait()),
            Ok(Err(e)) => panic!("reading node output: {e}"),
        }
    }

    /// The next output line that satisfies `pred`; lines that do not are kept, in order,
    /// for later calls (several sockets share one output). Panics after `secs`.
    #[track_caller]
    pub fn next_where<'a>(
        &'a mut self,
        secs: u64,
        pred: impl Fn(&Value) -> bool + 'a,
    ) -> impl std::future::Future<Output = Value> + 'a {
        let at = Location::caller();
        async move {
            if let Some(i) = self.pending.iter().position(&pred) {
                return self.pending.remove(i).expect("index in range");
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.read_line(left.as_secs_f64()).await {
                    Some(v) if pred(&v) => return v,
                    Some(v) => self.pending.push_back(v),
                    None => panic!(
                        "no matching line from node within {secs} s (at {at}); unmatched: {:?}",
                        self.pending
                    ),
                }
            }
        }
    }
}
