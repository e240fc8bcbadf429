//! Test support: a throwaway PostgreSQL per test, rowcast on a free port, real clients.

#![allow(dead_code)]

pub mod binary;
pub mod control;
pub mod install;
pub mod node;
pub mod process;
pub mod proxy;
pub mod receiver;
pub mod writer;
pub mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::Location;
use std::time::Duration;

use rowcast::Settings as Config;
use rowcast::api::auth::Authenticator;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-secret-0123456789abcdef";

/// A token for `sub` with `role`, signed with [`SECRET`] (what every test configuration and
/// the binaries the tests start verify against), valid for an hour.
pub fn token(sub: &str, role: &str) -> String {
    let mut config = Config::default();
    config.jwt.secret = Some(SECRET.into());
    Authenticator::from_config(&config.jwt)
        .unwrap()
        .issue(sub, role, 3600)
        .unwrap()
}

/// A database with the demo helpdesk schema (seeded) and rowcast migrated.
pub struct Db {
    pub pg: PgTemp,
    pub url: String,
}

impl Db {
    pub async fn start() -> Db {
        Db::start_with(PgTempOptions::default()).await
    }

    pub async fn start_with(options: PgTempOptions) -> Db {
        let pg = tokio::task::spawn_blocking(move || PgTemp::start(options))
            .await
            .unwrap()
            .expect("start a throwaway PostgreSQL");
        let url = pg.url("postgres");
        let db = Db { pg, url };
        let client = db.client().await;
        rowcast::demo::load_helpdesk(&client, true)
            .await
            .expect("load demo schema");
        db
    }

    /// A new connection (its driver runs in the background).
    pub async fn client(&self) -> tokio_postgres::Client {
        connect(&self.url).await
    }

    /// The single number a query such as `SELECT count(*) …` returns.
    pub async fn count(&self, sql: &str) -> i64 {
        self.client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }

    pub fn config(&self) -> Config {
        let mut c = Config::default();
        c.apply_defaults();
        c.database_url = Some(self.url.clone());
        c.listen = "127.0.0.1:0".parse().unwrap();
        c.jwt.secret = Some(SECRET.into());
        c.shutdown_timeout = Duration::from_secs(5);
        c
    }

    pub async fn migrate(&self, config: &Config) {
        let mut client = self.client().await;
        rowcast::migrate::migrate(&mut client, &config.tables, &config.capture)
            .await
            .expect("migrate");
    }
}

pub async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// rowcast running in this process on a free port.
pub struct Server {
    pub addr: SocketAddr,
    pub config: Config,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), rowcast::RunError>>,
    pub auth: std::sync::Arc<Authenticator>,
}

/// The `/metrics` text of the server at `base` (`http://host:port`).
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

impl Server {
    pub async fn start(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Server::start_on(config, listener).await
    }

    /// Starts rowcast and waits until it answers HTTP, ready or not (`/readyz` may say 503).
    pub async fn start_unready(config: Config) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let s = Server::spawn_on(config, listener);
        let url = format!("{}/readyz", s.http());
        eventually(15, || async { reqwest::get(&url).await.ok().map(|_| ()) }).await;
        s
    }

    /// Starts rowcast on `listener` (e.g. the address of a stopped server, to restart it).
    pub async fn start_on(config: Config, listener: tokio::net::TcpListener) -> Server {
        let s = Server::spawn_on(config, listener);
        s.wait_ready().await;
        s
    }

    fn spawn_on(config: Config, listener: tokio::net::TcpListener) -> Server {
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let auth = std::sync::Arc::new(Authenticator::from_config(&config.jwt).unwrap());
        let valid = config
            .clone()
            .validate()
            .expect("a valid test configuration");
        let handle = tokio::spawn(rowcast::run(valid, listener, shutdown.clone()));
        Server {
            addr,
            config,
            shutdown,
            handle,
            auth,
        }
    }

    pub fn http(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A `/ws` upgrade with `token` that is refused: the status and the JSON body.
    pub async fn ws_refusal(&self, token: &str) -> (u16, serde_json::Value) {
        let r = reqwest::Client::new()
            .get(format!("{}/ws?token={token}", self.http()))
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-version", "13")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .send()
            .await
            .unwrap();
        (
            r.status().as_u16(),
            r.json().await.unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{query}", self.addr)
    }

    pub fn token(&self, sub: &str, role: &str) -> String {
        self.auth.issue(sub, role, 3600).unwrap()
    }

    #[track_caller]
    pub fn wait_ready(&self) -> impl Future<Output = ()> + '_ {
        let at = Location::caller();
        async move {
            let url = format!("{}/readyz", self.http());
            let client = reqwest::Client::new();
            for _ in 0..300 {
                if let Ok(r) = client.get(&url).send().await
                    && r.status().is_success()
                {
                    return;
                }
                if self.handle.is_finished() {
                    panic!("rowcast exited before it was ready (waited at {at})");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("rowcast not ready after 15 s (waited at {at})");
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let r = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("rowcast stops within 20 s");
        r.unwrap().expect("rowcast exits cleanly");
    }
}

/// Room allow-lists that keep `tickets`, `comments`, `attachments` and `users` (and
/// `tickets:*`) to agents and admins, `kb` open to all: for tests of refused joins (the
/// default lets every role join, and filters rows).
pub fn staff_rooms() -> std::collections::BTreeMap<String, rowcast::catalog::RoomConfig> {
    let room = |roles: &[&str]| rowcast::catalog::RoomConfig {
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let mut rooms = std::collections::BTreeMap::new();
    for r in ["tickets", "tickets:*", "comments", "attachments", "users"] {
        rooms.insert(r.to_string(), room(&["agent", "admin"]));
    }
    rooms.insert("kb".into(), room(&["*"]));
    rooms
}

/// The usual setup: a seeded helpdesk database, migrated, and rowcast serving it.
pub async fn start() -> (Db, Server) {
    start_with(|_| {}).await
}

pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> (Db, Server) {
    let db = Db::start().await;
    let mut config = db.config();
    tweak(&mut config);
    db.migrate(&config).await;
    let server = Server::start(config).await;
    (db, server)
}

/// Waits until retention has emptied the log (change rows and batches, packed ones
/// included) and moved the `pruned` cursor past `since`.
pub async fn wait_pruned_past(db: &Db, since: &str) {
    let since: i64 = since.parse().expect("a seq");
    eventually(15, || async {
        let row = db
            .client()
            .await
            .query_one(
                "SELECT (SELECT count(*) FROM rowcast.changes) + (SELECT count(*) FROM rowcast.batches),
                        coalesce((SELECT seq FROM rowcast.cursors WHERE name = 'pruned'), 0)",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, i64>(0) == 0 && row.get::<_, i64>(1) > since).then_some(())
    })
    .await;
}

/// Waits for `f` to return `Some`, panicking with the caller's location after `secs`.
#[track_caller]
pub fn eventually<T, F, Fut>(secs: u64, mut f: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let at = Location::caller();
    async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("condition not met within {secs} s (waited at {at})");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}
