//! SQL figures, measured in one run (`cargo bench -p glasshouse-tests
//! --bench sql`; needs `psql`). `cargo test --benches` runs it in smoke
//! mode (`glasshouse_tests::bench`: a few thousand events, one run).
//!
//! 1. Lake ingest: `GLASSHOUSE_BENCH_SQL_EVENTS` (default ten million)
//!    synthetic process events (`glasshouse_lake::fixture`, 48 containers of
//!    four workloads) are decoded from Arrow IPC exactly as from Kafka and
//!    written to Parquet by the lake (events/s).
//! 2. A group-by-workload query over those files through the PostgreSQL
//!    front door (real `psql`, its own `\timing` of the query: network,
//!    protocol and row encoding included, process start-up not) against
//!    DataFusion directly over the same Parquet files: a `SessionContext`
//!    with DataFusion's default configuration (`SessionContext::new()`) and
//!    a `ListingTable` on the table's folder with the schema inferred from
//!    the files — what anyone reading the lake with DataFusion would get.
//!    Same run, interleaved, min / median / max of
//!    `GLASSHOUSE_BENCH_SQL_RUNS` (default 7): overhead ratio of the medians
//!    (goal ≤ 1.2). Also printed: the engine in-process
//!    (the front doors' engine without the wire protocol), and DataFusion
//!    reading the same files with strings as plain Utf8 (what the lake did
//!    before its strings were views).
//! 3. Ingest-to-queryable latency: a message produced to a real broker
//!    (tansu) until a query through the engine sees its row, the lake
//!    writer consuming as in the analyzer (p50, p99 of
//!    `GLASSHOUSE_BENCH_SQL_PROBES`, default 20; polled every 10 ms).

use std::io::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::config::LakeConfig;
use glasshouse_lake::datafusion::catalog::TableProvider as _;
use glasshouse_lake::datafusion::datasource::file_format::parquet::ParquetFormat;
use glasshouse_lake::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use glasshouse_lake::datafusion::prelude::{SessionConfig, SessionContext};
use glasshouse_lake::engine::{Engine, Limits};
use glasshouse_lake::lake::Lake;
use glasshouse_lake::writer::Ingest;
use glasshouse_lake::{fixture, pg, writer};
use glasshouse_tests::bench::{self, Load, Spread};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

const QUERY: &str = "SELECT workload_id, count(*) AS events, count(DISTINCT container_id) AS containers, \
    sum(CASE WHEN kind = 'exec' THEN 1 ELSE 0 END) AS execs FROM process_events GROUP BY workload_id ORDER BY events DESC";
const THREADS: usize = 2;
const PASSWORD: &str = "bench";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Milliseconds of each run: min / median / max.
fn spread_ms(v: &[Duration]) -> anyhow::Result<Spread> {
    let ms: Vec<f64> = v.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    Spread::of(&ms).context("no runs")
}

/// One run of `QUERY` through psql: the time psql's `\timing` reports.
fn psql_timed(port: u16) -> anyhow::Result<(Duration, String)> {
    let out = Command::new("psql")
        .env("PGPASSWORD", PASSWORD)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "glasshouse",
            "-d",
            "glasshouse",
            "-X",
            "-At",
        ])
        .args(["-c", "\\timing on", "-c", QUERY])
        .output()
        .context("psql")?;
    ensure!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    let ms: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("Time: "))
        .and_then(|t| t.split_whitespace().next())
        .context("no timing line")?
        .parse()?;
    let rows = text
        .lines()
        .filter(|l| !l.starts_with("Time: ") && !l.starts_with("Timing"))
        .collect::<Vec<_>>()
        .join("\n");
    Ok((Duration::from_secs_f64(ms / 1000.0), rows))
}

