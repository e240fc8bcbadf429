//! The HTTP surface: shared state, errors, health and metrics, and the webhook API. The
//! server assembles these routes with the transports'.

pub mod auth;
mod explain;
mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureStatus;
use crate::enrich::Enricher;
use crate::hub::Hub;
use auth::{AuthError, Authenticator};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Origins allowed by CORS (`*` for any). Empty disables CORS headers.
    #[serde(deserialize_with = "crate::serde_ext::comma_list")]
    pub cors_origins: Vec<String>,
    /// Largest request body accepted by the API.
    pub max_body_bytes: usize,
    /// How long a client may take to send a request's headers (from the moment the
    /// connection is opened or the previous response was sent) before it is closed.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Open TCP connections (WebSockets included) beyond which new ones get a 503.
    pub max_connections: usize,
    /// A connection still speaking HTTP (not upgraded) that reads and writes nothing this
    /// long is closed. Longer than `hub.ping_interval` (engine.io long-polls last that long).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// engine.io sessions that may wait for their authenticated Socket.IO connect at once;
    /// beyond it new handshakes get a 503.
    pub max_pending_socketio: usize,
    /// How long an engine.io session may wait for its Socket.IO connect before it is closed
    /// (and its pending slot given back).
    #[serde(with = "humantime_serde")]
    pub socketio_connect_timeout: Duration,
}

impl HttpConfig {
    /// `ping_interval` is the hub's: a long-poll waits that long for its answer.
    pub fn problems(&self, ping_interval: Duration) -> Vec<String> {
        let mut problems = Vec::new();
        if self.idle_timeout <= ping_interval {
            problems.push(format!(
                "http.idle_timeout ({}) must be longer than hub.ping_interval ({})",
                humantime::format_duration(self.idle_timeout),
                humantime::format_duration(ping_interval)
            ));
        }
        if self.header_read_timeout.is_zero() {
            problems.push("http.header_read_timeout must be longer than 0s".into());
        }
        if self.max_connections == 0 {
            problems.push("http.max_connections must be at least 1".into());
        }
        if self.max_pending_socketio == 0 {
            problems.push("http.max_pending_socketio must be at least 1".into());
        }
        if self.socketio_connect_timeout.is_zero() {
            problems.push("http.socketio_connect_timeout must be longer than 0s".into());
        }
        problems
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            cors_origins: vec!["*".into()],
            max_body_bytes: 64 * 1024,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 20_000,
            idle_timeout: Duration::from_secs(60),
            max_pending_socketio: 1_000,
            socketio_connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Everything a request handler may need. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub hub: Arc<Hub>,
    /// Rebuilds events from the change log (explain).
    pub enricher: Enricher,
    /// Socket.IO connection-state recovery.
    pub recovery: Arc<crate::recovery::Recovery>,
    pub auth: Arc<Authenticator>,
    pub pool: Pool,
    pub capture: Arc<CaptureStatus>,
    /// Cancelled when the server shuts down: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// The webhook machinery the API talks to (SSRF guard, worker wake-up).
    pub webhooks: Arc<crate::webhook::Webhooks>,
}

/// An error answered to an API client: a status, a stable code and a clean message.
/// The cause (if any) is logged when the answer is sent, never shown.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// What went wrong on our side, for the log.
    cause: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            cause: None,
        }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// A failure of ours: shown as a generic 503, logged with its cause when answered.
    pub fn internal(cause: impl std::error::Error + 'static) -> ApiError {
        ApiError {
            cause: Some(crate::telemetry::error_chain(&cause)),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service could not complete the request; retry later",
            )
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(error = %cause, "request failed");
        }
        let mut res = (
            self.status,
            axum::Json(json!({ "error": self.code, "message": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        res
    }
}

/// Health, metrics and the webhook API; the server adds the transports' routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/api/explain", get(explain::explain))
        .merge(webhooks::routes())
}

/// Alive: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    axum::Json(json!({ "status": "ok" }))
}

/// Ready: the database answers, capture is connected, reading and without a problem that
/// needs an operator, and lag is in bounds.
async fn readyz(State(app): State<AppState>) -> Response {
    let db_ok = tokio::time::timeout(Duration::from_secs(2), async {
        let client = app.pool.get().await.ok()?;
        client.simple_query("SELECT 1").await.ok()
    })
    .await
    .ok()
    .flatten()
    .is_some();
    let capture = app.capture.health();
    let ready = db_ok && capture.ok() && !app.shutdown.is_cancelled();
    let mut body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "database": db_ok,
        "shutting_down": app.shutdown.is_cancelled(),
    });
    if let (Some(b), Ok(serde_json::Value::Object(c))) =
        (body.as_object_mut(), serde_json::to_value(&capture))
    {
        b.extend(c);
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    metrics::gauge!("rowcast_sessions").set(app.hub.session_count() as f64);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::render_metrics(),
    )
}
