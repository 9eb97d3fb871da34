//! SQL and lake figures, measured in one run (`cargo bench -p
//! glasshouse-tests --bench sql`; needs `psql`). `cargo test --benches`
//! runs it in smoke mode (`glasshouse_tests::bench`: a few thousand events,
//! one run).
//!
//! 1. Lake write throughput: `GLASSHOUSE_BENCH_SQL_EVENTS` (default ten
//!    million) synthetic process events (`glasshouse_lake::fixture`, 48
//!    containers of four workloads) decoded from Arrow IPC exactly as from
//!    Kafka and committed to the Iceberg table (embedded sqlite catalog,
//!    local warehouse) a million rows per commit, with their offsets, as
//!    the writer commits; then the same events into the deprecated Parquet
//!    layout (a file per million rows), the lake before Iceberg: events/s
//!    of each and their ratio.
//! 2. A group-by-workload query over the Iceberg table through the
//!    PostgreSQL front door of the query service's engine (real `psql`,
//!    its own `\timing` of the query: network, protocol and row encoding
//!    included, process start-up not) against DataFusion directly over the
//!    same Iceberg data files: a `SessionContext` with DataFusion's default
//!    configuration (`SessionContext::new()`) and a `ListingTable` over the
//!    current snapshot's files with the schema inferred from them — what
//!    anyone reading the files with DataFusion would get. Same run,
//!    interleaved, min / median / max of `GLASSHOUSE_BENCH_SQL_RUNS`
//!    (default 7): overhead ratio of the medians (goal <= 1.1). Also
//!    printed: the engine in-process (no wire protocol).
//! 3. Ingest-to-queryable latency: a message produced to a real broker
//!    (tansu) until a query through the engine sees its row, the Iceberg
//!    lake writer consuming and committing as in the analyzer with
//!    `flush_secs = 1` (p50, p99 of `GLASSHOUSE_BENCH_SQL_PROBES`, default
//!    20; polled every 10 ms). A row waits for the next commit, so the
//!    latency is about half the flush period plus a commit.

use std::io::Write as _;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use glasshouse_lake::config::{LakeConfig, LakeFormat};
use glasshouse_lake::datafusion::datasource::file_format::parquet::ParquetFormat;
use glasshouse_lake::datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use glasshouse_lake::datafusion::prelude::SessionContext;
use glasshouse_lake::engine::{Engine, Limits};
use glasshouse_lake::iceberg_lake::{self, DataFiles, Flush, IcebergLake, OffsetRange};
use glasshouse_lake::lake::Lake;
use glasshouse_lake::writer::{Decoder, Ingest, WriterSettings};
use glasshouse_lake::{fixture, pg};
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
    let lake = IcebergLake::open(&config).await?;
    let containers = fixture::containers(48);
    let base_ns = 1_767_265_200_000_000_000;

    // 1. Write throughput: Iceberg, then the Parquet layout.
    let load = Load::start();
    let iceberg = ingest_to_iceberg(&lake, &containers, events, base_ns).await?;
    let parquet = ingest_to_parquet(&containers, events, base_ns).await?;
    println!(
        "  Iceberg / Parquet layout write throughput: {:.2} (while it ran: {})",
        iceberg / parquet,
        load.report()
    );

    // 2. Group-by through the PostgreSQL front door vs DataFusion directly.
    let engine = iceberg_lake::engine(
        &lake,
        &config,
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

    // DataFusion as anyone would read the table's files: default session
    // configuration, the schema inferred from the files of the current
    // snapshot.
    let direct = SessionContext::new();
    let DataFiles::Snapshot { paths, .. } = lake.table("process_events").context("table")?.data_files(None).await?
    else {
        anyhow::bail!("no snapshot of process_events after the ingest");
    };
    let urls = paths
        .iter()
        .map(ListingTableUrl::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let table = ListingTable::try_new(
        ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(
                ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
            )
            .infer_schema(&direct.state())
            .await?,
    )?;
    direct.register_table("process_events", Arc::new(table))?;
    println!(
        "DataFusion default session: target_partitions {}; the query service's engine: {THREADS} threads; {} data files",
        direct.copied_config().target_partitions(),
        paths.len()
    );

    let mut via_pg = Vec::new();
    let mut via_df = Vec::new();
    let mut via_engine = Vec::new();
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
    }
    ensure!(
        answers.0.trim() == answers.1.trim(),
        "psql returned\n{}\nDataFusion\n{}",
        answers.0,
        answers.1
    );
    let (p, d, e) = (spread_ms(&via_pg)?, spread_ms(&via_df)?, spread_ms(&via_engine)?);
    println!(
        "group-by-workload over {events} events in Iceberg, {runs} runs interleaved (min / median / max): PostgreSQL \
         front door (psql \\timing) {p:.1} ms, DataFusion directly over the same data files (default session, \
         inferred schema) {d:.1} ms: overhead ratio of the medians {:.2} (goal <= 1.1)",
        p.median / d.median
    );
    println!(
        "  the engine in-process (no wire) {e:.1} ms: the wire protocol and psql cost a ratio of {:.2}",
        p.median / e.median
    );
    println!("  while it ran: {}", load.report());

    // 3. Ingest-to-queryable latency through a real broker and the writer.
    ingest_to_queryable(&containers, probes, base_ns).await?;
    cancel.cancel();
    std::io::stdout().flush()?;
    Ok(())
}