fn main() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(THREADS)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    bench::banner("sql");
    let events = env_usize("GLASSHOUSE_BENCH_SQL_EVENTS", bench::size(10_000_000, 20_000));
    let runs = env_usize("GLASSHOUSE_BENCH_SQL_RUNS", bench::size(7, 1));
    let probes = env_usize("GLASSHOUSE_BENCH_SQL_PROBES", bench::size(20, 2));
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: dir.path().display().to_string(),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&config, "bench", Duration::from_secs(60)).await?);
    let containers = fixture::containers(48);
    let base_ns = 1_767_265_200_000_000_000;

    // 1. Ingest to Parquet.
    ingest_to_parquet(&lake, &containers, events, base_ns).await?;

    // 2. Group-by through the PostgreSQL front door vs DataFusion directly.
    let engine = Engine::new(
        &lake,
        Limits {
            timeout: Duration::from_secs(600),
            memory_bytes: 4 << 30,
            threads: THREADS,
            max_depth: 256,
        },
    )
    .await?;
    let cancel = CancellationToken::new();
    let port = serve_pg(&engine, &cancel).await?;

    // DataFusion as anyone would read the lake's files: default session
    // configuration, the schema inferred from the Parquet files.
    let direct = SessionContext::new();
    let folder = format!(
        "file://{}/process_events/",
        std::fs::canonicalize(dir.path())?.display()
    );
    let table = ListingTable::try_new(
        ListingTableConfig::new(ListingTableUrl::parse(&folder)?)
            .with_listing_options(
                ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
            )
            .infer_schema(&direct.state())
            .await?,
    )?;
    let inferred = table.schema();
    let lake_schema = lake.table("process_events").context("table")?.schema.clone();
    ensure!(
        inferred.fields() == lake_schema.fields(),
        "DataFusion infers another schema than the lake's:\n{inferred:?}\n{lake_schema:?}"
    );
    direct.register_table("process_events", Arc::new(table))?;
    println!(
        "DataFusion default session: target_partitions {}, schema_force_view_types {}; the lake's engine: {THREADS} threads",
        direct.copied_config().target_partitions(),
        direct
            .copied_config()
            .options()
            .execution
            .parquet
            .schema_force_view_types
    );

    // For comparison, the lake's strings before they were views: the same
    // files read with strings as plain Utf8.
    let mut utf8_config = SessionConfig::new();
    utf8_config.options_mut().execution.parquet.schema_force_view_types = false;
    let plain_utf8 = SessionContext::new_with_config(utf8_config);
    plain_utf8
        .register_parquet("process_events", &folder, Default::default())
        .await?;

    let mut via_pg = Vec::new();
    let mut via_df = Vec::new();
    let mut via_engine = Vec::new();
    let mut via_utf8 = Vec::new();
    let mut answers = (String::new(), String::new());
    let load = Load::start();
    for i in 0..runs + 1 {
        let (t, rows) = tokio::task::spawn_blocking(move || psql_timed(port)).await??;
        let s = Instant::now();
        let batches = direct.sql(QUERY).await?.collect().await?;
        let d = s.elapsed();
        // The engine behind the front doors, in-process: the lake's catalog
        // and the query runtime without the wire protocol.
        let s = Instant::now();
        engine.query(QUERY).await?;
        let e = s.elapsed();
        let s = Instant::now();
        plain_utf8.sql(QUERY).await?.collect().await?;
        let u = s.elapsed();
        if i == 0 {
            // Warm-up (page cache, first plans): not counted; answers compared.
            let csv = glasshouse_lake::output::render(
                &batches[0].schema(),
                &batches,
                glasshouse_lake::output::Style::Csv,
                |s| s.to_owned(),
            )?;
            let direct_rows: Vec<String> = csv.lines().skip(1).map(|l| l.replace(',', "|")).collect();
            answers = (rows, direct_rows.join("\n"));
            continue;
        }
        via_pg.push(t);
        via_df.push(d);
        via_engine.push(e);
        via_utf8.push(u);
    }
    ensure!(
        answers.0.trim() == answers.1.trim(),
        "psql returned\n{}\nDataFusion\n{}",
        answers.0,
        answers.1
    );
    let (p, d, e, u) = (
        spread_ms(&via_pg)?,
        spread_ms(&via_df)?,
        spread_ms(&via_engine)?,
        spread_ms(&via_utf8)?,
    );
    println!(
        "group-by-workload over {events} events, {runs} runs interleaved (min / median / max): PostgreSQL front door \
         (psql \\timing) {p:.1} ms, DataFusion directly over the same files (default session, inferred schema) \
         {d:.1} ms: overhead ratio of the medians {:.2} (goal <= 1.2)",
        p.median / d.median
    );
    println!(
        "  the engine in-process (no wire) {e:.1} ms: the wire protocol and psql cost a ratio of {:.2}",
        p.median / e.median
    );
    println!(
        "  DataFusion over the same files with strings as plain Utf8 (the lake before Utf8View) {u:.1} ms: views are {:.2}x as fast",
        u.median / d.median
    );
    println!("  while it ran: {}", load.report());

    // 3. Ingest-to-queryable latency through a real broker and the writer.
    ingest_to_queryable(&containers, probes, base_ns).await?;
    cancel.cancel();
    std::io::stdout().flush()?;
    Ok(())
}

