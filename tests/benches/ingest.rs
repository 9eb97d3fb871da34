//! Aggregator throughput and cost, printed as figures and ratios measured in
//! one run (`cargo bench -p glasshouse-tests --bench ingest`; needs the release
//! binaries: `cargo build --release --workspace --bins`).
//!
//! 1. Simulated agents (the real agent stream client) on loopback stream
//!    `AGENTS × BATCHES × EVENTS` exec events through one aggregator process
//!    into a tansu broker; records per second of wall time and per second of
//!    the aggregator's own CPU time (records/s per core).
//! 2. Reference: the exact Arrow IPC message values the aggregator wrote are
//!    read back and produced again by a plain rdkafka producer with the same
//!    settings; its CPU time is measured; ratio = aggregator CPU / direct CPU.
//! 3. Peak aggregator memory while the broker is stalled (SIGSTOP) for
//!    `STALL_SECS` seconds with agents streaming.
//! 4. With `GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR` (a release aggregator of
//!    another revision, built by `tests/benches/reference.sh`):
//!    what the hostile-input budgets cost. Both aggregators take the same
//!    load in alternating rounds against the same broker; aggregator CPU
//!    per record of each (min/median/max) and the ratio of the medians.
//!    `GLASSHOUSE_BENCH_AGGREGATOR_BINARY` names the aggregator measured
//!    (default: this workspace's, beside the bench), and
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
use glasshouse_tests::{AggregatorProcess, Broker, free_port, simulated};
use rdkafka::ClientConfig as KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const AGENTS: u64 = 8;
const BATCHES: u64 = 250;
const EVENTS: usize = 500;
/// Broker stall of part 3; `GLASSHOUSE_BENCH_STALL_SECS` overrides it.
const STALL_SECS: u64 = 60;

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

fn self_cpu() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    tv(usage.ru_utime) + tv(usage.ru_stime)
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

    let events = AGENTS * BATCHES * EVENTS as u64;
    let cpu_before = aggregator.cpu_time()?;
    let wall = stream_all(&endpoint, BATCHES, None).await?;
    let agg_cpu = aggregator.cpu_time()? - cpu_before;
    println!("ingest: {events} events from {AGENTS} agents in {wall:.2?} wall");
    println!(
        "  records/s (wall, whole pipeline on 2 cores): {:.0}",
        events as f64 / wall.as_secs_f64()
    );
    println!(
        "  aggregator CPU {agg_cpu:.2?} -> records/s per aggregator core: {:.0}  (goal >= 300000)",
        events as f64 / agg_cpu.as_secs_f64()
    );

    // Reference: produce the same message values directly.
    let values = read_back(&broker.bootstrap())?;
    let bytes: usize = values.iter().map(|(_, v)| v.len()).sum();
    let producer: FutureProducer = KafkaConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "zstd")
        .set("linger.ms", "5")
        .create()?;
    let cpu_before = self_cpu();
    let started = Instant::now();
    let mut deliveries = Vec::with_capacity(values.len());
    for (key, value) in &values {
        let record = FutureRecord::to(RecordType::Network.topic()).key(key).payload(value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for d in deliveries {
        d.await?.map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    let direct_cpu = self_cpu() - cpu_before;
    println!(
        "  direct rdkafka producer, same {} messages / {} MiB: CPU {direct_cpu:.2?}, wall {:.2?}",
        values.len(),
        bytes / (1024 * 1024),
        started.elapsed()
    );
    println!(
        "  cost ratio aggregator / direct producer: {:.2}  (for information: the goal is against the inherent work, below)",
        agg_cpu.as_secs_f64() / direct_cpu.as_secs_f64()
    );

    // Reference B: the inherent work without the aggregator: build the same
    // rows into Arrow per workload, encode IPC (zstd) and produce.
    let mut rows_by_key: Vec<(String, Vec<glasshouse_proto::process::Row>)> = Vec::new();
    for (key, value) in &values {
        let batch = glasshouse_proto::ipc::decode(value)?;
        rows_by_key.push((key.clone(), glasshouse_proto::process::read_rows(&batch)?));
    }
    // Three rounds: the machine is shared, so report the best and the median.
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let cpu_before = self_cpu();
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
        rounds.push(self_cpu() - cpu_before);
    }
    rounds.sort();
    let (best, median) = (rounds[0], rounds[1]);
    println!(
        "  direct Arrow build + IPC encode + produce of the same rows: CPU best {best:.2?}, median {median:.2?}; \
         ratio aggregator / that: {:.2} (best) {:.2} (median) (goal <= 1.8)",
        agg_cpu.as_secs_f64() / best.as_secs_f64(),
        agg_cpu.as_secs_f64() / median.as_secs_f64()
    );
    println!("  wire: {:.1} bytes per event in Kafka", bytes as f64 / events as f64);

    // Peak memory with the broker stalled.
    let stall_secs = std::env::var("GLASSHOUSE_BENCH_STALL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(STALL_SECS);
    let before = aggregator.peak_rss()?;
    let stalled = stream_all(&endpoint, BATCHES / 2, Some((&broker, Duration::from_secs(stall_secs)))).await?;
    println!(
        "stall: broker stopped {stall_secs} s while {AGENTS} agents streamed; all acknowledged after {stalled:.2?}; \
         aggregator peak RSS {} MiB (before the stall {} MiB)",
        aggregator.peak_rss()? / (1024 * 1024),
        before / (1024 * 1024)
    );
    drop(aggregator);
    budget_cost(&broker).await
}

/// Part 4: this aggregator against a reference binary, alternating rounds.
async fn budget_cost(broker: &Broker) -> anyhow::Result<()> {
    const ROUNDS: usize = 5;
    let Ok(reference) = std::env::var("GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR") else {
        println!(
            "budget cost: not measured (set GLASSHOUSE_BENCH_REFERENCE_AGGREGATOR: \
             eval \"$(tests/benches/reference.sh REV)\")"
        );
        return Ok(());
    };
    let this = match std::env::var("GLASSHOUSE_BENCH_AGGREGATOR_BINARY") {
        Ok(path) => std::path::PathBuf::from(path),
        Err(_) => glasshouse_tests::workspace_binary("glasshouse-aggregator")?,
    };
    let reference = std::path::PathBuf::from(reference);
    let events = AGENTS * BATCHES * EVENTS as u64;
    let mut per_record: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut loads = Vec::new();
    for round in 0..ROUNDS {
        for (i, binary) in [&reference, &this].into_iter().enumerate() {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let aggregator =
                AggregatorProcess::start_binary(binary, addr, &broker.bootstrap(), "[topics]\npartitions = 3")?;
            let endpoint = aggregator.endpoint();
            stream_all(&endpoint, 2, None).await?;
            let cpu_before = aggregator.cpu_time()?;
            stream_all(&endpoint, BATCHES, None).await?;
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
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (r_min, r_med, r_max) = stats(&mut per_record[0]);
    let (t_min, t_med, t_max) = stats(&mut per_record[1]);
    println!(
        "budget cost: aggregator CPU per record over {ROUNDS} alternating rounds of {events} records: \
         reference ({}) min/median/max {r_min:.0}/{r_med:.0}/{r_max:.0} ns, this ({}) {t_min:.0}/{t_med:.0}/{t_max:.0} ns; \
         ratio of medians this/reference {:.3} (goal <= 1.05)",
        reference.display(),
        this.display(),
        t_med / r_med
    );
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
