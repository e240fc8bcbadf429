//! rowcast as a child process (the real binary), for tests that kill or signal it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rowcast::Settings as Config;

pub struct Proc {
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

impl Proc {
    /// Starts `rowcast serve` against `database_url` with the test JWT secret on a free
    /// port, `env` on top.
    pub async fn serve(database_url: &str, env: &[(&str, &str)]) -> Proc {
        let mut config = rowcast::Settings {
            database_url: Some(database_url.to_string()),
            ..Default::default()
        };
        config.jwt.secret = Some(super::SECRET.to_string());
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        Proc::start(&config, 0, &env).await
    }

    /// Starts `rowcast serve` for `config` (database, JWT secret, capture mode) on `port`
    /// (0 = free port)
    /// and waits until `/readyz` answers 200.
    pub async fn start(config: &Config, port: u16, extra_env: &[(&str, String)]) -> Proc {
        let port = if port == 0 { free_port() } else { port };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowcast"));
        cmd.arg("serve")
            .env("DATABASE_URL", config.database_url.as_deref().unwrap())
            .env("ROWCAST_JWT_SECRET", config.jwt.secret.as_deref().unwrap())
            .env("ROWCAST_LISTEN", format!("127.0.0.1:{port}"))
            .env("ROWCAST_CAPTURE_MODE", config.capture.mode.as_str())
            .env("ROWCAST_LOG_LEVEL", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start rowcast");
        let p = Proc { child, port };
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                && r.status().is_success()
            {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "rowcast on port {port} not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://127.0.0.1:{}/ws?{query}", self.port)
    }

    pub fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal by name (`TERM`, `INT`).
    pub fn signal(&self, sig: &str) {
        Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}
