//! Analyzer figures, measured in one run (`cargo bench -p glasshouse-tests
//! --bench analyzer`; parts 3 and 4 need root, Podman and the test image).
//! `cargo test --benches` runs it in smoke mode ([`glasshouse_tests::bench`]:
//! the sizes below are functions that are small there).
//!
//! 1. Scored events per second on one core, in `scoring_rounds()` fresh
//!    processes (min / median / max): `workloads()` workloads of three
//!    replicas learn, become stable, then `scored()` events (exec, connect,
//!    sensitive write; one in a thousand new) are scored on one thread.
//!    Reference in each process: decoding the same events from Arrow IPC
//!    (what the consumer does before scoring); ratio = scoring / decoding.
//!    With `GLASSHOUSE_BENCH_REFERENCE_ANALYZER` (another revision's release
//!    build of this benchmark, e.g. from `tests/benches/reference.sh`), its
//!    processes take turns with this one's and the ratio of the medians is
//!    printed.
//! 2. Memory per baseline: resident memory before and after learning
//!    `memory_workloads()` more baselines of about 150 features each, and the
//!    baselines' own estimate.
//! 3. Time from an exec in a container to its alert on Kafka: a real agent
//!    (eBPF), aggregator, analyzer and broker with the local stack's latency
//!    settings; a container runs `latency_execs()` binaries it downloaded
//!    (drift), one per second; each alert's arrival on `glasshouse.alerts` is
//!    compared with its event time (p50, p99, max).
//! 4. False alerts: `benign_replicas()` replicas each of a web server with a
//!    client loop and of a worker with a periodic job learn for
//!    `benign_learn_secs()`, then run `benign_secs()` more; every alert about
//!    that period is false: alerts per container-hour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use glasshouse_analyzer::baseline::Rules;
use glasshouse_analyzer::engine::{Engine, Settings};
use glasshouse_analyzer::features::Phases;
use glasshouse_proto::record::Attribution;
use glasshouse_proto::{file, ipc, network, process};
use glasshouse_tests::bench::{self, Load, Spread};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, cpu_time_of, free_port, podman, require_test_image};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

const S: i64 = 1_000_000_000;

// The sizes of each part, smaller in smoke mode (`glasshouse_tests::bench`).
fn workloads() -> usize {
    bench::size(200, 20)
}
fn scored() -> usize {
    bench::size(1_000_000, 20_000)
}
fn memory_workloads() -> usize {
    bench::size(2_000, 50)
}
fn latency_execs() -> usize {
    bench::size(40, 2)
}
fn benign_replicas() -> usize {
    bench::size(4, 1)
}
/// Learning period of part 4 (the baselines' minimum is half of it).
fn benign_learn_secs() -> u64 {
    bench::size(120, 12)
}
fn benign_secs() -> u64 {
    bench::size(600, 10)
}
/// Fresh processes of part 1.
fn scoring_rounds() -> usize {
    bench::size(5, 1)
}

fn settings() -> Settings {
    Settings {
        phases: Phases { startup_ns: 0 },
        rules: Rules {
            min_learning_ns: 0,
            min_events: 1,
            max_novelty: 1.0,
            novelty_window_ns: 10 * S,
        },
        cluster: vec!["10.0.0.0/8".parse().expect("cidr")],
        alert_threshold: 0.7,
        container_threshold: 3.0,
        window_ns: 300 * S,
        fleet_min_replicas: 3,
        min_hosts: 2,
        fleet_peer_age_ns: 300 * S,
        active_ns: 600 * S,
        mining_ports: vec![3333],
        mining_cpu_cores: 0.9,
        mining_cpu_samples: 6,
    }
}

type Str = Arc<str>;

/// Interned strings of the synthetic fleet.
struct Fleet {
    workloads: Vec<Str>,
    containers: Vec<Vec<Str>>,
    programs: Vec<Str>,
    args: Vec<Vec<Str>>,
    parents: Vec<Str>,
    peers: Vec<Str>,
    files: Vec<Str>,
    host: Str,
    agent: Str,
}