/// Ingests `events` synthetic events into `lake` as Parquet (a file per
/// million rows) and prints the rate.
async fn ingest_to_parquet(
    lake: &Arc<Lake>,
    containers: &[fixture::Container],
    events: usize,
    base_ns: i64,
) -> anyhow::Result<()> {
    let per_message = 50_000;
    let per_file = 1_000_000;
    let started = Instant::now();
    let mut ingest = Ingest::new(lake.clone());
    let mut written = 0usize;
    while written < events {
        let n = per_message.min(events - written);
        // Events are 1 ms apart: ten million span about three hours (partitions).
        let msg = fixture::process_message(containers, written as u64, n, base_ns);
        ingest.message("glasshouse.process", &msg, None, 0)?;
        written += n;
        if lake.tail_rows("process_events") >= per_file || written == events {
            lake.flush("process_events").await?;
        }
    }
    let ingest_time = started.elapsed();
    let files = lake.files("process_events");
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    println!(
        "lake ingest: {events} events -> {} Parquet files, {:.1} MiB, in {:.1} s: {:.0} events/s (IPC decode + Parquet zstd)",
        files.len(),
        bytes as f64 / 1048576.0,
        ingest_time.as_secs_f64(),
        events as f64 / ingest_time.as_secs_f64()
    );

    Ok(())
}

/// Ingest-to-queryable latency: `probes` events produced to a real broker,
/// each timed until a query through the lake writer's lake sees it.
async fn ingest_to_queryable(containers: &[fixture::Container], probes: usize, base_ns: i64) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let broker = glasshouse_tests::Broker::start()?;
    let brokers = broker.bootstrap();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
    let small_dir = tempfile::tempdir()?;
    let small = Arc::new(
        Lake::open(
            &LakeConfig {
                enabled: true,
                location: small_dir.path().display().to_string(),
                ..Default::default()
            },
            "bench-latency",
            Duration::from_secs(60),
        )
        .await?,
    );
    let small_engine = Engine::new(
        &small,
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 1 << 30,
            threads: THREADS,
            max_depth: 256,
        },
    )
    .await?;
    let settings = writer::WriterSettings {
        brokers: brokers.clone(),
        group_id: "bench-lake".into(),
        instance_id: None,
        session_timeout_ms: 10_000,
        extra: Default::default(),
        compact_interval: None,
    };
    let w = tokio::spawn(writer::run(small.clone(), settings, cancel.clone()));
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "0")
        .create()?;
    let mut latencies = Vec::new();
    for probe in 0..probes + 1 {
        let msg = fixture::process_message(containers, 1_000_000_000 + probe as u64, 1, base_ns);
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::<str, [u8]>::to("glasshouse.process")
                    .key("bench")
                    .payload(&msg),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)?;
        let pid = 1000 + 1_000_000_000u64 + probe as u64;
        let sql = format!("SELECT count(*) FROM process_events WHERE pid = {}", pid as u32);
        loop {
            let (_, b) = small_engine.query(&sql).await?;
            let n = glasshouse_lake::output::render(&b[0].schema(), &b, glasshouse_lake::output::Style::Csv, |s| {
                s.to_owned()
            })?;
            if n.lines().nth(1) == Some("1") {
                break;
            }
            ensure!(
                sent.elapsed() < Duration::from_secs(60),
                "probe {probe} not queryable within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if probe > 0 {
            // The first waits for the consumer group to form: not counted.
            latencies.push(sent.elapsed());
        }
    }
    latencies.sort();
    let pct = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "ingest-to-queryable (produce to a real broker -> lake writer -> query sees the row), {probes} probes: \
         p50 {:.0} ms, p99 {:.0} ms",
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    cancel.cancel();
    let _ = w.await;
    Ok(())
}

/// A PostgreSQL front door on `engine` on a free loopback port (until
/// `cancel`): its port.
async fn serve_pg(engine: &Engine, cancel: &CancellationToken) -> anyhow::Result<u16> {
    let listener = pg::bind("127.0.0.1:0".parse()?).await?;
    let port = listener.local_addr()?.port();
    let creds = pg::Credentials {
        user: "glasshouse".into(),
        password: PASSWORD.into(),
    };
    tokio::spawn(pg::serve(
        listener,
        engine.clone(),
        creds,
        Default::default(),
        cancel.clone(),
    ));
    Ok(port)
}
