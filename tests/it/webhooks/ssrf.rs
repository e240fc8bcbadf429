//! The SSRF guard: internal URLs refused when set and at connection time; clear 4xx answers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Api, ms};
use crate::support::{self, eventually};

#[tokio::test]
async fn internal_urls_are_refused_when_set_and_when_connecting() {
    // No allow-list: the default.
    let (db, server) = support::start().await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    for (url, reason) in [
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://10.0.0.1/", "private"),
        ("http://localhost/", "resolves to 127.0.0.1, a loopback"),
        ("http://hooks.localhost/", "local name"),
        ("http://[::1]:8080/", "loopback"),
        ("http://100.64.1.1/", "carrier-grade NAT"),
        ("ftp://example.com/", "only http and https"),
        ("not a url", "not a valid URL"),
    ] {
        let (s, b) = api.put("/api/webhook", &carl, json!({ "url": url })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
    }
    // Bad bodies and missing tokens get clear 4xx answers.
    let (s, b) = api.put("/api/webhook", &carl, json!({ "uri": "x" })).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(b["message"].as_str().unwrap().contains("url"), "{b}");
    let raw = reqwest::Client::new()
        .put(format!("{}/api/webhook", server.http()))
        .bearer_auth(&carl)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let (s, b) = api
        .call(
            Method::PUT,
            "/api/webhook",
            None,
            Some(json!({ "url": "https://example.com/" })),
        )
        .await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
    let (s, _) = api
        .post(
            "/api/webhooks",
            &carl,
            json!({ "url": "https://example.com/", "event_types": ["*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = api
        .post(
            "/api/webhooks",
            &server.token("2", "admin"),
            json!({ "url": "https://example.com/", "event_types": ["tickets"] }),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

    // A URL that got into the table anyway (or a name re-pointed after the check) is
    // refused at connection time: by the resolver for names, by the literal check for IPs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pg = db.client().await;
    for (user, url) in [
        ("3", format!("http://localhost:{port}/")),
        ("4", format!("http://127.0.0.1:{port}/")),
    ] {
        pg.execute(
            "INSERT INTO rowcast.webhook_endpoints (id, user_id, url, event_types, secret, created_by)
             VALUES (gen_random_uuid(), $1, $2, '{notification.created}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'test')",
            &[&user, &url],
        )
        .await
        .unwrap();
        let token = server.token(user, "customer");
        let id = api.test_send(&token).await;
        let d = eventually(10, || async {
            let (_, d) = api
                .get(&format!("/api/webhook/deliveries/{id}"), &token)
                .await;
            (d["attempts"].as_i64() >= Some(1)).then_some(d)
        })
        .await;
        let error = d["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("loopback"), "{url}: {d}");
    }
    let accepted = tokio::time::timeout(ms(200), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "nothing connected to the internal address"
    );
    server.stop().await;
}
