//! The SSRF guard: internal URLs refused when set and at connection time; clear 4xx answers.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Api, fast, ms};
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

/// Every special-purpose block of the IANA registries that is not globally reachable, and
/// the IPv6 transition forms that carry an internal IPv4 address, are refused by the API
/// (user and admin endpoints) and again when a stored URL is sent to.
#[tokio::test]
async fn special_purpose_and_embedded_addresses_are_refused() {
    // Loopback is allowed (as in local setups): the embedded forms must still be refused,
    // they are not the allowed addresses.
    let (db, server) = support::start_with(|c| {
        c.webhook.allow_cidrs = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let admin = server.token("2", "admin");
    for (url, reason) in [
        (
            "http://[::127.0.0.1]/",
            "IPv4-compatible address embedding 127.0.0.1, a loopback",
        ),
        ("http://[64:ff9b:1::7f00:1]/", "local-use NAT64"),
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            "NAT64 address embedding 169.254.169.254, a cloud metadata",
        ),
        (
            "http://[2002:7f00:1::1]/",
            "6to4 address embedding 127.0.0.1, a loopback",
        ),
        (
            "http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/",
            "Teredo address embedding 127.0.0.1",
        ),
        (
            "http://[::ffff:10.0.0.1]/",
            "IPv4-mapped address embedding 10.0.0.1, a private",
        ),
        ("http://[fec0::1]/", "site-local"),
        ("http://198.18.0.1/", "benchmarking"),
        ("http://192.0.0.170/", "IETF protocol assignment"),
        ("http://192.88.99.1/", "6to4 relay"),
        ("http://203.0.113.5/", "documentation"),
        ("http://[2001:db8::1]/", "documentation"),
        ("http://[3fff::1]/", "documentation"),
        ("http://[5f00::1]/", "SRv6"),
        ("http://[100::1]/", "discard-only"),
        ("http://[2001:2::1]/", "IETF protocol assignment"),
        ("http://255.255.255.255/", "broadcast"),
    ] {
        let (s, b) = api.put("/api/webhook", &carl, json!({ "url": url })).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{url}: {b}");
        assert_eq!(b["error"], "url_refused", "{url}: {b}");
        let message = b["message"].as_str().unwrap();
        assert!(message.contains(reason), "{url}: {message}");
        assert!(
            message.contains("webhooks may only reach public addresses"),
            "{message}"
        );
        let (s, b) = api
            .post(
                "/api/webhooks",
                &admin,
                json!({ "url": url, "event_types": ["*"] }),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "admin {url}: {b}");
    }
    // Globally reachable exceptions inside refused blocks are accepted.
    for url in [
        "http://192.0.0.9/",
        "http://[2001:1::1]/",
        "http://[2001:20::1]/",
    ] {
        let (s, b) = api.put("/api/webhook", &carl, json!({ "url": url })).await;
        assert!(s.is_success(), "{url}: {s} {b}");
    }
    // An admin endpoint cannot be re-pointed at one either.
    let (s, ep) = api
        .post(
            "/api/webhooks",
            &admin,
            json!({ "url": "http://192.0.0.9/", "event_types": ["*"] }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{ep}");
    let (s, b) = api
        .call(
            Method::PATCH,
            &format!("/api/webhooks/{}", ep["id"].as_str().unwrap()),
            Some(&admin),
            Some(json!({ "url": "http://[::ffff:169.254.169.254]/" })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("cloud metadata"),
        "{b}"
    );

    // Stored anyway (written before this check existed): refused when sending.
    let pg = db.client().await;
    pg.execute(
        "INSERT INTO rowcast.webhook_endpoints (id, user_id, url, event_types, secret, created_by)
         VALUES (gen_random_uuid(), '4', 'http://[2002:7f00:1::1]:9/', '{notification.created}',
                 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'test')",
        &[],
    )
    .await
    .unwrap();
    let cleo = server.token("4", "customer");
    let id = api.test_send(&cleo).await;
    let d = eventually(10, || async {
        let (_, d) = api
            .get(&format!("/api/webhook/deliveries/{id}"), &cleo)
            .await;
        (d["attempts"].as_i64() >= Some(1)).then_some(d)
    })
    .await;
    let error = d["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("refused") && error.contains("6to4 address embedding 127.0.0.1"),
        "{d}"
    );
    server.stop().await;
}

/// An internal service (on 127.0.0.1, reachable only because the operator allow-listed
/// loopback) that answers anyone with something secret.
async fn internal_service(body: &'static str) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/admin/credentials",
        listener.local_addr().unwrap()
    );
    let app = axum::Router::new().fallback(move || async move { body });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

/// A user who points their webhook at an allow-listed internal service cannot read its
/// answers through the attempt log: they see the status code and the timing, the body is
/// withheld (`response_withheld: "private_address"`); an admin sees the body. A body
/// recorded as coming from a public address is shown to the owner; one recorded before
/// the column existed is withheld.
#[tokio::test]
async fn bodies_from_allow_listed_private_addresses_are_shown_to_admins_only() {
    const SECRET: &str = "AKIA-internal-credentials-7f3e";
    let (url, service) = internal_service(SECRET).await;
    let (db, server) = support::start_with(fast).await;
    let api = Api::new(server.http());
    let carl = server.token("3", "customer");
    let admin = server.token("2", "admin");
    api.set_url(&carl, &url).await;
    let id = api.test_send(&carl).await;
    let d = api.delivery_with_status(&carl, &id, "delivered").await;
    let path = format!("/api/webhook/deliveries/{id}");

    // The owner: status and timing, no body, and the reason.
    let a = &d["attempt_log"][0];
    assert_eq!(a["status_code"], 200, "{d}");
    assert!(a["duration_ms"].as_i64().is_some(), "{d}");
    assert_eq!(a["response"], Value::Null, "{d}");
    assert_eq!(a["response_withheld"], "private_address", "{d}");
    let (_, list) = api.get("/api/webhook/deliveries", &carl).await;
    for seen in [&d, &list] {
        assert!(!seen.to_string().contains(SECRET), "{seen}");
    }
    // The admin: the body.
    let (s, d) = api.get(&path, &admin).await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["attempt_log"][0]["response"], SECRET, "{d}");
    assert!(
        d["attempt_log"][0].get("response_withheld").is_none(),
        "{d}"
    );
    // Stored: the address connected to was private.
    let pg = db.client().await;
    let private: Option<bool> = pg
        .query_one(
            "SELECT private FROM rowcast.webhook_attempts WHERE delivery_id = $1::text::uuid",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(private, Some(true));

    // No public receiver can be reached from a test, so mark the attempt as public: the
    // owner's view follows the column (and not, say, the allow-list).
    let owner_view = async |private: Option<bool>| {
        pg.execute(
            "UPDATE rowcast.webhook_attempts SET private = $2 WHERE delivery_id = $1::text::uuid",
            &[&id, &private],
        )
        .await
        .unwrap();
        let (s, d) = api.get(&path, &carl).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        d["attempt_log"][0].clone()
    };
    let a = owner_view(Some(false)).await;
    assert_eq!(a["response"], SECRET, "{a}");
    assert!(a.get("response_withheld").is_none(), "{a}");
    // Recorded before migration 008 (NULL): withheld, fail closed.
    let a = owner_view(None).await;
    assert_eq!(a["response"], Value::Null, "{a}");
    assert_eq!(a["response_withheld"], "private_address", "{a}");
    server.stop().await;
    service.abort();
}
