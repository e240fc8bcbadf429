//! A control plane for tests driven from another process (node, a browser script): an HTTP
//! server on a free port through which the script runs SQL, issues tokens, and stops and
//! restarts rowcast on the same address — so JS tests need no PostgreSQL driver.
//!
//! `POST /sql {"sql"}` runs statements; `POST /query {"sql"}` returns the rows as JSON
//! (`SELECT ...` or `INSERT ... RETURNING ...`); `GET /token?sub&role&ttl`; `POST /stop`;
//! `POST /start`. Errors answer 500 with the message, so the script fails loudly.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Db, Server};

#[derive(Clone)]
struct Ctl {
    db_url: String,
    addr: SocketAddr,
    config: rowcast::Settings,
    server: Arc<Mutex<Option<Server>>>,
    auth: Arc<rowcast::api::auth::Authenticator>,
}

/// The control server and the rowcast it controls.
pub struct Control {
    pub url: String,
    pub rowcast: String,
    server: Arc<Mutex<Option<Server>>>,
    stop: CancellationToken,
}

impl Control {
    /// Serves control for `server` (which it now owns) on a free port.
    pub async fn start(db: &Db, server: Server) -> Control {
        let ctl = Ctl {
            db_url: db.url.clone(),
            addr: server.addr,
            config: server.config.clone(),
            auth: server.auth.clone(),
            server: Arc::new(Mutex::new(Some(server))),
        };
        let rowcast = format!("http://{}", ctl.addr);
        let server = ctl.server.clone();
        let app = Router::new()
            .route("/sql", post(sql))
            .route("/query", post(query))
            .route("/token", get(token))
            .route("/stop", post(stop))
            .route("/start", post(start))
            .with_state(ctl);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { s.cancelled().await })
                .await;
        });
        Control {
            url,
            rowcast,
            server,
            stop,
        }
    }

    /// Stops the control server and rowcast (if running).
    pub async fn shutdown(self) {
        self.stop.cancel();
        if let Some(s) = self.server.lock().await.take() {
            s.stop().await;
        }
    }
}

#[derive(Deserialize)]
struct Sql {
    sql: String,
}

fn fail(e: impl std::fmt::Display) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

async fn sql(State(c): State<Ctl>, Json(b): Json<Sql>) -> Response {
    let client = super::connect(&c.db_url).await;
    match client.batch_execute(&b.sql).await {
        Ok(()) => Json(json!({"ok": true})).into_response(),
        Err(e) => fail(format!("{}: {e:?}", b.sql)),
    }
}

async fn query(State(c): State<Ctl>, Json(b): Json<Sql>) -> Response {
    let client = super::connect(&c.db_url).await;
    let wrapped = format!(
        "WITH t AS ({}) SELECT coalesce(json_agg(t), '[]'::json) FROM t",
        b.sql
    );
    match client.query_one(&wrapped, &[]).await {
        Ok(row) => Json(row.get::<_, Value>(0)).into_response(),
        Err(e) => fail(format!("{}: {e:?}", b.sql)),
    }
}

#[derive(Deserialize)]
struct TokenQuery {
    sub: String,
    role: String,
    ttl: Option<i64>,
}

async fn token(State(c): State<Ctl>, Query(q): Query<TokenQuery>) -> Response {
    match c.auth.issue(&q.sub, &q.role, q.ttl.unwrap_or(3600)) {
        Some(t) => t.into_response(),
        None => fail("cannot issue a token"),
    }
}

async fn stop(State(c): State<Ctl>) -> Response {
    let taken = c.server.lock().await.take();
    match taken {
        Some(s) => {
            s.stop().await;
            Json(json!({"stopped": true})).into_response()
        }
        None => Json(json!({"stopped": false})).into_response(),
    }
}

async fn start(State(c): State<Ctl>) -> Response {
    let mut guard = c.server.lock().await;
    if guard.is_some() {
        return Json(json!({"started": false})).into_response();
    }
    // The old listener is closed; the port may take a moment to be free again.
    let mut last = None;
    for _ in 0..100 {
        match tokio::net::TcpListener::bind(c.addr).await {
            Ok(listener) => {
                let server = Server::start_on(c.config.clone(), listener).await;
                *guard = Some(server);
                return Json(json!({"started": true})).into_response();
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fail(format!("cannot listen on {} again: {last:?}", c.addr))
}
