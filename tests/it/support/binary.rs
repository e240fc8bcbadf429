//! The real `rowcast serve` binary configured as in a container (TOML file + env), with its
//! logs captured line by line: for metrics, logs and signal tests.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::panic::Location;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value as PromValue};
use serde_json::Value;

/// A running `rowcast serve`. Killed on drop if still running.
pub struct Rowcast {
    child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl Rowcast {
    /// Starts `rowcast serve` on `127.0.0.1:0` against `database_url`, configured as in a
    /// container: a TOML file named by `ROWCAST_CONFIG` (JSON logs, 5 s shutdown deadline),
    /// secrets and overrides from the environment, `env` on top (nothing is inherited from
    /// the test's own `ROWCAST_*`, `DATABASE_URL` or `RUST_LOG`). Waits until `/readyz`
    /// answers 200.
    #[track_caller]
    pub fn spawn<'a>(
        database_url: &'a str,
        env: &'a [(&'a str, &'a str)],
    ) -> impl std::future::Future<Output = Rowcast> + 'a {
        let at = Location::caller();
        async move {
            let dir = TempDir::new();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowcast"));
            cmd.arg("serve")
                .current_dir(&dir.0)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, _) in std::env::vars() {
                if k.starts_with("ROWCAST_") || k == "DATABASE_URL" || k == "RUST_LOG" {
                    cmd.env_remove(k);
                }
            }
            let config = dir.0.join("etc").join("rowcast.toml");
            std::fs::create_dir_all(config.parent().unwrap()).unwrap();
            std::fs::write(
                &config,
                "shutdown_timeout = \"5s\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n",
            )
            .unwrap();
            cmd.env("ROWCAST_CONFIG", &config)
                .env("DATABASE_URL", database_url)
                .env("ROWCAST_LISTEN", "127.0.0.1:0")
                .env("ROWCAST_JWT_SECRET", super::SECRET);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("start the rowcast binary");
            let lines = Arc::new(Mutex::new(Vec::new()));
            let (addr_tx, addr_rx) = std::sync::mpsc::channel();
            let mut readers = Vec::new();
            for stream in [
                Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
                Box::new(child.stderr.take().expect("stderr")),
            ] {
                let lines = lines.clone();
                let addr_tx = addr_tx.clone();
                readers.push(std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        if let Some(addr) = serving_addr(&line) {
                            let _ = addr_tx.send(addr);
                        }
                        lines.lock().unwrap().push(line);
                    }
                }));
            }
            let started = Instant::now();
            let addr = loop {
                if let Ok(addr) = addr_rx.try_recv() {
                    break addr;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    let logs = lines.lock().unwrap().join("\n");
                    panic!("rowcast exited with {status} before serving (at {at}):\n{logs}");
                }
                if started.elapsed() > Duration::from_secs(30) {
                    panic!("rowcast did not log its listen address within 30 s (at {at})");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let rc = Rowcast {
                child,
                addr,
                lines,
                readers,
                _dir: dir,
            };
            let url = format!("{}/readyz", rc.http());
            super::eventually(20, || {
                let url = url.clone();
                async move {
                    let r = reqwest::get(&url).await.ok()?;
                    r.status().is_success().then_some(())
                }
            })
            .await;
            rc
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown at all, like a crashed pod; returns once the process is gone.
    pub fn kill_9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, as Kubernetes does when it stops a pod.
    pub fn terminate(&self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we own and a valid signal number; no memory involved.
        let r = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(r, 0, "kill -TERM {pid}");
    }

    /// Waits for the process to exit, at most `within`; returns its status and how long it took.
    #[track_caller]
    pub fn wait_exit(
        &mut self,
        within: Duration,
    ) -> impl std::future::Future<Output = (ExitStatus, Duration)> + '_ {
        let at = Location::caller();
        async move {
            let started = Instant::now();
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    let took = started.elapsed();
                    // The pipes close with the process: wait until every line is read.
                    let readers = std::mem::take(&mut self.readers);
                    tokio::task::spawn_blocking(move || {
                        for r in readers {
                            let _ = r.join();
                        }
                    })
                    .await
                    .unwrap();
                    return (status, took);
                }
                if started.elapsed() > within {
                    let _ = self.child.kill();
                    panic!(
                        "rowcast still running {within:?} after the signal (at {at}); logs:\n{}",
                        self.logs().join("\n")
                    );
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    /// Every line written to stdout and stderr so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

impl Drop for Rowcast {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address from the JSON "rowcast serving" line.
fn serving_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "rowcast serving" {
        return None;
    }
    v["listen"].as_str()?.parse().ok()
}

/// A temporary working directory (so no stray `rowcast.toml` is picked up), removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rowcast-proc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The process's `/metrics`, parsed.
pub async fn scrape(rc: &Rowcast) -> Scrape {
    let res = reqwest::get(format!("{}/metrics", rc.http()))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ctype = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = res.text().await.unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// The value of `name` with exactly `labels` (counters, gauges, untyped), if present.
pub fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| {
            x.metric == name
                && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
                && x.labels.len() == labels.len()
        })
        .map(|x| match &x.value {
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => *v,
            other => panic!("{name} is not a single value: {other:?}"),
        })
}

/// Number of observations of histogram `name` (its `+Inf` bucket).
pub fn histogram_count(s: &Scrape, name: &str) -> f64 {
    let sample = s
        .samples
        .iter()
        .find(|x| x.metric == name)
        .unwrap_or_else(|| panic!("histogram {name} missing"));
    match &sample.value {
        PromValue::Histogram(buckets) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map(|b| b.count)
            .expect("+Inf bucket"),
        other => panic!("{name} is not a histogram: {other:?}"),
    }
}

/// The process's `/readyz` answer: its status code and body.
pub async fn readyz(rc: &Rowcast) -> (u16, Value) {
    let res = reqwest::get(format!("{}/readyz", rc.http())).await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}
