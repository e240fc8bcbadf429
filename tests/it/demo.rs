//! `rowcast demo`, the embedded default, run as a newcomer would.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::ws::WsClient;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_a_live_helpdesk_and_cleans_up() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .args(["demo", "--listen", "127.0.0.1:0"])
        .env_remove("DATABASE_URL")
        .env("ROWCAST_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rowcast demo");
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut console = None;
    let mut agent = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while console.is_none() || agent.is_none() {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("demo prints its URL and tokens");
        if let Some(url) = line.trim().strip_prefix("console (agent):") {
            console = Some(url.trim().to_string());
        }
        if let Some(t) = line.trim().strip_prefix("agent    (sub 1):") {
            agent = Some(t.trim().to_string());
        }
    }
    let console = console.unwrap();
    let base = console.split("/?token=").next().unwrap().to_string();
    let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
    assert!(ready.status().is_success());
    let ws = format!(
        "{}/ws?token={}&rooms=tickets,comments,kb,users",
        base.replacen("http", "ws", 1),
        agent.unwrap()
    );
    let (mut c, _) = WsClient::connect(&ws).await;
    // The workload makes changes every second or two.
    let ev = c.next_event().await;
    assert!(ev["event"].as_str().unwrap().ends_with(".update"), "{ev}");
    assert!(!ev.to_string().contains("password_hash"));
    // Ctrl-C stops it and removes the throwaway cluster.
    Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "demo did not stop on Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("rowcast-pg-{pid}-"))
        })
        .collect();
    assert!(leftovers.is_empty(), "demo left {leftovers:?}");
}