impl Fleet {
    fn new(workloads: usize, prefix: &str) -> Fleet {
        Fleet {
            workloads: (0..workloads).map(|w| format!("{prefix}/app-{w}").into()).collect(),
            containers: (0..workloads)
                .map(|w| (0..3).map(|r| format!("{w:032x}{r:032x}").into()).collect())
                .collect(),
            programs: (0..40).map(|p| format!("/usr/local/bin/tool-{p}").into()).collect(),
            args: (0..40)
                .map(|p| vec![format!("tool-{p}").into(), "--id".into(), format!("{p}").into()])
                .collect(),
            parents: vec!["/usr/local/bin/server".into(), "/bin/sh".into()],
            peers: (0..40)
                .map(|p| format!("10.1.{}.{}", p / 250, p % 250).into())
                .collect(),
            files: (0..10).map(|f| format!("/etc/app/conf-{f}").into()).collect(),
            host: "node-1".into(),
            agent: "bench".into(),
        }
    }

    fn exec(&self, w: usize, r: usize, i: usize, t: i64, novel: bool) -> process::Row {
        let p = i % self.programs.len();
        let path: Str = if novel {
            format!("/tmp/new-{i}").into()
        } else {
            self.programs[p].clone()
        };
        process::Row {
            attribution: Attribution {
                agent_id: self.agent.clone(),
                boot_id: 1,
                batch_seq: i as u64,
                host: self.host.clone(),
                container_id: Some(self.containers[w][r].clone()),
                workload_id: self.workloads[w].clone(),
                ..Default::default()
            },
            event_index: 0,
            time_unix_ns: t,
            kind: process::Kind::Exec,
            pid: 1000 + i as u32,
            ppid: 10,
            uid: 0,
            gid: 0,
            path: Some(path),
            argv: self.args[p].clone(),
            cwd: None,
            parent_exe: Some(self.parents[i % 2].clone()),
            exit_code: None,
            count: 1,
            exec_in: false,
            drift: false,
            stdio_socket: false,
        }
    }

    fn connect(&self, w: usize, r: usize, i: usize, t: i64) -> network::Row {
        network::Row {
            attribution: Attribution {
                agent_id: self.agent.clone(),
                boot_id: 1,
                batch_seq: i as u64,
                host: self.host.clone(),
                container_id: Some(self.containers[w][r].clone()),
                workload_id: self.workloads[w].clone(),
                ..Default::default()
            },
            event_index: 1,
            time_unix_ns: t,
            kind: network::Kind::Connect,
            pid: 1000,
            family: network::Family::Ipv4,
            local_addr: "10.0.0.2".into(),
            local_port: 40000,
            remote_addr: Some(self.peers[i % self.peers.len()].clone()),
            remote_port: [5432, 6379, 443, 8080][i % 4],
            count: 1,
            ..Default::default()
        }
    }

    fn write(&self, w: usize, r: usize, i: usize, t: i64) -> file::Row {
        file::Row {
            attribution: Attribution {
                agent_id: self.agent.clone(),
                boot_id: 1,
                batch_seq: i as u64,
                host: self.host.clone(),
                container_id: Some(self.containers[w][r].clone()),
                workload_id: self.workloads[w].clone(),
                ..Default::default()
            },
            event_index: 2,
            time_unix_ns: t,
            kind: file::Kind::Write,
            pid: 1000,
            path: self.files[i % self.files.len()].clone(),
            flags: 1,
            count: 1,
            ..Default::default()
        }
    }

    /// Every known feature of every workload, shown by every replica.
    fn learn(&self, engine: &mut Engine) {
        for w in 0..self.workloads.len() {
            for r in 0..3 {
                for i in 0..self.programs.len() * 2 {
                    engine.handle_process(&self.exec(w, r, i, i as i64 * S, false));
                    engine.handle_network(&self.connect(w, r, i, i as i64 * S));
                    engine.handle_file(&self.write(w, r, i, i as i64 * S));
                }
            }
        }
        engine.tick();
    }
}

fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

