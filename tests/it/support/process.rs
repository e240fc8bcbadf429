//! rowcast as a child process (`rowcast serve`), for tests that kill it with SIGKILL.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

pub struct Process {
    pub child: Child,
    pub port: u16,
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Process {
    /// Starts `rowcast serve` with `env` (plus the database, a free port and the test JWT
    /// secret) and waits until `/readyz` answers 200.
    pub async fn serve(database_url: &str, env: &[(&str, &str)]) -> Process {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_rowcast"))
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWCAST_JWT_SECRET", super::SECRET)
            .env("ROWCAST_LOG_LEVEL", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the rowcast binary");
        let mut p = Process { child, port };
        let url = format!("http://127.0.0.1:{port}/readyz");
        let http = reqwest::Client::new();
        for _ in 0..300 {
            if let Ok(r) = http.get(&url).send().await
                && r.status().is_success()
            {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("rowcast exited before it was ready: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = p.child.kill().await;
        panic!("rowcast not ready after 15 s");
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: no shutdown, no lease released.
    pub async fn kill9(mut self) {
        self.child.kill().await.expect("kill rowcast");
    }
}
