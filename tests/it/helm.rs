//! The Helm chart: linted (strict) and rendered by Helm's own engine, every object validated
//! against the Kubernetes schemas (`tests/helm/check_chart.py`), and the rendered
//! `rowcast.toml` accepted by rowcast's configuration loader. The checker's Python packages
//! are installed with pip into `target/test-python` when Python lacks them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rowcast::Config;
use rowcast::catalog::TableKind;

use crate::support::install;

#[test]
fn chart_lints_renders_and_validates_with_every_option() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let checker = root.join("tests/helm/check_chart.py");
    // The packages of tests/helm/requirements.txt: Python's own, or installed with pip
    // into target/test-python (once per test run) when Python lacks them.
    let python_path = install::python_packages(&checker, &root.join("tests/helm/requirements.txt"));
    let out = std::env::temp_dir().join(format!("rowcast-helm-{}", std::process::id()));
    let run = Command::new(install::python())
        .arg(&checker)
        .arg(root.join("helm/rowcast"))
        .arg(&out)
        .env("PYTHONPATH", python_path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{}` ({e}): the chart test needs Python 3",
                install::python()
            )
        });
    let stderr = String::from_utf8_lossy(&run.stderr);
    match run.status.code() {
        Some(0) => {}
        Some(2) => panic!("chart test tools are missing:\n{stderr}"),
        _ => panic!("the chart check failed:\n{stderr}"),
    }
    let rendered: serde_json::Value =
        serde_json::from_slice(&run.stdout).expect("check_chart.py prints its summary as JSON");
    let everything = rendered["everything"].to_string();
    for kind in [
        "Deployment/",
        "Service/",
        "ConfigMap/",
        "Job/",
        "Ingress/",
        "HorizontalPodAutoscaler/",
        "PodDisruptionBudget/",
        "ServiceMonitor/",
        "NetworkPolicy/",
        "ServiceAccount/",
    ] {
        assert!(
            everything.contains(kind),
            "{kind} missing from {everything}"
        );
    }

    // The ConfigMap's rowcast.toml must be a file rowcast accepts (unknown keys are errors).
    let defaults = load(&out.join("defaults.toml"));
    assert_eq!(defaults.shutdown_timeout, Duration::from_secs(10));
    assert_eq!(defaults.listen.port(), 8080);
    assert_eq!(defaults.pool_size, 16);
    assert_eq!(defaults.log.format, rowcast::config::LogFormat::Json);
    assert_eq!(
        defaults.tables.len(),
        rowcast::catalog::default_tables().len(),
        "no tables in values means the helpdesk mapping"
    );

    let all = load(&out.join("everything.toml"));
    assert_eq!(all.shutdown_timeout, Duration::from_secs(20));
    assert_eq!(all.pool_size, 24);
    assert_eq!(all.capture.max_lag, Duration::from_secs(60));
    assert_eq!(all.webhook.retry_schedule.len(), 3);
    assert_eq!(all.jwt.role_claim, "https://example.com/roles");
    let tables: Vec<(&str, TableKind)> = all
        .tables
        .iter()
        .map(|t| (t.entity.as_str(), t.kind))
        .collect();
    assert_eq!(
        tables,
        [
            ("ticket", TableKind::Entity),
            ("user", TableKind::Entity),
            ("notification", TableKind::Notification)
        ]
    );
    assert_eq!(all.tables[1].hidden, ["password_hash"]);
    let audience = all.tables[0].audience.as_ref().expect("tickets audience");
    assert_eq!(audience.roles, ["agent", "admin"]);
    assert_eq!(audience.rows.as_deref(), Some("requester_id = $user"));
    assert_eq!(all.jwt.flag_roles["isAdmin"], "admin");
    assert_eq!(all.rooms["tickets:*"].roles, ["agent"]);
    let _ = std::fs::remove_dir_all(&out);
}

fn load(path: &PathBuf) -> Config {
    Config::load(Some(path)).unwrap_or_else(|e| {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        panic!("rowcast refuses the chart's rowcast.toml: {e}\n{text}")
    })
}
