//! The request head of a Socket.IO connection, copied out of hyper's read buffer.

use axum::extract::OriginalUri;
use axum::http::request::Parts;
use axum::http::{HeaderValue, Uri};
use bytes::BytesMut;

use super::PATH;

/// Middleware for the Socket.IO path (outside `layer`): gives the request's URI and header
/// values one small allocation of their own.
///
/// hyper parses them as slices of the connection's HTTP/1 read buffer (8–16 KiB), and
/// engine.io keeps the head of the request that opened a socket for the socket's whole
/// life (`SocketRef::req_parts`): without the copy every Socket.IO connection pins that
/// buffer after the upgrade (docs/benchmarks.md, "memory").
pub async fn own_request_head(req: axum::extract::Request) -> axum::extract::Request {
    if !req.uri().path().starts_with(PATH) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    own_head(&mut parts);
    axum::extract::Request::from_parts(parts, body)
}

fn own_head(parts: &mut Parts) {
    let uri = parts.uri.to_string();
    // axum's router keeps a clone of the URI as it arrived (for `OriginalUri`).
    let original = parts
        .extensions
        .get::<OriginalUri>()
        .map(|o| o.0.to_string())
        .unwrap_or_default();
    let values: usize = parts.headers.values().map(HeaderValue::len).sum();
    let mut buf = BytesMut::with_capacity(uri.len() + original.len() + values);
    buf.extend_from_slice(uri.as_bytes());
    buf.extend_from_slice(original.as_bytes());
    for v in parts.headers.values() {
        buf.extend_from_slice(v.as_bytes());
    }
    let buf = buf.freeze();
    if let Ok(owned) = Uri::from_maybe_shared(buf.slice(..uri.len())) {
        parts.uri = owned;
    }
    let mut at = uri.len();
    if !original.is_empty() {
        let end = at + original.len();
        if let Ok(owned) = Uri::from_maybe_shared(buf.slice(at..end)) {
            parts.extensions.insert(OriginalUri(owned));
        }
        at = end;
    }
    // `values` and `values_mut` visit the same values in the same order.
    for v in parts.headers.values_mut() {
        let end = at + v.len();
        if let Ok(mut owned) = HeaderValue::from_maybe_shared(buf.slice(at..end)) {
            owned.set_sensitive(v.is_sensitive());
            *v = owned;
        }
        at = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_head_is_copied_unchanged() {
        let req = axum::http::Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=abc")
            .header("host", "127.0.0.1:8080")
            .header("x-multi", "one")
            .header("x-multi", "two")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(())
            .unwrap();
        let (mut parts, ()) = req.into_parts();
        let original = OriginalUri(parts.uri.clone());
        parts.extensions.insert(original);
        parts
            .headers
            .get_mut("sec-websocket-key")
            .unwrap()
            .set_sensitive(true);
        let before = parts.clone();
        own_head(&mut parts);
        assert_eq!(parts.uri, before.uri);
        assert_eq!(
            parts.uri.query(),
            Some("EIO=4&transport=websocket&token=abc")
        );
        assert_eq!(parts.extensions.get::<OriginalUri>().unwrap().0, before.uri);
        assert_eq!(parts.headers, before.headers);
        let multi: Vec<_> = parts.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["one", "two"]);
        assert!(parts.headers["sec-websocket-key"].is_sensitive());
    }

    /// The point of the copy: nothing in the head still refers to the buffer it was parsed
    /// from (hyper's read buffer), so the buffer is freed once the request is handled.
    #[test]
    fn the_copied_head_does_not_hold_the_read_buffer() {
        let (path, host) = ("/socket.io/?EIO=4&transport=websocket", "localhost");
        let mut read_buffer = vec![0u8; 16 * 1024];
        read_buffer[..path.len()].copy_from_slice(path.as_bytes());
        read_buffer[path.len()..path.len() + host.len()].copy_from_slice(host.as_bytes());
        let read_buffer = bytes::Bytes::from(read_buffer);
        let (mut parts, ()) = axum::http::Request::new(()).into_parts();
        parts.uri = Uri::from_maybe_shared(read_buffer.slice(..path.len())).unwrap();
        parts.extensions.insert(OriginalUri(parts.uri.clone()));
        let host_value = read_buffer.slice(path.len()..path.len() + host.len());
        let host_value = HeaderValue::from_maybe_shared(host_value).unwrap();
        parts.headers.insert("host", host_value);
        assert!(!read_buffer.is_unique());
        own_head(&mut parts);
        assert!(
            read_buffer.is_unique(),
            "a copied part still refers to the buffer"
        );
        assert_eq!(parts.uri, path);
        assert_eq!(parts.extensions.get::<OriginalUri>().unwrap().0, path);
        assert_eq!(parts.headers["host"], host);
    }
}
