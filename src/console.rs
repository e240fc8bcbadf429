//! The live console at `/`: a static page and the `@rowcast/client` ES modules it imports,
//! embedded in the binary so that `rowcast demo` (and any deployment) serves them with no
//! files on disk. The page talks to rowcast's public API like any other client.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{ApiError, AppState};

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The console page and its own assets: (path, content type, body).
const CONSOLE: &[(&str, &str, &str)] = &[
    ("console.js", JS, include_str!("../console/console.js")),
    ("console.css", CSS, include_str!("../console/console.css")),
];

/// The client package's modules, served at `/client/<file>` (the browser imports them).
const CLIENT: &[(&str, &str)] = &[
    ("index.js", include_str!("../client/index.js")),
    ("client.js", include_str!("../client/client.js")),
    ("emitter.js", include_str!("../client/emitter.js")),
    ("backoff.js", include_str!("../client/backoff.js")),
    ("seq.js", include_str!("../client/seq.js")),
    ("state.js", include_str!("../client/state.js")),
    ("transport-ws.js", include_str!("../client/transport-ws.js")),
    (
        "transport-socketio.js",
        include_str!("../client/transport-socketio.js"),
    ),
    ("webhooks.js", include_str!("../client/webhooks.js")),
];

/// Routes of the console: `/`, `/console/{file}`, `/client/{file}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(console_file))
        .route("/client/{file}", get(client_file))
}

async fn index() -> Response {
    asset(HTML, include_str!("../console/index.html"))
}

async fn console_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    CONSOLE
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, ty, body)| asset(ty, body))
        .ok_or_else(|| ApiError::not_found(format!("no console asset {file:?}")))
}

async fn client_file(Path(file): Path<String>) -> Result<Response, ApiError> {
    CLIENT
        .iter()
        .find(|(name, _)| *name == file)
        .map(|(_, body)| asset(JS, body))
        .ok_or_else(|| ApiError::not_found(format!("no client module {file:?}")))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            // Assets change with the binary; a short cache keeps upgrades visible.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// Names of the embedded client modules (the test checks them against `client/*.js`).
pub fn client_modules() -> impl Iterator<Item = &'static str> {
    CLIENT.iter().map(|(name, _)| *name)
}