fn scoring() -> anyhow::Result<()> {
    let fleet = Fleet::new(workloads(), "registry.local/shop");
    let mut engine = Engine::new(settings());
    fleet.learn(&mut engine);
    let stable = engine.baselines().filter(|b| b.state.as_str() == "stable").count();
    anyhow::ensure!(stable == workloads(), "{stable} of {} baselines stable", workloads());
    engine.drain_alerts();

    // The events to score: 60% execs, 30% connects, 10% writes; 0.1% new.
    let mut execs = Vec::new();
    let mut connects = Vec::new();
    let mut writes = Vec::new();
    for i in 0..scored() {
        let (w, r, t) = (i % workloads(), i % 3, 1000 * S + i as i64 * 1000);
        match i % 10 {
            0..=5 => execs.push(fleet.exec(w, r, i, t, i % 1000 == 3)),
            6..=8 => connects.push(fleet.connect(w, r, i, t)),
            _ => writes.push(fleet.write(w, r, i, t)),
        }
    }
    // Reference: the same rows as Arrow IPC messages of 1,000 rows, decoded.
    let mut messages = Vec::new();
    for chunk in execs.chunks(1000) {
        let mut b = process::Builder::default();
        chunk.iter().for_each(|r| b.append(r));
        messages.push((0, ipc::encode(&b.finish())?));
    }
    for chunk in connects.chunks(1000) {
        let mut b = network::Builder::default();
        chunk.iter().for_each(|r| b.append(r));
        messages.push((1, ipc::encode(&b.finish())?));
    }
    for chunk in writes.chunks(1000) {
        let mut b = file::Builder::default();
        chunk.iter().for_each(|r| b.append(r));
        messages.push((2, ipc::encode(&b.finish())?));
    }
    let pid = std::process::id();
    let (c0, t0) = (cpu_time_of(pid)?, Instant::now());
    let mut decoded = 0;
    for (kind, m) in &messages {
        let batch = ipc::decode(m)?;
        decoded += match kind {
            0 => process::read_rows(&batch)?.len(),
            1 => network::read_rows(&batch)?.len(),
            _ => file::read_rows(&batch)?.len(),
        };
    }
    let (decode_cpu, decode_wall) = (cpu_time_of(pid)? - c0, t0.elapsed());
    anyhow::ensure!(decoded == scored());

    let (c0, t0) = (cpu_time_of(pid)?, Instant::now());
    for r in &execs {
        engine.handle_process(r);
    }
    for r in &connects {
        engine.handle_network(r);
    }
    for r in &writes {
        engine.handle_file(r);
    }
    let (score_cpu, score_wall) = (cpu_time_of(pid)? - c0, t0.elapsed());
    let alerts = engine.drain_alerts().len();
    let novel = execs
        .iter()
        .filter(|r| r.path.as_deref().is_some_and(|p| p.starts_with("/tmp/new-")))
        .count();
    let per_core = scored() as f64 / score_cpu.as_secs_f64();
    println!(
        "1. scoring: {} events over {} stable baselines in {score_wall:.2?} wall, {score_cpu:.2?} CPU: {:.0} scored events/s per core ({:.0} ns/event); {alerts} alerts for the {novel} new executables",
        scored(),
        workloads(),
        per_core,
        score_cpu.as_nanos() as f64 / scored() as f64,
    );
    anyhow::ensure!(alerts >= novel, "{alerts} alerts for {novel} new executables");
    println!(
        "   reference: Arrow IPC decoding of the same events {decode_wall:.2?} wall, {decode_cpu:.2?} CPU ({:.0} events/s per core); scoring / decoding CPU = {:.2}",
        scored() as f64 / decode_cpu.as_secs_f64(),
        score_cpu.as_secs_f64() / decode_cpu.as_secs_f64()
    );
    // What the consumer's byte budget costs: `ipc::decode` runs
    // `ipc::check_sizes` (the walk that refuses sizes a message cannot back
    // and more than 256 MiB decoded) before arrow reads a message. Timed
    // alone over the same messages (wall time of this one thread: the walk
    // is too short for the CPU clock's ticks), five rounds, against
    // decoding plus scoring them.
    let mut checks = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut claimed = 0u64;
        for (_, m) in &messages {
            claimed += ipc::check_sizes(m)?;
        }
        anyhow::ensure!(claimed > 0);
        checks.push(t0.elapsed());
    }
    checks.sort();
    let work = (decode_wall + score_wall).as_secs_f64();
    println!(
        "   budget check (ipc::check_sizes) of the same {} messages: wall min/median/max {:.2?}/{:.2?}/{:.2?} = {:.2}% of decoding + scoring them (goal <= 5%)",
        messages.len(),
        checks[0],
        checks[2],
        checks[4],
        100.0 * checks[2].as_secs_f64() / work
    );
    Ok(())
}

