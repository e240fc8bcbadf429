//! TLS to PostgreSQL: `sslmode=require` encrypts (like libpq, without checking the
//! certificate); with `database_ca_file` the certificate must chain to that CA.

use std::process::Command;

use rowcast::pgtemp::PgTempOptions;

use crate::support::{Db, Server, ws::WsClient};

/// A test CA (`ca.crt`) and a server certificate for 127.0.0.1 signed by it, in a
/// directory the server may read.
fn certificate() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "rowcast-tls-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed to make test certificates");
        assert!(status.success(), "openssl {args:?}");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=rowcast test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.crt",
    ]);
    // PostgreSQL runs as `postgres` when the tests run as root: let it read its key.
    let root = std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
    if root {
        Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    dir
}

/// A throwaway cluster with `ssl=on` and the certificate in `certs`.
async fn tls_cluster(certs: &std::path::Path) -> Db {
    Db::start_with(PgTempOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            (
                "ssl_cert_file".into(),
                certs.join("server.crt").display().to_string(),
            ),
            (
                "ssl_key_file".into(),
                certs.join("server.key").display().to_string(),
            ),
        ],
        ..Default::default()
    })
    .await
}

/// Sets ticket `id`'s status in `db` and checks that a `/ws` client of `server` receives the
/// new row; returns the database connection for further checks.
async fn status_update_arrives(
    db: &Db,
    server: &Server,
    id: i64,
    status: &str,
) -> tokio_postgres::Client {
    let (mut c, _) =
        WsClient::connect(&server.ws_url(&format!("token={}", server.token("1", "agent")))).await;
    c.join("tickets").await;
    let pg = db.client().await;
    pg.execute(
        "UPDATE tickets SET status = $1 WHERE id = $2",
        &[&status, &id],
    )
    .await
    .unwrap();
    assert_eq!(c.next_event().await["payload"]["data"]["status"], status);
    pg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rowcast_talks_tls_to_postgres() {
    let certs = certificate();
    let db = tls_cluster(&certs).await;
    let mut config = db.config();
    config.database_url = Some(format!("{}&sslmode=require", db.url));
    db.migrate(&config).await;
    let server = Server::start(config.clone()).await;
    let pg = status_update_arrives(&db, &server, 1, "solved").await;
    // rowcast's own connections (capture and pool) are encrypted.
    let encrypted: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl WHERE ssl AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 2, "{encrypted} encrypted connections");
    server.stop().await;

    // With a CA file, the certificate is verified: the right CA passes, another fails.
    let mut verified = config.clone();
    verified.database_ca_file = Some(certs.join("ca.crt"));
    let server = Server::start(verified).await;
    server.stop().await;
    let other = certificate();
    let mut wrong = config.clone();
    wrong.database_ca_file = Some(other.join("ca.crt"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = rowcast::run(wrong.validate().unwrap(), listener, Default::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("certificate") || err.contains("Certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(certs);
    let _ = std::fs::remove_dir_all(other);
}

/// Logical capture's replication connection uses the same TLS settings: encrypted with
/// `sslmode=require`, and verified against `database_ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_capture_streams_over_tls() {
    let certs = certificate();
    let db = tls_cluster(&certs).await;
    let mut config = db.config();
    config.database_url = Some(format!("{}&sslmode=require", db.url));
    config.database_ca_file = Some(certs.join("ca.crt"));
    config.capture.mode = rowcast::config::CaptureMode::Logical;
    db.migrate(&config).await;
    let server = Server::start(config.clone()).await;
    let pg = status_update_arrives(&db, &server, 2, "pending").await;
    let streaming_encrypted: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_ssl s ON s.pid = r.pid
              WHERE s.ssl",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        streaming_encrypted, 1,
        "the replication connection is encrypted"
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(certs);
}
