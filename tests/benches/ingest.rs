//! Aggregator throughput and cost, printed as figures and ratios measured in
//! one run (`cargo bench -p glasshouse-tests --bench ingest`; needs the release
//! binaries: `cargo build --release --workspace --bins`). `cargo test
//! --benches` runs it in smoke mode ([`glasshouse_tests::bench`]). Every
//! part runs `rounds()` times and prints min / median / max and the
//! machine's load while it ran.
//!
//! 1. Simulated agents (the real agent stream client) on loopback stream
//!    `AGENTS × batches() × EVENTS` exec events through one aggregator
//!    process into a tansu broker; records per second of wall time and per
//!    second of the aggregator's own CPU time (records/s per core).
//! 2. References: the Arrow IPC message values the aggregator wrote are read
//!    back; (a) produced again by a plain rdkafka producer with the same
//!    settings (for information), and (b) the inherent work: their rows
//!    built into Arrow, encoded and produced; ratio = aggregator CPU per
//!    record / (b)'s.
//! 3. Peak aggregator memory while the broker is stalled (SIGSTOP) for
//!    `stall_secs()` seconds with agents streaming.
//! 4. With `GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR` (a release aggregator of
//!    another revision, built by `tests/benches/reference.sh`): both
//!    aggregators take the same load in alternating rounds against the same
//!    broker; aggregator CPU per record of each and the ratio of the
//!    medians. `GLASSHOUSE_BENCH_AGGREGATOR_BINARY` names the aggregator
//!    measured (default: this workspace's, beside the bench), and
//!    `GLASSHOUSE_BENCH_ONLY=budget` runs part 4 alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use glasshouse_agent::attribute::ContainerKey;
use glasshouse_agent::client;
use glasshouse_agent::pipeline::{Container, Event, PendingBatch};
use glasshouse_agent::runtime::ContainerMeta;
use glasshouse_proto::process::Kind;
use glasshouse_proto::record::RecordType;
use glasshouse_proto::v1;
use glasshouse_tests::bench::{self, Load, Spread, own_cpu};
use glasshouse_tests::{AggregatorProcess, Broker, free_port, simulated};
use rdkafka::ClientConfig as KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENTS: u64 = 8;
const EVENTS: usize = 500;

/// Batches per agent in one round (smoke: a few).
fn batches() -> u64 {
    bench::size(250, 4)
}

/// Rounds of each part.
fn rounds() -> usize {
    bench::size(5, 1)
}

