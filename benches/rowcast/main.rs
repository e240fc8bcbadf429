//! `cargo bench --bench rowcast -- <scenario> [options]`: end-to-end benchmarks that start
//! their own PostgreSQL and the real `rowcast` binary (traffic only to 127.0.0.1, every
//! scenario bounded in time), and print Markdown tables. See docs/benchmarks.md.
//!
//! Scenarios:
//! - `capture-overhead [--seconds S] [--sync off|on]`: pgbench single-row UPDATE, 8 clients —
//!   no capture, the triggers alone, triggers with rowcast consuming, logical decoding alone
//!   and with rowcast consuming (`BENCH_STATEMENTS=1`: the database's statements while
//!   rowcast consumed, both modes).
//! - `latency [--transport ws|socketio|socketio-wire] [--clients N] [--rate R] [--seconds S]`:
//!   N clients in `tickets`, R updates/s — delivered ratio and commit→client latency
//!   percentiles (`socketio` = the npm client in node, `socketio-wire` = Socket.IO spoken by
//!   Rust clients in the bench process; default: all three).
//! - `targets`: the latency targets of issues 2 and 3 (50 `/ws` × 200/s, 200 Socket.IO ×
//!   500/s) and 200 `/ws` × 500/s.
//! - `fanout [--clients N] [--seconds S]`: events delivered per second at 1k, 5k and 10k
//!   clients; a size whose deliveries do not all arrive within S seconds (default 60) is
//!   reported as TIMED OUT, not measured, and the bench exits with status 1.
//! - `memory [--clients N]`: RSS with 10,000 idle connections, `/ws` and Socket.IO.
//! - `catchup [--events E]`: time to replay 100,000 missed events to a resuming client.
//! - `large-transaction [--events N] [--batch-size B]`: logical capture of one `UPDATE` of N
//!   rows (default 1,000,000) with `capture.batch_size` B: rowcast's peak RSS and the time
//!   until every change is in the log.
//! - `webhooks [--events E]`: deliveries per second to a local receiver (default 20,000),
//!   and the live path's latency without and with an endpoint receiving every event.
//! - `audience [--clients N] [--rate R] [--seconds S]`: N customers (default 10,000) each
//!   owning one ticket plus 50 agents in the frontend's five rooms, R updates/s (default
//!   500) of random tickets: latency for agents and customers, whether each customer got
//!   exactly their own ticket's updates, rowcast CPU per delivered event and database
//!   statements per change — beside the same population as agents only and a small one.
//! - `recovery [--events E]`: an npm socket.io-client recovers its session after E missed
//!   events (default 10,000): time until it has them all.
//! - `recovery-arg [--seconds S]`: 200 npm Socket.IO clients × 500 updates/s with connection-
//!   state recovery on (each event's seq as a trailing argument) and off, side by side.
//! - `versus [--clients N] [--rate R] [--seconds S]`: rowcast (triggers, logical) side by
//!   side with the hand-made Node bridge in `benches/peer` (with its own payload and with
//!   rowcast's), the same npm socket.io-client processes and writer; default 50 × 200/s.
//! - `versus-targets [--seconds S]`: `versus` at 50 × 200/s, 1,000 × 20/s and 200 × 500/s,
//!   then a verdict per issue-15 target.
//! - `sustained [--seconds S] [--capture triggers|logical]`: pgbench flat out for S seconds
//!   (default 60) in both capture modes (or the one named; then without the decoding-alone
//!   row): probe lag while it runs and the time until everything is delivered once it stops.
//! - `replicas [--rate R] [--seconds S]`: database statements, time and rows per change with
//!   1 and with 3 replicas (`pg_stat_statements`).
//! - `all`: every scenario with its defaults.
//!
//! Every scenario passes its whole `rowcast::config::Config` to the binary (a TOML file named
//! by `ROWCAST_CONFIG`; the bench's own `ROWCAST_*` variables are not passed on), prints the
//! settings it runs with, and waits for `GET /readyz` before measuring. Runs that produce no
//! valid measurement are listed at the end under FAILED, and the exit status is 1.

mod audience;
mod bigtxn;
mod catchup;
mod clients;
mod fanout;
mod latency;
mod memory;
mod overhead;
mod recovery;
mod replicas;
mod setup;
mod sustained;
mod versus;
mod webhooks;

use latency::Via;

struct Args {
    scenario: String,
    clients: Option<usize>,
    rate: Option<u64>,
    seconds: Option<u64>,
    events: Option<i64>,
    batch_size: Option<i64>,
    transport: Option<Via>,
    capture: Option<rowcast::config::CaptureMode>,
    /// `capture-overhead --sync off|on`: only that `synchronous_commit` (default: both).
    sync: Option<&'static str>,
}

