//! `memory`: RSS of the rowcast process with N idle connections (each joined to `tickets`),
//! over `/ws`, Socket.IO straight over WebSocket, and Socket.IO opened over polling and
//! upgraded (`socket.io-client`'s default), each on a fresh rowcast process.

use std::time::Duration;

use rowcast::pgtemp::{PgTemp, PgTempOptions};

use crate::clients;
use crate::setup::{self, Rowcast};

pub async fn run(n: usize) {
    let limit = setup::raise_nofile();
    println!(
        "\n## memory ({n} idle connections in `tickets`; open-file limit {limit} for the bench and rowcast)\n"
    );
    let pg = PgTemp::start(PgTempOptions::default()).expect("PostgreSQL");
    let (_db, config) = setup::database(&pg, 100, true).await;
    println!("{}\n", setup::describe(&config));
    println!(
        "| transport | connections | RSS before MB | RSS with connections MB | KiB per connection | target ≤ 150 MB |"
    );
    println!("|---|---|---|---|---|---|");
    let only_sio = std::env::var("BENCH_ONLY_SOCKETIO").is_ok();
    let http = reqwest::Client::new();
    for (name, sio, upgraded) in [
        ("/ws", false, false),
        ("Socket.IO", true, false),
        ("Socket.IO (polling, then upgraded)", true, true),
    ] {
        if only_sio && !sio {
            continue;
        }
        let rc = Rowcast::start(&config);
        let token = setup::token(&config);
        // Warm up the server's paths once so the baseline includes their one-off allocations.
        let warm = clients::ws(&rc.ws_url(&format!("token={token}&rooms=tickets"))).await;
        drop(warm);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = rc.rss_mb();
        let port = rc.port;
        let conns = if upgraded {
            clients::many(n, 64, |_| {
                clients::socketio_upgraded(&http, port, &token, "tickets")
            })
            .await
        } else if sio {
            clients::many(n, 64, |_| clients::socketio(port, &token, "tickets")).await
        } else {
            let url = rc.ws_url(&format!("token={token}&rooms=tickets"));
            clients::many(n, 64, |_| clients::ws(&url)).await
        };
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|ws| tokio::spawn(clients::idle(ws)))
            .collect();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let after = rc.rss_mb();
        let alive = tasks.iter().filter(|t| !t.is_finished()).count();
        assert_eq!(alive, n, "every connection stays open");
        println!(
            "| {name} | {n} | {before:.1} | {after:.1} | {:.1} | {} |",
            (after - before) * 1024.0 / n as f64,
            if after <= 150.0 { "met" } else { "missed" },
        );
        drop(rc);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}