fn memory() -> anyhow::Result<()> {
    let fleet = Fleet::new(memory_workloads(), "registry.local/memory");
    let mut engine = Engine::new(settings());
    let before = rss();
    fleet.learn(&mut engine);
    let after = rss();
    let features: usize = engine
        .baselines()
        .map(|b| b.features.values().map(|m| m.len()).sum::<usize>())
        .sum();
    let estimate: usize = engine.baselines().map(|b| b.approx_bytes()).sum();
    let per = (after.saturating_sub(before)) as f64 / memory_workloads() as f64;
    println!(
        "2. memory: {} baselines of {} features each (3 replicas): resident memory +{:.1} MiB = {:.1} KiB per baseline (includes the engine's container and process tables); the baselines' own estimate {:.1} KiB each",
        memory_workloads(),
        features / memory_workloads(),
        after.saturating_sub(before) as f64 / 1048576.0,
        per / 1024.0,
        estimate as f64 / memory_workloads() as f64 / 1024.0
    );
    Ok(())
}

/// The whole pipeline in this process: the local stack's configs
/// (`deploy/local/*.toml`, parsed into their types), pointed at a fresh
/// broker, with the bench's own settings set on the types, and the
/// analyzer's `[analysis]` changed by `analysis`.
struct Stack {
    broker: Broker,
    podman_api: PodmanService,
    cancel: CancellationToken,
    agent_cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stack {
    async fn start(analysis: impl FnOnce(&mut glasshouse_analyzer::config::Analysis)) -> anyhow::Result<Stack> {
        require_test_image()?;
        let broker = Broker::start()?;
        let brokers = broker.bootstrap();
        let podman_api = PodmanService::start()?;
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ingest = listener.local_addr()?;
        let mut aggregator_config: glasshouse_aggregator::Config = bench::local_config("aggregator.toml")?;
        aggregator_config.brokers.clone_from(&brokers);
        aggregator_config.metrics_listen = None;
        let mut analyzer_config: glasshouse_analyzer::Config = bench::local_config("analyzer.toml")?;
        analyzer_config.brokers = brokers;
        analyzer_config.view = false;
        analyzer_config.metrics_listen = None;
        // The local stack's key, lake and SQL password live in its state
        // directory; the bench signs nothing and queries nothing.
        analyzer_config.control_key_file = None;
        analyzer_config.lake.enabled = false;
        analyzer_config.sql = Default::default();
        analysis(&mut analyzer_config.analysis);
        let mut agent_config: glasshouse_agent::Config = bench::local_config("agent.toml")?;
        agent_config.agent_id = "bench".into();
        agent_config.spool = false;
        agent_config.aggregators = vec![format!("http://{ingest}")];
        agent_config.runtime_sockets = vec![podman_api.socket.clone()];
        agent_config.metrics_listen = None;
        let agent_cancel = cancel.child_token();
        let c = cancel.clone();
        let aggregator =
            tokio::spawn(async move { Ok(glasshouse_aggregator::serve(aggregator_config, listener, c).await?) });
        let c = cancel.clone();
        let analyzer = tokio::spawn(async move {
            glasshouse_analyzer::run(analyzer_config, std::io::sink(), c).await?;
            Ok(())
        });
        let c = agent_cancel.clone();
        let agent = tokio::spawn(async move {
            glasshouse_agent::run(agent_config, c).await?;
            Ok(())
        });
        Ok(Stack {
            broker,
            podman_api,
            cancel,
            agent_cancel,
            tasks: vec![agent, aggregator, analyzer],
        })
    }

    /// A consumer of `glasshouse.alerts` from its start.
    fn alerts(&self, group: &str) -> anyhow::Result<StreamConsumer> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.broker.bootstrap())
            .set("group.id", group)
            // The measuring consumer must not add its own fetch wait.
            .set("fetch.wait.max.ms", "10")
            .set("auto.offset.reset", "earliest")
            .set("topic.metadata.refresh.interval.ms", "2000")
            .create()?;
        consumer.subscribe(&[glasshouse_proto::record::TOPIC_ALERTS])?;
        Ok(consumer)
    }

    /// Stops the agent first (its last batch acknowledged), then the rest.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.agent_cancel.cancel();
        let agent = self.tasks.remove(0);
        agent.await??;
        self.cancel.cancel();
        for t in self.tasks {
            t.await??;
        }
        drop(self.podman_api);
        drop(self.broker);
        Ok(())
    }
}

