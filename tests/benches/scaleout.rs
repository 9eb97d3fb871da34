//! The lake's scale-out with a million events (`cargo bench -p
//! glasshouse-tests --bench scaleout`; needs `psql`, `weed`, `tansu` and
//! pyiceberg, as the tests do): `glasshouse_tests::scaleout`, the scenario
//! of `tests/tests/sql/sql_replicas.rs` — three analyzer processes writing
//! one Iceberg table through a REST catalog with S3 storage (SeaweedFS),
//! two query services, one analyzer SIGKILLed at a quarter and restarted at
//! half, snapshot expiry from outside every 0.7 s, a pyiceberg compaction
//! and retention delete at three quarters — with
//! `GLASSHOUSE_BENCH_SCALEOUT_EVENTS` events (default 1,000,000, in
//! messages of 1,000). It fails unless both query services and pyiceberg
//! count exactly that many rows and distinct events. Printed: the times
//! (group formed, producing, all counted after the SIGKILL and after the
//! last event), the end-to-end rate, what compaction and expiry did, and
//! the machine's load. `cargo test --benches` runs it in smoke mode
//! (2,000 events).

use std::time::Duration;

use glasshouse_tests::bench::{self, Load};
use glasshouse_tests::scaleout::{self, Scenario};

fn main() -> anyhow::Result<()> {
    bench::banner("scaleout");
    let events: u64 = std::env::var("GLASSHOUSE_BENCH_SCALEOUT_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(bench::size(1_000_000, 2_000));
    let per_message = bench::size(1_000, 100);
    let scenario = Scenario {
        messages: events.div_ceil(per_message),
        per_message,
        pace: Duration::from_millis(10),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let load = Load::start();
    let r = runtime.block_on(scaleout::run(&scenario))?;
    let rate = r.events as f64 / (r.produced + r.last_to_counted).as_secs_f64();
    println!(
        "scale-out: {} events ({} messages of {}) through 3 analyzers (one SIGKILLed at 1/4, restarted at 1/2) into \
         one Iceberg table on a REST catalog, read by 2 query services and pyiceberg: every event counted once by \
         each (pyiceberg: {}: rows, distinct, data files, snapshots left)",
        r.events, scenario.messages, scenario.per_message, r.pyiceberg
    );
    println!(
        "  group formed {:.1} s; produced in {:.1} s; all counted {:.1} s after the SIGKILL and {:.1} s after the \
         last event: {:.0} events/s end to end; compaction (attempt, files before, after, rows) {}, retention \
         attempt {}; {} snapshots expired meanwhile; {:.1} s in all",
        r.formed.as_secs_f64(),
        r.produced.as_secs_f64(),
        r.kill_to_counted.as_secs_f64(),
        r.last_to_counted.as_secs_f64(),
        rate,
        r.compaction,
        r.retention,
        r.expired,
        r.total.as_secs_f64()
    );
    println!("  {}", load.report());
    Ok(())
}