/// Broker stall of part 3; `GLASSHOUSE_BENCH_STALL_SECS` overrides it.
fn stall_secs() -> u64 {
    std::env::var("GLASSHOUSE_BENCH_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(bench::size(60, 2))
}

fn make_batches(agent: u64, batches: u64) -> Vec<PendingBatch> {
    let container = Arc::new(Container {
        key: ContainerKey {
            runtime: v1::ContainerRuntime::Podman,
            id: format!("{agent:064x}"),
            pod_uid: None,
        },
        meta: ContainerMeta {
            name: Some(format!("web-{agent}")),
            image: Some(format!("registry.local/shop/web-{}:1.4", agent % 4)),
            image_id: Some(format!("sha256:{:064x}", agent % 4)),
            labels: Default::default(),
        },
        workload_id: format!("registry.local/shop/web-{}", agent % 4),
        complete: true,
        reported: true,
    });
    let paths = ["/usr/bin/curl", "/bin/sh", "/usr/local/bin/app", "/usr/bin/python3"];
    (1..=batches)
        .map(|sequence| PendingBatch {
            sequence,
            events: (0..EVENTS)
                .map(|i| Event {
                    time_unix_ns: glasshouse_tests::epoch()
                        + i64::try_from(sequence * 1_000_000 + i as u64).unwrap_or(0),
                    kind: Kind::Exec,
                    container: Some(container.clone()),
                    pid: 1000 + u32::try_from(i).unwrap_or(0),
                    ppid: 1,
                    uid: 33,
                    gid: 33,
                    path: Some(Bytes::from_static(paths[i % 4].as_bytes())),
                    argv: vec![
                        Bytes::from_static(paths[i % 4].as_bytes()),
                        Bytes::from_static(b"--config"),
                        Bytes::from(format!("/etc/app/{}.conf", i % 16)),
                    ],
                    cwd: Some(Bytes::from_static(b"/srv/app")),
                    parent_exe: Some(Bytes::from_static(b"/usr/local/bin/app")),
                    exit_code: None,
                    exec_in: false,
                    drift: false,
                    stdio_socket: false,
                    count: 1,
                })
                .collect(),
            ..Default::default()
        })
        .collect()
}

/// Streams from `AGENTS` simulated agents; returns when all are acknowledged.
async fn stream_all(endpoint: &str, batches: u64, pause: Option<(&Broker, Duration)>) -> anyhow::Result<Duration> {
    let cancel = CancellationToken::new();
    let mut prepared = Vec::new();
    for agent in 0..AGENTS {
        prepared.push(make_batches(agent, batches));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (agent, batches) in (0..AGENTS).zip(prepared) {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            for b in batches {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
        });
        let agent_id = format!("bench-{agent}-{}", free_port().unwrap_or(0));
        let config = simulated::agent(&agent_id, agent, vec![endpoint.to_owned()], 64);
        tasks.push(tokio::spawn(client::run(config, rx, cancel.clone())));
    }
    if let Some((broker, stall)) = pause {
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker.pause();
        tokio::time::sleep(stall).await;
        broker.resume();
    }
    for t in tasks {
        let report = t.await?;
        anyhow::ensure!(
            report.batches_unacked == 0,
            "agent left batches unacknowledged: {report:?}"
        );
    }
    Ok(started.elapsed())
}

/// Reads back every message value of the process topic.
fn read_back(brokers: &str) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let consumer: BaseConsumer = KafkaConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-read-{}", free_port()?))
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[RecordType::Process.topic()])?;
    let mut out = Vec::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(3) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m?;
            let key = m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default();
            out.push((key, m.payload().context("empty payload")?.to_vec()));
            idle = Instant::now();
        }
    }
    consumer.unsubscribe();
    Ok(out)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    bench::banner("ingest");
    let broker = Broker::start()?;
    if std::env::var("GLASSHOUSE_BENCH_ONLY").is_ok_and(|only| only == "budget") {
        return budget_cost(&broker).await;
    }
    let metrics_port = free_port()?;
    let aggregator = AggregatorProcess::start(
        &broker.bootstrap(),
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics_port}\"\n{}\n[topics]\npartitions = 3",
            std::env::var("GLASSHOUSE_BENCH_AGGREGATOR").unwrap_or_default()
        ),
    )?;
    let endpoint = aggregator.endpoint();
    // Warm-up: connections, topic metadata, producer id.
    stream_all(&endpoint, 2, None).await?;

    let events = AGENTS * batches() * EVENTS as u64;
    let (mut wall_rates, mut per_core, mut agg_cpus) = (Vec::new(), Vec::new(), Vec::new());
    let load = Load::start();
    for _ in 0..rounds() {
        let cpu_before = aggregator.cpu_time()?;
        let wall = stream_all(&endpoint, batches(), None).await?;
        let agg_cpu = aggregator.cpu_time()? - cpu_before;
        wall_rates.push(events as f64 / wall.as_secs_f64());
        per_core.push(events as f64 / agg_cpu.as_secs_f64());
        agg_cpus.push(agg_cpu.as_secs_f64() * 1e9 / events as f64);
    }
    let spread = |v: &[f64]| Spread::of(v).context("no rounds");
    println!(
        "1. ingest: {} rounds of {events} exec events from {AGENTS} simulated agents; min / median / max",
        rounds()
    );
    println!(
        "  records/s (wall, whole pipeline on this machine): {:.0}",
        spread(&wall_rates)?
    );
    println!(
        "  records/s per aggregator core: {:.0}  (goal >= 1000000 median)",
        spread(&per_core)?
    );
    println!("  while it ran: {}", load.report());
    let agg_ns = spread(&agg_cpus)?.median;

    // Reference: the message values the aggregator wrote, read back.
    let values = read_back(&broker.bootstrap())?;
    let bytes: usize = values.iter().map(|(_, v)| v.len()).sum();
    let mut rows_by_key: Vec<(String, Vec<glasshouse_proto::process::Row>)> = Vec::new();
    for (key, value) in &values {
        let batch = glasshouse_proto::ipc::decode(value)?;
        rows_by_key.push((key.clone(), glasshouse_proto::process::read_rows(&batch)?));
    }
    let records: usize = rows_by_key.iter().map(|(_, rows)| rows.len()).sum();
    let producer: FutureProducer = KafkaConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .create()?;
    // 2a. Producing the same message values directly (for information).
    let cpu_before = own_cpu();
    let mut deliveries = Vec::with_capacity(values.len());
    for (key, value) in &values {
        let record = FutureRecord::to(RecordType::Network.topic()).key(key).payload(value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let direct_ns = (own_cpu() - cpu_before).as_secs_f64() * 1e9 / records as f64;
    println!(
        "2. reference, the same {} messages / {} MiB / {records} records: a plain rdkafka producer {direct_ns:.0} ns CPU \
         per record; aggregator / that {:.2} (for information: the goal is against the inherent work, below)",
        values.len(),
        bytes / (1024 * 1024),
        agg_ns / direct_ns
    );

    // 2b. The inherent work without the aggregator: build the same rows into
    // Arrow per workload, encode IPC (zstd) and produce.
    let mut inherent = Vec::new();
    let load = Load::start();
    for _ in 0..rounds() {
        let cpu_before = own_cpu();
        let mut encoded = Vec::with_capacity(rows_by_key.len());
        for (key, rows) in &rows_by_key {
            let mut builder = glasshouse_proto::process::Builder::default();
            for row in rows {
                builder.append(row);
            }
            encoded.push((key, glasshouse_proto::ipc::encode(&builder.finish())?));
        }
        let mut deliveries = Vec::with_capacity(encoded.len());
        for (key, value) in &encoded {
            let record = FutureRecord::to(RecordType::File.topic())
                .key(key.as_str())
                .payload(value);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for d in deliveries {
            d.await?.map_err(|(e, _)| e)?;
        }
        inherent.push((own_cpu() - cpu_before).as_secs_f64() * 1e9 / records as f64);
    }
    let inherent = spread(&inherent)?;
    println!(
        "  Arrow build + IPC encode + produce of the same rows: {inherent:.0} ns CPU per record; \
         aggregator / that (medians) {:.2} (goal <= 1.8)",
        agg_ns / inherent.median
    );
    println!("  while it ran: {}", load.report());
    println!("  wire: {:.1} bytes per event in Kafka", bytes as f64 / records as f64);

    // Peak memory with the broker stalled.
    let stall_secs = stall_secs();
    let before = aggregator.peak_rss()?;
    let stalled = stream_all(
        &endpoint,
        batches() / 2,
        Some((&broker, Duration::from_secs(stall_secs))),
    )
    .await?;
    println!(
        "3. stall: broker stopped {stall_secs} s while {AGENTS} agents streamed; all acknowledged after {stalled:.2?}; \
         aggregator peak RSS {} MiB (before the stall {} MiB)",
        aggregator.peak_rss()? / (1024 * 1024),
        before / (1024 * 1024)
    );
    drop(aggregator);
    budget_cost(&broker).await
}

/// Part 4: this aggregator against a reference binary, alternating rounds.
async fn budget_cost(broker: &Broker) -> anyhow::Result<()> {
    let Ok(reference) = std::env::var("GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR") else {
        println!(
            "4. budget cost: not measured (set GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR: \
             eval \"$(tests/benches/reference.sh REV)\")"
        );
        return Ok(());
    };
    let this = match std::env::var("GLASSHOUSE_BENCH_AGGREGATOR_BINARY") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => glasshouse_tests::workspace_binary("glasshouse-aggregator")?,
    };
    let reference = std::path::PathBuf::from(reference);
    let events = AGENTS * batches() * EVENTS as u64;
    let mut per_record: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut loads = Vec::new();
    let load = Load::start();
    for round in 0..rounds() {
        for (i, binary) in [&reference, &this].into_iter().enumerate() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let aggregator =
                AggregatorProcess::start_binary(binary, addr, &broker.bootstrap(), "[topics]\npartitions = 3")?;
            let endpoint = aggregator.endpoint();
            stream_all(&endpoint, 2, None).await?;
            let cpu_before = aggregator.cpu_time()?;
            stream_all(&endpoint, batches(), None).await?;
            let cpu = aggregator.cpu_time()? - cpu_before;
            per_record[i].push(cpu.as_secs_f64() * 1e9 / events as f64);
            drop(aggregator);
        }
        loads.push(std::fs::read_to_string("/proc/loadavg").unwrap_or_default());
        println!(
            "  round {}: reference {:.0} ns/record, this {:.0} ns/record",
            round + 1,
            per_record[0][round],
            per_record[1][round]
        );
    }
    let (reference_ns, this_ns) = (
        Spread::of(&per_record[0]).context("no rounds")?,
        Spread::of(&per_record[1]).context("no rounds")?,
    );
    println!(
        "4. budget cost: aggregator CPU per record over {} alternating rounds of {events} records: \
         reference ({}) min / median / max {reference_ns:.0} ns, this ({}) {this_ns:.0} ns; \
         ratio of medians this/reference {:.3} (goal <= 1.05)",
        rounds(),
        reference.display(),
        this.display(),
        this_ns.median / reference_ns.median
    );
    println!("  while it ran: {}", load.report());
    println!(
        "  load average after each round: {}",
        loads
            .iter()
            .map(|l| l.split_whitespace().next().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