async fn latency() -> anyhow::Result<()> {
    let stack = Stack::start(|_| ()).await?;
    let consumer = stack.alerts("latency-bench")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let name = format!("gh-latency-{}", free_port()?);
    let script = format!(
        "sleep {}; i=0; while [ $i -lt {} ]; do cp /bin/busybox /tmp/x$i; /tmp/x$i true; i=$((i+1)); sleep 1; done; sleep 5",
        bench::size(15, 5),
        latency_execs()
    );
    podman(&["run", "-d", "--name", &name, TEST_IMAGE, "/bin/sh", "-c", &script])?;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15 + latency_execs() as u64 + 40);
    while latencies.len() < latency_execs() && Instant::now() < deadline {
        let Ok(m) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let m = m?;
        let received = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_millis() as i64;
        let doc: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
        if doc["unmapped"]["glasshouse"]["rule"] == "rule.drift" && doc["activity_id"] == 1 {
            let event_ms = doc["finding_info"]["first_seen_time"]
                .as_i64()
                .context("no first_seen_time")?;
            latencies.push(received - event_ms);
        }
    }
    // Ignored: cleanup only.
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    consumer.unsubscribe();
    drop(consumer);
    stack.stop().await?;
    anyhow::ensure!(
        latencies.len() == latency_execs(),
        "only {} of {} drift alerts",
        latencies.len(),
        latency_execs()
    );
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "3. exec to alert on Kafka, {} execs with the local stack's settings (agent batch 100 ms, aggregator flush 50 ms): p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
    Ok(())
}

/// Benign containers after their baselines are stable: alerts per
/// container-hour (false alerts: nothing in them is an attack).
async fn benign() -> anyhow::Result<()> {
    let stack = Stack::start(|analysis| {
        analysis.min_learning_secs = benign_learn_secs() / 2;
        analysis.min_events = bench::size(50, 5);
        analysis.max_novelty = 0.02;
        analysis.novelty_window_secs = 10;
        analysis.startup_secs = bench::size(10, 2);
    })
    .await?;
    let consumer = stack.alerts("benign-bench")?;
    let suffix = free_port()?;
    let web = format!("localhost/gh-benign-web-{suffix}:1");
    let worker = format!("localhost/gh-benign-worker-{suffix}:1");
    podman(&["tag", TEST_IMAGE, &web])?;
    podman(&["tag", TEST_IMAGE, &worker])?;
    let mut names = Vec::new();
    for i in 0..benign_replicas() {
        let name = format!("gh-benign-web{i}-{suffix}");
        podman(&[
            "run",
            "-d",
            "--name",
            &name,
            &web,
            "/bin/sh",
            "-c",
            "mkdir -p /www; echo hi > /www/index.html; httpd -p 8080 -h /www; while :; do wget -q -O /dev/null http://127.0.0.1:8080/index.html; date > /tmp/last; sleep 1; done",
        ])?;
        names.push(name);
        let name = format!("gh-benign-worker{i}-{suffix}");
        podman(&[
            "run",
            "-d",
            "--name",
            &name,
            &worker,
            "/bin/sh",
            "-c",
            "while :; do echo job >> /tmp/out; cp /tmp/out /tmp/copy; ls /tmp > /dev/null; sleep 2; done",
        ])?;
        names.push(name);
    }
    // Learning (the baselines' minimum is half of it), then the measured period.
    tokio::time::sleep(Duration::from_secs(benign_learn_secs())).await;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end = Instant::now() + Duration::from_secs(benign_secs());
    let mut during = Vec::new();
    let mut before = 0;
    let mut elsewhere = 0;
    // Only this bench's workloads: other containers on a shared host are
    // not its benign replicas.
    let ours = format!("-{suffix}");
    while Instant::now() < end {
        let Ok(m) = tokio::time::timeout(Duration::from_millis(500), consumer.recv()).await else {
            continue;
        };
        let doc: serde_json::Value = serde_json::from_slice(m?.payload().unwrap_or_default())?;
        if doc["activity_id"] != 1 {
            continue;
        }
        let workload = doc["unmapped"]["glasshouse"]["workload"].as_str().unwrap_or_default();
        if !(workload.contains("gh-benign-") && workload.ends_with(&ours)) {
            elsewhere += 1;
            continue;
        }
        if doc["finding_info"]["first_seen_time"].as_i64().unwrap_or(0) >= start_ms {
            during.push(format!(
                "{} {}",
                doc["unmapped"]["glasshouse"]["rule"], doc["finding_info"]["title"]
            ));
        } else {
            before += 1;
        }
    }
    for n in &names {
        // Ignored: cleanup only.
        let _ = podman(&["rm", "-f", "-t", "0", n]);
    }
    let _ = podman(&["rmi", &web, &worker]);
    consumer.unsubscribe();
    drop(consumer);
    stack.stop().await?;
    let hours = (names.len() as f64) * benign_secs() as f64 / 3600.0;
    println!(
        "4. benign: {} containers (web and worker, {} replicas each) for {} s after {} s of learning: {} alerts = {:.2} false alerts per container-hour over {hours:.2} container-hours ({before} alerts while learning; {elsewhere} of other workloads on the host, not counted){}",
        names.len(),
        benign_replicas(),
        benign_secs(),
        benign_learn_secs(),
        during.len(),
        during.len() as f64 / hours,
        if during.is_empty() {
            String::new()
        } else {
            format!(": {during:#?}")
        }
    );
    Ok(())
}