fn parse_args() -> Args {
    let mut a = Args {
        scenario: "all".into(),
        clients: None,
        rate: None,
        seconds: None,
        events: None,
        batch_size: None,
        transport: None,
        capture: None,
        sync: None,
    };
    let mut it = std::env::args().skip(1).filter(|s| s != "--bench");
    while let Some(arg) = it.next() {
        let mut value =
            |name: &str| -> String { it.next().unwrap_or_else(|| panic!("{name} needs a value")) };
        let num = |name: &str, v: String| -> u64 {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, got {v:?}"))
        };
        match arg.as_str() {
            "--clients" => a.clients = Some(num(&arg, value(&arg)) as usize),
            "--rate" => a.rate = Some(num(&arg, value(&arg))),
            "--seconds" => a.seconds = Some(num(&arg, value(&arg))),
            "--events" => a.events = Some(num(&arg, value(&arg)) as i64),
            "--batch-size" => a.batch_size = Some(num(&arg, value(&arg)) as i64),
            "--transport" => {
                a.transport = Some(match value(&arg).as_str() {
                    "ws" => Via::Ws,
                    "socketio" => Via::SocketIo,
                    "socketio-wire" => Via::SocketIoWire,
                    other => panic!("--transport is ws, socketio or socketio-wire, not {other:?}"),
                })
            }
            "--capture" => {
                a.capture = Some(match value(&arg).as_str() {
                    "triggers" => rowcast::config::CaptureMode::Triggers,
                    "logical" => rowcast::config::CaptureMode::Logical,
                    other => panic!("--capture is triggers or logical, not {other:?}"),
                })
            }
            "--sync" => {
                a.sync = Some(match value(&arg).as_str() {
                    "off" => "off",
                    "on" => "on",
                    other => panic!("--sync is off or on, not {other:?}"),
                })
            }
            s if !s.starts_with('-') => a.scenario = s.to_string(),
            other => panic!("unknown option {other}"),
        }
    }
    a
}

fn main() {
    let args = parse_args();
    setup::raise_nofile();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("{}", setup::machine());
    let seconds = args.seconds.unwrap_or(15);
    let latency = |via: Option<Via>, clients: usize, rate: u64| {
        let vias = match via {
            Some(v) => vec![v],
            None => vec![Via::Ws, Via::SocketIo, Via::SocketIoWire],
        };
        println!("\n## latency ({seconds} s per run)\n");
        latency::header();
        let mut outcomes = Vec::new();
        for v in vias {
            let o = rt.block_on(latency::run(v, clients, rate, seconds));
            latency::row(&o);
            outcomes.push(o);
        }
        latency::footer(&outcomes);
    };
    let targets = || {
        println!("\n## latency targets ({seconds} s per run)\n");
        latency::header();
        let mut outcomes = Vec::new();
        for (via, clients, rate) in [
            (Via::Ws, 50, 200),
            (Via::Ws, 200, 500),
            (Via::SocketIo, 200, 500),
            (Via::SocketIoWire, 200, 500),
        ] {
            let o = rt.block_on(latency::run(via, clients, rate, seconds));
            latency::row(&o);
            outcomes.push(o);
        }
        latency::footer(&outcomes);
    };
    let sizes = args
        .clients
        .map(|c| vec![c])
        .unwrap_or_else(|| vec![1000, 5000, 10_000]);
    match args.scenario.as_str() {
        "capture-overhead" => rt.block_on(overhead::run(seconds, args.sync)),
        "latency" => latency(
            args.transport,
            args.clients.unwrap_or(50),
            args.rate.unwrap_or(200),
        ),
        "targets" => targets(),
        "fanout" => rt.block_on(fanout::run(&sizes, args.seconds)),
        "memory" => rt.block_on(memory::run(args.clients.unwrap_or(10_000))),
        "catchup" => rt.block_on(catchup::run(args.events.unwrap_or(100_000))),
        "recovery" => rt.block_on(recovery::run(args.events.unwrap_or(10_000))),
        "recovery-arg" => {
            println!(
                "\n## latency with and without the trailing seq argument ({seconds} s per run)\n"
            );
            latency::header();
            let mut outcomes = Vec::new();
            for on in [true, false] {
                let o = rt.block_on(latency::run_tweaked(
                    Via::SocketIo,
                    200,
                    500,
                    seconds,
                    |c| c.hub.socketio_recovery = on,
                ));
                latency::row(&o);
                outcomes.push(o);
            }
            latency::footer(&outcomes);
        }
        "audience" => rt.block_on(audience::run(
            args.clients.unwrap_or(10_000),
            50,
            args.rate.unwrap_or(500),
            args.seconds.unwrap_or(20),
        )),
        "large-transaction" => rt.block_on(bigtxn::run(
            args.events.unwrap_or(1_000_000),
            args.batch_size,
        )),
        "webhooks" => {
            rt.block_on(webhooks::throughput(args.events.unwrap_or(20_000)));
            rt.block_on(webhooks::enqueue_cost(seconds));
        }
        "versus" => {
            rt.block_on(versus::versus(
                args.clients.unwrap_or(50),
                args.rate.unwrap_or(200),
                seconds,
            ));
        }
        "versus-targets" => rt.block_on(versus::targets(seconds)),
        "sustained" => rt.block_on(sustained::run(args.seconds.unwrap_or(60), args.capture)),
        "replicas" => rt.block_on(replicas::run(args.rate.unwrap_or(500), seconds)),
        "all" => {
            rt.block_on(overhead::run(seconds, None));
            targets();
            rt.block_on(fanout::run(&sizes, None));
            rt.block_on(memory::run(10_000));
            rt.block_on(catchup::run(100_000));
            rt.block_on(bigtxn::run(1_000_000, None));
            rt.block_on(webhooks::throughput(20_000));
            rt.block_on(webhooks::enqueue_cost(seconds));
            rt.block_on(versus::targets(seconds));
            rt.block_on(sustained::run(60, None));
            rt.block_on(replicas::run(500, seconds));
        }
        other => panic!("unknown scenario {other}; see benches/rowcast/main.rs"),
    }
    if setup::report_failures() {
        std::process::exit(1);
    }
}
