//! The JS side, against a real rowcast + PostgreSQL: the `@rowcast/client` package under
//! `node --test` (`client/test/`), and the console page in headless Chromium
//! (`tests/js/console.test.mjs`). Scripts drive SQL and restarts through
//! `support::control`; a failing (or missing) node or Chromium fails the test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{self, control::Control, install};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `node --test` on `files` with the control env; panics with node's output on failure.
async fn node_test(files: &[&str], ctl: &Control, extra: &[(&str, String)]) {
    let root = repo();
    // The suites load ws, socket.io-client and playwright-core from tests/js/node_modules:
    // installed here when missing, as for every other node script of the tests.
    install::npm_packages_async().await;
    let mut cmd = tokio::process::Command::new("node");
    cmd.current_dir(&root)
        .arg("--test")
        .arg("--test-reporter=spec")
        .arg("--test-concurrency=1")
        .args(files)
        .env("ROWCAST_URL", &ctl.rowcast)
        .env("ROWCAST_CONTROL", &ctl.url)
        .kill_on_drop(true);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = match tokio::time::timeout(Duration::from_secs(120), cmd.output()).await {
        Err(_) => panic!("node --test {files:?} did not finish within 120 s"),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("`node` is not installed: the JS client tests need Node.js 20 or newer")
        }
        Ok(Err(e)) => panic!("cannot run node: {e}"),
        Ok(Ok(out)) => out,
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "node --test {files:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // A suite that ran nothing must not pass.
    assert!(
        stdout.contains("pass") && !stdout.contains("\u{2139} pass 0"),
        "node --test {files:?} ran no tests:\n{stdout}"
    );
}

async fn start() -> (support::Db, Control) {
    // The JS suites test refused joins against the staff-only allow-lists.
    let (db, server) = support::start_with(|c| c.rooms = support::staff_rooms()).await;
    let ctl = Control::start(&db, server).await;
    (db, ctl)
}

/// Reconnect and resume (dropped connection and server restart), token refresh, the
/// reducers, `processWebhookPayload`, and every server frame of the shared fixture
/// (`tests/fixtures/server-frames.json`) fed to both transports.
#[tokio::test]
async fn js_client_suite() {
    let (_db, ctl) = start().await;
    node_test(
        &[
            "client/test/state.test.js",
            "client/test/frames.test.js",
            "client/test/webhook-payload.test.js",
            "client/test/ws.test.js",
            "client/test/console-assets.test.js",
        ],
        &ctl,
        &[],
    )
    .await;
    ctl.shutdown().await;
}

/// How to get the browser of the console test (a documented prerequisite, not installed by
/// the tests).
const INSTALL_CHROMIUM: &str = "the console test drives Chromium headless. Install it with \
     `apt-get update && apt-get install -y chromium` (Debian, as root or with sudo), or set \
     CHROMIUM_PATH to a Chromium or Chrome binary";

/// `CHROMIUM_PATH`, else `chromium` or `chromium-browser` on `PATH`; panics saying how to
/// install it.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM_PATH") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "CHROMIUM_PATH={} is not a file: {INSTALL_CHROMIUM}",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|n| dir.join(n)))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("Chromium is not installed (no chromium or chromium-browser on PATH): {INSTALL_CHROMIUM}")
        })
}

/// The console in headless Chromium: connects with a token from the URL, shows an UPDATE,
/// turns yellow while rowcast is down and green when it is back; saves a screenshot.
#[tokio::test]
async fn console_in_chromium() {
    let browser = chromium();
    let (_db, ctl) = start().await;
    let shots = support::install::target_dir().join("test-artifacts");
    std::fs::create_dir_all(&shots).expect("create target/test-artifacts");
    node_test(
        &["tests/js/console.test.mjs"],
        &ctl,
        &[
            ("ARTIFACTS_DIR", shots.display().to_string()),
            ("CHROMIUM_PATH", browser.display().to_string()),
        ],
    )
    .await;
    assert!(
        Path::new(&shots.join("console.png")).is_file(),
        "the browser test saved no screenshot"
    );
    ctl.shutdown().await;
}

/// The Socket.IO transport of the client (needs the Socket.IO endpoint, issue 3).
#[tokio::test]

async fn js_client_socketio() {
    let (_db, ctl) = start().await;
    node_test(&["client/test/socketio.test.js"], &ctl, &[]).await;
    ctl.shutdown().await;
}

/// The webhook helpers against the real webhook API (issue 4).
#[tokio::test]
async fn js_webhook_helpers_api() {
    // The receiver runs on loopback in the node test: allow it past the SSRF guard.
    let (db, server) = support::start_with(|c| {
        c.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
        c.webhook.retry_schedule = vec![Duration::from_millis(200)];
    })
    .await;
    let ctl = Control::start(&db, server).await;
    node_test(&["client/test/webhook-api.test.js"], &ctl, &[]).await;
    ctl.shutdown().await;
}