/// Commits `events` synthetic events to the Iceberg table a million rows
/// at a time, as the writer would (decoded from Arrow IPC, offsets in the
/// snapshot); prints and returns the rate (events/s).
async fn ingest_to_iceberg(
    lake: &IcebergLake,
    containers: &[fixture::Container],
    events: usize,
    base_ns: i64,
) -> anyhow::Result<f64> {
    let per_message = 50_000;
    let per_commit = 1_000_000;
    let started = Instant::now();
    let mut decoder = Decoder::default();
    let (mut written, mut first, mut commits) = (0usize, 0i64, 0usize);
    let mut pending = Vec::new();
    let mut pending_rows = 0;
    let (mut files, mut bytes) = (0usize, 0u64);
    while written < events {
        let n = per_message.min(events - written);
        // Events are 1 ms apart: ten million span about three hours (partitions).
        let msg = fixture::process_message(containers, written as u64, n, base_ns);
        let (_, batches) = decoder.decode("glasshouse.process", &msg, None, 0)?;
        pending.extend(batches);
        pending_rows += n;
        written += n;
        if pending_rows >= per_commit || written == events {
            // One Kafka message per 50,000 events: offsets first..next.
            let next = first + pending.len() as i64;
            let appended = lake
                .append(
                    "process_events",
                    &pending,
                    &[OffsetRange {
                        partition: 0,
                        first,
                        next,
                    }],
                )
                .await?;
            (files, bytes, commits) = (files + appended.files, bytes + appended.bytes, commits + 1);
            first = next;
            pending.clear();
            pending_rows = 0;
        }
    }
    let took = started.elapsed();
    let rate = events as f64 / took.as_secs_f64();
    let rows = lake.table("process_events").context("table")?.rows().await?;
    ensure!(rows == events as u64, "{rows} rows in the table for {events} events");
    println!(
        "lake write, Iceberg: {events} events -> {commits} commits, {files} data files, {:.1} MiB, in {:.1} s: \
         {rate:.0} events/s (IPC decode + Parquet zstd + manifests + catalog commit)",
        bytes as f64 / 1048576.0,
        took.as_secs_f64(),
    );
    Ok(rate)
}

/// The same events into the deprecated Parquet layout (a file per million
/// rows); prints and returns the rate (events/s).
async fn ingest_to_parquet(containers: &[fixture::Container], events: usize, base_ns: i64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        format: LakeFormat::Parquet,
        location: dir.path().display().to_string(),
        ..Default::default()
    };
    let lake = Arc::new(Lake::open(&config, "bench", Duration::from_secs(60)).await?);
    let per_message = 50_000;
    let per_file = 1_000_000;
    let started = Instant::now();
    let mut ingest = Ingest::new(lake.clone());
    let mut written = 0usize;
    while written < events {
        let n = per_message.min(events - written);
        let msg = fixture::process_message(containers, written as u64, n, base_ns);
        ingest.message("glasshouse.process", &msg, None, 0)?;
        written += n;
        if lake.tail_rows("process_events") >= per_file || written == events {
            lake.flush("process_events").await?;
        }
    }
    let took = started.elapsed();
    let rate = events as f64 / took.as_secs_f64();
    let files = lake.files("process_events");
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    println!(
        "lake write, Parquet layout (deprecated): {events} events -> {} files, {:.1} MiB, in {:.1} s: {rate:.0} events/s",
        files.len(),
        bytes as f64 / 1048576.0,
        took.as_secs_f64(),
    );
    Ok(rate)
}

/// Ingest-to-queryable latency: `probes` events produced to a real broker,
/// each timed until a query through the engine over the Iceberg lake the
/// writer commits to sees it.
async fn ingest_to_queryable(containers: &[fixture::Container], probes: usize, base_ns: i64) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let broker = glasshouse_tests::Broker::start()?;
    let brokers = broker.bootstrap();
    glasshouse_runtime::kafka::ensure_topics(&brokers, &Default::default(), Default::default(), &cancel).await?;
    let small_dir = tempfile::tempdir()?;
    let config = LakeConfig {
        enabled: true,
        location: small_dir.path().display().to_string(),
        flush_secs: 1,
        ..Default::default()
    };
    let small = Arc::new(IcebergLake::open(&config).await?);
    let small_engine = iceberg_lake::engine(
        &small,
        &config,
        Limits {
            timeout: Duration::from_secs(30),
            memory_bytes: 1 << 30,
            threads: THREADS,
            max_depth: 256,
        },
    )
    .await?;
    let settings = WriterSettings {
        brokers: brokers.clone(),
        group_id: "bench-lake".into(),
        instance_id: None,
        session_timeout_ms: 10_000,
        extra: Default::default(),
        compact_interval: None,
    };
    let w = tokio::spawn(iceberg_lake::run(
        small.clone(),
        settings,
        Flush::of(&config),
        cancel.clone(),
    ));
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
        "ingest-to-queryable (produce to a real broker -> Iceberg lake writer, flush_secs 1 -> query sees the row), \
         {probes} probes: p50 {:.0} ms, p99 {:.0} ms",
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
