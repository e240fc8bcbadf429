//! `rowcast migrate` and `rowcast check` against a real database, through the binary.

use std::process::Command;

use crate::support::{Db, connect};

fn rowcast(db_url: &str, args: &[&str], config: Option<&std::path::Path>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rowcast"));
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env("ROWCAST_LOG_LEVEL", "warn");
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let out = cmd.output().expect("run rowcast");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrates_all_succeed_and_check_passes() {
    let db = Db::start().await;
    let url = db.url.clone();
    let runs: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || rowcast(&url, &["migrate"], None))
        })
        .collect();
    for r in runs {
        let (code, out) = r.join().unwrap();
        assert_eq!(code, 0, "{out}");
    }
    let (code, out) = rowcast(&url, &["migrate"], None);
    assert_eq!(code, 0, "migrate again: {out}");
    assert!(
        !out.contains("applied migration"),
        "nothing left to apply: {out}"
    );
    let (code, out) = rowcast(&url, &["check"], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok:"), "{out}");
    let triggers = db
        .count("SELECT count(*) FROM pg_trigger WHERE tgname = 'rowcast_capture'")
        .await;
    assert_eq!(triggers, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_every_problem() {
    let db = Db::start().await;
    let url = db.url.clone();
    let (code, out) = rowcast(&url, &["check"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("schema is not installed"), "{out}");
    assert_eq!(rowcast(&url, &["migrate"], None).0, 0);

    let pg = db.client().await;
    pg.batch_execute(
        "DROP TRIGGER rowcast_capture ON comments;
         CREATE TABLE audit_log (at timestamptz, what text);
         CREATE ROLE reader LOGIN;
         GRANT USAGE ON SCHEMA rowcast TO reader;
         GRANT SELECT ON ALL TABLES IN SCHEMA rowcast TO reader;
         GRANT SELECT ON tickets, comments, users, kb_articles, attachments TO reader;",
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("rowcast-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("rowcast.toml");
    std::fs::write(
        &config,
        r#"
[[tables]]
table = "tickets"
entity = "ticket"
room = "tickets"
[tables.audience]
roles = ["agent"]
rows = "requester_id = $user"

[[tables]]
table = "comments"
entity = "comment"
room = "comments"

[[tables]]
table = "nope"
entity = "nope"
room = "nope"

[[tables]]
table = "audit_log"
entity = "audit"
room = "audit"

[[tables]]
table = "users"
entity = "user"
room = "users"
hidden = ["password_hash", "api_key"]

[rooms.tickets]
roles = ["agent"]
"#,
    )
    .unwrap();
    let (code, out) = rowcast(&url, &["check"], Some(&config));
    assert_eq!(code, 1, "{out}");
    for needle in [
        "table public.comments: capture trigger is missing",
        "table public.nope does not exist",
        "table public.audit_log has no primary key",
        "hidden column \"api_key\" does not exist",
        // The configured hidden set differs from what migrate installed: served as withheld.
        "table public.users: rows withheld",
        "5 problem(s) found",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // As a role that may not read notifications (and may not write rowcast's tables).
    let reader_url = url.replace("postgres://postgres@", "postgres://reader@");
    let (code, out) = rowcast(&reader_url, &["check"], None);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("table public.notifications: rowcast's database role lacks SELECT"),
        "{out}"
    );
    assert!(out.contains("lacks DELETE on rowcast.changes"), "{out}");
    // Migrating with that configuration refuses, naming the problems; nothing half-done.
    let (code, out) = rowcast(&url, &["migrate"], Some(&config));
    assert_ne!(code, 0);
    assert!(out.contains("public.nope does not exist"), "{out}");
    let c = connect(&url).await;
    let t: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgname = 'rowcast_capture'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(t, 5, "a refused migrate changed nothing");
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `rowcast serve` without a database and with `env`; it must refuse to start.
/// Returns what it printed on stderr.
fn serve_refused(env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rowcast"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_configuration_is_refused_with_actionable_messages() {
    let err = serve_refused(&[
        ("ROWCAST_JWT_SECRET", "short"),
        ("ROWCAST_WEBHOOK_RETRY_SCHEDULE", "5s,soon"),
    ]);
    assert!(err.contains("\"soon\" is not a duration"), "{err}");
    let err = serve_refused(&[("ROWCAST_JWT_SECRET", "short")]);
    assert!(err.contains("at least 16 bytes"), "{err}");
    let err = serve_refused(&[("ROWCAST_JWT_SECRET", "0123456789abcdef0123")]);
    assert!(
        err.contains("no database configured: set DATABASE_URL"),
        "{err}"
    );
}
