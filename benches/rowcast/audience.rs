//! `audience`: row-level audiences at scale. N customers, each owning one ticket and joined
//! to the frontend's five rooms over `/ws`, plus A agents; R updates/s of random tickets.
//! Reports latency for agents and customers, whether every customer got exactly their own
//! ticket's updates, rowcast's CPU per delivered event, and the database statements per
//! change (`pg_stat_statements`) — next to the same population as agents only (everyone
//! sees everything), in the same run, and a small population for the statement count.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use futures_util::StreamExt;
use rand::Rng;
use rowcast::api::auth::Authenticator;
use rowcast::pgtemp::{PgTemp, PgTempOptions};
use tokio_tungstenite::tungstenite::Message;

use crate::clients;
use crate::setup::{self, Rowcast};

/// The frontend's rooms.
const ROOMS: &str = "tickets,comments,users,kb,attachments";
/// A ticket is not updated again within this many updates (no two of its updates coalesce
/// into one event, so "exactly its updates" is exact).
const RECENT: usize = 2000;

struct Run {
    label: String,
    customers: usize,
    agents: usize,
    rate: u64,
    seconds: u64,
}

struct Outcome {
    label: String,
    customers: usize,
    agents: usize,
    rate: u64,
    updates: usize,
    agent_lat: Vec<f64>,
    customer_lat: Vec<f64>,
    /// Deliveries every session should have got, and got.
    expected: usize,
    delivered: usize,
    /// Customers that got anything but exactly their own ticket's updates.
    wrong_customers: usize,
    rowcast_cpu: f64,
    statements_per_change: f64,
}

pub async fn run(customers: usize, agents: usize, rate: u64, seconds: u64) {
    println!(
        "\n## audience ({customers} customers + {agents} agents in the five rooms, {rate} updates/s of random tickets, {seconds} s per run)\n"
    );
    let runs = [
        Run {
            label: "rules on: customers see their own ticket".into(),
            customers,
            agents,
            rate,
            seconds,
        },
        // Everyone sees everything: every update goes to every session, so the rate is what
        // the machine can deliver to that many sessions.
        Run {
            label: "everyone an agent (no filtering)".into(),
            customers: 0,
            agents: customers + agents,
            rate: (rate / 25).max(5),
            seconds,
        },
        Run {
            label: "rules on, few users (statements per change)".into(),
            customers: 100,
            agents,
            rate,
            seconds,
        },
    ];
    let mut outcomes = Vec::new();
    for r in &runs {
        outcomes.push(one(r).await);
    }
    // What capture alone costs per change at each rate (no sessions at all): subtracted to
    // compare the cost of fan-out per delivery with and without filtering.
    let mut base: HashMap<u64, f64> = HashMap::new();
    for rate in runs.iter().map(|r| r.rate).collect::<HashSet<_>>() {
        let o = one(&Run {
            label: "no sessions (capture only)".into(),
            customers: 0,
            agents: 0,
            rate,
            seconds,
        })
        .await;
        base.insert(rate, o.rowcast_cpu / o.updates.max(1) as f64);
        outcomes.push(o);
    }
    println!(
        "| run | customers | agents | updates/s | updates | deliveries expected | delivered | customers not getting exactly their ticket | agents p50 / p99 ms | customers p50 / p99 ms | rowcast CPU s | rowcast CPU µs per delivered event | of it fan-out (net of capture) µs | DB statements per change |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        let p = |l: &[f64], q| setup::percentile(l, q);
        let capture = base.get(&o.rate).copied().unwrap_or(0.0) * o.updates as f64;
        let net = if o.delivered > 0 {
            format!(
                "{:.2}",
                (o.rowcast_cpu - capture).max(0.0) * 1e6 / o.delivered as f64
            )
        } else {
            "-".into()
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} / {:.1} | {} | {:.1} | {:.2} | {} | {:.2} |",
            o.label,
            o.customers,
            o.agents,
            o.rate,
            o.updates,
            o.expected,
            o.delivered,
            o.wrong_customers,
            p(&o.agent_lat, 0.5),
            p(&o.agent_lat, 0.99),
            if o.customer_lat.is_empty() {
                "-".to_string()
            } else {
                format!(
                    "{:.1} / {:.1}",
                    p(&o.customer_lat, 0.5),
                    p(&o.customer_lat, 0.99)
                )
            },
            o.rowcast_cpu,
            o.rowcast_cpu * 1e6 / o.delivered.max(1) as f64,
            net,
            o.statements_per_change,
        );
        if o.delivered < o.expected || o.wrong_customers > 0 {
            setup::record_failure(format!(
                "audience {}: {} of {} delivered, {} customers wrong",
                o.label, o.delivered, o.expected, o.wrong_customers
            ));
        }
    }
    println!("\nload {}", setup::load_avg());
}