/// Part 1 as `scoring_rounds()` fresh processes of this benchmark, taking
/// turns with `reference` (another revision's release build of this file)
/// if given: scored events per second per core (min / median / max) of
/// each and the ratio of the medians.
fn scoring_in_rounds(reference: Option<&std::path::Path>) -> anyhow::Result<()> {
    let this = std::env::current_exe()?;
    let per_core = |exe: &std::path::Path| -> anyhow::Result<f64> {
        let mut command = std::process::Command::new(exe);
        command
            .env("GLASSHOUSE_BENCH_ONLY", "scoring")
            .env("GLASSHOUSE_BENCH_SCORING_ONCE", "1")
            .env_remove("GLASSHOUSE_BENCH_REFERENCE_ANALYZER");
        if !bench::smoke() {
            command.arg("--bench");
        }
        let out = command.output().with_context(|| format!("running {}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "{} failed: {text}", exe.display());
        let line = text
            .lines()
            .find(|l| l.starts_with("1. scoring:"))
            .with_context(|| format!("no scoring line from {}: {text}", exe.display()))?;
        println!("   {line}");
        let figure = line
            .split(" scored events/s per core")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .with_context(|| format!("no figure in {line:?}"))?;
        Ok(figure.parse()?)
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let load = Load::start();
    for _ in 0..scoring_rounds() {
        if let Some(reference) = reference {
            theirs.push(per_core(reference)?);
        }
        ours.push(per_core(&this)?);
    }
    let ours = Spread::of(&ours).context("no rounds")?;
    println!(
        "1. scoring, {} fresh processes: this {ours:.0} scored events/s per core (min / median / max; goal >= 1300000 median)",
        scoring_rounds()
    );
    if let Some(reference) = reference {
        let theirs = Spread::of(&theirs).context("no rounds")?;
        println!(
            "   reference {} {theirs:.0}, taking turns; ratio this / reference (medians) {:.3}",
            reference.display(),
            ours.median / theirs.median
        );
    }
    println!("   while it ran: {}", load.report());
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    // `GLASSHOUSE_BENCH_ONLY=scoring|memory|latency` runs one part (profiling).
    let only = std::env::var("GLASSHOUSE_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() {
        bench::banner("analyzer");
    }
    let run = |part: &str| only.is_empty() || only == part;
    // Memory first: the allocator keeps what later parts free.
    if run("memory") {
        memory()?;
    }
    if run("scoring") {
        if std::env::var_os("GLASSHOUSE_BENCH_SCORING_ONCE").is_some() {
            scoring()?;
        } else {
            let reference = std::env::var_os("GLASSHOUSE_BENCH_REFERENCE_ANALYZER");
            scoring_in_rounds(reference.as_deref().map(std::path::Path::new))?;
        }
    }
    if run("latency") {
        latency().await?;
    }
    if run("benign") {
        benign().await?;
    }
    Ok(())
}