async fn one(r: &Run) -> Outcome {
    let pg = PgTemp::start(PgTempOptions {
        settings: vec![(
            "shared_preload_libraries".into(),
            "pg_stat_statements".into(),
        )],
        ..PgTempOptions::default()
    })
    .expect("PostgreSQL");
    let (db, config) = setup::database(&pg, 0, false).await;
    // One user and one ticket per customer (ids 101 on; at least 1,000 tickets).
    let n = r.customers.max(1000) as i64;
    db.batch_execute(&format!(
        "CREATE EXTENSION pg_stat_statements;
         INSERT INTO users (id, email, name, password_hash)
              SELECT 100 + g, 'c' || g || '@x', 'customer ' || g, 'x' FROM generate_series(1, {n}) g;
         INSERT INTO tickets (id, subject, requester_id)
              SELECT 100 + g, 'ticket ' || g, 100 + g FROM generate_series(1, {n}) g;"
    ))
    .await
    .expect("customers");
    db.batch_execute("VACUUM ANALYZE").await.expect("vacuum");
    setup::migrate_now(&config).await;
    let rc = Rowcast::start(&config);
    let auth = Authenticator::from_config(&config.jwt).expect("jwt");
    let url = |sub: String, role: &str| {
        let token = auth.issue(&sub, role, 3600).expect("token");
        rc.ws_url(&format!("token={token}&rooms={ROOMS}"))
    };
    // Sessions: customers first (session i owns ticket 101 + i), then agents.
    let mut urls = Vec::new();
    for i in 0..r.customers {
        urls.push(url((101 + i).to_string(), "customer"));
    }
    for i in 0..r.agents {
        urls.push(url(format!("agent{i}"), "agent"));
    }
    // In session order (customer i is session i).
    let mut conns: Vec<(usize, clients::Ws)> = futures_util::stream::iter(0..urls.len())
        .map(|i| {
            let url = &urls[i];
            async move { (i, clients::ws(url).await) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    conns.sort_by_key(|(i, _)| *i);
    let conns = conns.into_iter().map(|(_, ws)| ws);
    let mut tasks = Vec::new();
    for mut ws in conns {
        tasks.push(tokio::spawn(async move {
            let mut got: Vec<(u64, f64)> = Vec::new();
            while let Some(Ok(m)) = ws.next().await {
                let t = setup::epoch_ms();
                if let Message::Text(text) = m
                    && let Some(k) = clients::bench_key(text.as_str())
                {
                    got.push((k, t));
                }
            }
            got
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    db.execute("SELECT pg_stat_statements_reset()", &[])
        .await
        .expect("reset statements");
    let cpu0 = rc.cpu_secs();
    let commits = write(&db, r, n).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rowcast_cpu = rc.cpu_secs() - cpu0;
    // Every statement rowcast ran (the bench's own UPDATEs and this query excluded).
    let statements: i64 = db
        .query_one(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_statements
              WHERE query NOT LIKE 'UPDATE tickets SET subject%'
                AND query NOT LIKE '%pg_stat_statements%'",
            &[],
        )
        .await
        .expect("statements")
        .get(0);
    if std::env::var_os("BENCH_STATEMENTS").is_some() {
        for row in db
            .query(
                "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) FROM pg_stat_statements
                  WHERE query NOT LIKE 'UPDATE tickets SET subject%' ORDER BY calls DESC LIMIT 12",
                &[],
            )
            .await
            .expect("statements")
        {
            println!("  {:>8} {}", row.get::<_, i64>(0), row.get::<_, String>(1));
        }
    }
    drop(rc);
    let mut received = Vec::new();
    for t in tasks {
        received.push(t.await.unwrap_or_default());
    }
    let mut agent_lat = Vec::new();
    let mut customer_lat = Vec::new();
    let mut delivered = 0;
    let mut wrong_customers = 0;
    let mut per_ticket: HashMap<i64, HashSet<u64>> = HashMap::new();
    for (k, (ticket, _)) in &commits {
        per_ticket.entry(*ticket).or_default().insert(*k);
    }
    for (i, got) in received.iter().enumerate() {
        let customer = i < r.customers;
        let keys: HashSet<u64> = got.iter().map(|(k, _)| *k).collect();
        if customer {
            let own = 101 + i as i64;
            let want = per_ticket.get(&own).cloned().unwrap_or_default();
            if keys != want || got.len() != want.len() {
                wrong_customers += 1;
            }
        }
        for (k, t) in got {
            let Some((_, c)) = commits.get(k) else {
                continue;
            };
            delivered += 1;
            let lat = (t - c).max(0.0);
            if customer {
                customer_lat.push(lat);
            } else {
                agent_lat.push(lat);
            }
        }
    }
    agent_lat.sort_by(|a, b| a.total_cmp(b));
    customer_lat.sort_by(|a, b| a.total_cmp(b));
    let updates = commits.len();
    Outcome {
        label: r.label.clone(),
        customers: r.customers,
        agents: r.agents,
        rate: r.rate,
        updates,
        agent_lat,
        customer_lat,
        // Every agent gets every update; the owner of the ticket gets it if connected.
        expected: updates * r.agents
            + commits
                .values()
                .filter(|(t, _)| *t < 101 + r.customers as i64)
                .count(),
        delivered,
        wrong_customers,
        rowcast_cpu,
        statements_per_change: statements as f64 / updates.max(1) as f64,
    }
}

/// R updates/s of random customer tickets for S seconds; key → (ticket, commit time).
async fn write(db: &tokio_postgres::Client, r: &Run, tickets: i64) -> HashMap<u64, (i64, f64)> {
    let stmt = db
        .prepare("UPDATE tickets SET subject = $1 WHERE id = $2")
        .await
        .expect("prepare");
    let total = r.rate * r.seconds;
    let mut commits = HashMap::with_capacity(total as usize);
    let mut recent: VecDeque<i64> = VecDeque::new();
    let mut recent_set: HashSet<i64> = HashSet::new();
    let window = RECENT.min(tickets as usize / 2);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / r.rate.max(1)));
    for k in 0..total {
        tick.tick().await;
        let ticket = loop {
            let t = 101 + rand::rng().random_range(0..tickets);
            if !recent_set.contains(&t) {
                break t;
            }
        };
        recent.push_back(ticket);
        recent_set.insert(ticket);
        if recent.len() > window
            && let Some(old) = recent.pop_front()
        {
            recent_set.remove(&old);
        }
        db.execute(&stmt, &[&format!("b{k}"), &ticket])
            .await
            .expect("update");
        commits.insert(k, (ticket, setup::epoch_ms()));
    }
    commits
}
