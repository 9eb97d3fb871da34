//! Analyzer figures, measured in one run (`cargo bench -p glasshouse-tests
//! --bench analyzer`; part 3 needs root, Podman and the test image):
//!
//! 1. Scored events per second on one core: `WORKLOADS` workloads of three
//!    replicas learn, become stable, then `SCORED` events (exec, connect,
//!    sensitive write; one in a thousand new) are scored on this thread.
//!    Reference in the same run: decoding the same events from Arrow IPC
//!    (what the consumer does before scoring); ratio = scoring / decoding.
//!    With `GLASSHOUSE_BENCH_REFERENCE_ANALYZER` (another revision's release
//!    build of this benchmark, e.g. from `tests/benches/reference.sh`), this
//!    part and the reference's take turns as fresh processes and the ratio
//!    is printed.
//! 2. Memory per baseline: resident memory before and after learning
//!    `MEMORY_WORKLOADS` more baselines of about 150 features each, and the
//!    baselines' own estimate.
//! 3. Time from an exec in a container to its alert on Kafka: a real agent
//!    (eBPF), aggregator, analyzer and broker with the local stack's latency
//!    settings; a container runs `LATENCY_EXECS` binaries it downloaded
//!    (drift), one per second; each alert's arrival on `glasshouse.alerts` is
//!    compared with its event time (p50, p99, max).
//! 4. False alerts: `BENIGN_REPLICAS` replicas each of a web server with a
//!    client loop and of a worker with a periodic job learn for
//!    `BENIGN_LEARN_SECS`, then run `BENIGN_SECS` more; every alert about
//!    that period is false: alerts per container-hour.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use glasshouse_analyzer::baseline::Rules;
use glasshouse_analyzer::engine::{Engine, Settings};
use glasshouse_analyzer::features::Phases;
use glasshouse_proto::record::Attribution;
use glasshouse_proto::{file, ipc, network, process};
use glasshouse_tests::{Broker, PodmanService, TEST_IMAGE, cpu_time_of, free_port, podman, require_test_image};
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use tokio_util::sync::CancellationToken;

const WORKLOADS: usize = 200;
const SCORED: usize = 1_000_000;
const MEMORY_WORKLOADS: usize = 2_000;
const LATENCY_EXECS: usize = 40;
const BENIGN_REPLICAS: usize = 4;
const BENIGN_LEARN_SECS: u64 = 120;
const BENIGN_SECS: u64 = 600;
const S: i64 = 1_000_000_000;

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
    let fleet = Fleet::new(WORKLOADS, "registry.local/shop");
    let mut engine = Engine::new(settings());
    fleet.learn(&mut engine);
    let stable = engine.baselines().filter(|b| b.state.as_str() == "stable").count();
    anyhow::ensure!(stable == WORKLOADS, "{stable} of {WORKLOADS} baselines stable");
    engine.drain_alerts();

    // The events to score: 60% execs, 30% connects, 10% writes; 0.1% new.
    let mut execs = Vec::new();
    let mut connects = Vec::new();
    let mut writes = Vec::new();
    for i in 0..SCORED {
        let (w, r, t) = (i % WORKLOADS, i % 3, 1000 * S + i as i64 * 1000);
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
    anyhow::ensure!(decoded == SCORED);

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
    let per_core = SCORED as f64 / score_cpu.as_secs_f64();
    println!(
        "1. scoring: {SCORED} events over {WORKLOADS} stable baselines in {score_wall:.2?} wall, {score_cpu:.2?} CPU: {:.0} scored events/s per core ({:.0} ns/event); {alerts} alerts for the {novel} new executables",
        per_core,
        score_cpu.as_nanos() as f64 / SCORED as f64,
    );
    anyhow::ensure!(alerts >= novel, "{alerts} alerts for {novel} new executables");
    println!(
        "   reference: Arrow IPC decoding of the same events {decode_wall:.2?} wall, {decode_cpu:.2?} CPU ({:.0} events/s per core); scoring / decoding CPU = {:.2}",
        SCORED as f64 / decode_cpu.as_secs_f64(),
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
    let fleet = Fleet::new(MEMORY_WORKLOADS, "registry.local/memory");
    let mut engine = Engine::new(settings());
    let before = rss();
    fleet.learn(&mut engine);
    let after = rss();
    let features: usize = engine
        .baselines()
        .map(|b| b.features.values().map(|m| m.len()).sum::<usize>())
        .sum();
    let estimate: usize = engine.baselines().map(|b| b.approx_bytes()).sum();
    let per = (after.saturating_sub(before)) as f64 / MEMORY_WORKLOADS as f64;
    println!(
        "2. memory: {MEMORY_WORKLOADS} baselines of {} features each (3 replicas): resident memory +{:.1} MiB = {:.1} KiB per baseline (includes the engine's container and process tables); the baselines' own estimate {:.1} KiB each",
        features / MEMORY_WORKLOADS,
        after.saturating_sub(before) as f64 / 1048576.0,
        per / 1024.0,
        estimate as f64 / MEMORY_WORKLOADS as f64 / 1024.0
    );
    Ok(())
}

/// The whole pipeline in this process, with the local stack's configs
/// pointed at a fresh broker, and `analysis` appended to the analyzer's.
struct Stack {
    broker: Broker,
    podman_api: PodmanService,
    cancel: CancellationToken,
    agent_cancel: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Stack {
    async fn start(analysis: &str) -> anyhow::Result<Stack> {
        require_test_image()?;
        let broker = Broker::start()?;
        let brokers = broker.bootstrap();
        let podman_api = PodmanService::start()?;
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ingest = listener.local_addr()?;
        let local =
            |name: &str| std::fs::read_to_string(glasshouse_tests::manifest_dir().join("../deploy/local").join(name));
        let aggregator_config: glasshouse_aggregator::Config = glasshouse_runtime::service::parse_config(
            "aggregator.toml",
            &local("aggregator.toml")?
                .replace("127.0.0.1:9092", &brokers)
                .replace("metrics_listen = \"127.0.0.1:9464\"", ""),
        )?;
        let analyzer_config: glasshouse_analyzer::Config = glasshouse_runtime::service::parse_config(
            "analyzer.toml",
            &format!(
                "{}\n{analysis}",
                // Without the local stack's lake and SQL sections (their
                // password file lives in the stack's state directory).
                local("analyzer.toml")?
                    .split("\n# The telemetry lake and SQL")
                    .next()
                    .unwrap_or_default()
                    .replace("127.0.0.1:9092", &brokers)
                    .replace("view = true", "view = false")
                    // The local stack's key lives in its state directory;
                    // the bench signs nothing.
                    .replace("control_key_file = \"control-key\"", "")
                    .replace("metrics_listen = \"127.0.0.1:9466\"", "")
            ),
        )?;
        let agent_config: glasshouse_agent::Config = glasshouse_runtime::service::parse_config(
            "agent.toml",
            // The bench's own settings first: the file ends with a table
            // (`[inventory]`), and a key after it would belong to it.
            &format!(
                "agent_id = \"bench\"\nspool = false\n{}",
                local("agent.toml")?
                    .replace("http://127.0.0.1:50051", &format!("http://{ingest}"))
                    .replace("/run/podman/podman.sock", &podman_api.socket.display().to_string())
                    .replace("metrics_listen = \"127.0.0.1:9465\"", "")
            ),
        )?;
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
    let stack = Stack::start("").await?;
    let consumer = stack.alerts("latency-bench")?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let name = format!("gh-latency-{}", free_port()?);
    let script = format!(
        "sleep 15; i=0; while [ $i -lt {LATENCY_EXECS} ]; do cp /bin/busybox /tmp/x$i; /tmp/x$i true; i=$((i+1)); sleep 1; done; sleep 5"
    );
    podman(&["run", "-d", "--name", &name, TEST_IMAGE, "/bin/sh", "-c", &script])?;
    let mut latencies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15 + LATENCY_EXECS as u64 + 40);
    while latencies.len() < LATENCY_EXECS && Instant::now() < deadline {
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
        latencies.len() == LATENCY_EXECS,
        "only {} of {LATENCY_EXECS} drift alerts",
        latencies.len()
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
    let stack = Stack::start(
        "[analysis]\nmin_learning_secs = 60\nmin_events = 50\nmax_novelty = 0.02\nnovelty_window_secs = 10\nstartup_secs = 10",
    )
    .await?;
    let consumer = stack.alerts("benign-bench")?;
    let suffix = free_port()?;
    let web = format!("localhost/gh-benign-web-{suffix}:1");
    let worker = format!("localhost/gh-benign-worker-{suffix}:1");
    podman(&["tag", TEST_IMAGE, &web])?;
    podman(&["tag", TEST_IMAGE, &worker])?;
    let mut names = Vec::new();
    for i in 0..BENIGN_REPLICAS {
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
    // Learning (the baselines' minimum is 60 s), then the measured period.
    tokio::time::sleep(Duration::from_secs(BENIGN_LEARN_SECS)).await;
    let start_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let end = Instant::now() + Duration::from_secs(BENIGN_SECS);
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
    let hours = (names.len() as f64) * BENIGN_SECS as f64 / 3600.0;
    println!(
        "4. benign: {} containers (web and worker, {BENIGN_REPLICAS} replicas each) for {BENIGN_SECS} s after {BENIGN_LEARN_SECS} s of learning: {} alerts = {:.2} false alerts per container-hour over {hours:.2} container-hours ({before} alerts while learning; {elsewhere} of other workloads on the host, not counted){}",
        names.len(),
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

/// Part 1 against another revision's analyzer benchmark (`reference`, its
/// release build of this file): each runs its scoring part alone as a fresh
/// process, taking turns `COMPARE_ROUNDS` times; scored events per second
/// per core of both (min / median / max) and the ratio of the medians.
fn compare_scoring(reference: &std::path::Path) -> anyhow::Result<()> {
    const COMPARE_ROUNDS: usize = 5;
    let this = std::env::current_exe()?;
    let per_core = |exe: &std::path::Path| -> anyhow::Result<f64> {
        let out = std::process::Command::new(exe)
            .env("GLASSHOUSE_BENCH_ONLY", "scoring")
            .env_remove("GLASSHOUSE_BENCH_REFERENCE_ANALYZER")
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout);
        anyhow::ensure!(out.status.success(), "{} failed: {text}", exe.display());
        let line = text
            .lines()
            .find(|l| l.starts_with("1. scoring:"))
            .with_context(|| format!("no scoring line from {}: {text}", exe.display()))?;
        let figure = line
            .split(" scored events/s per core")
            .next()
            .and_then(|head| head.rsplit(' ').next())
            .with_context(|| format!("no figure in {line:?}"))?;
        Ok(figure.parse()?)
    };
    let (mut ours, mut theirs, mut loads) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..COMPARE_ROUNDS {
        theirs.push(per_core(reference)?);
        ours.push(per_core(&this)?);
        loads.push(std::fs::read_to_string("/proc/loadavg").unwrap_or_default());
    }
    let spread = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let ((a, b, c), (d, e, f)) = (spread(&mut ours), spread(&mut theirs));
    println!(
        "1. scoring, {COMPARE_ROUNDS} rounds taking turns: this {a:.0} / {b:.0} / {c:.0} scored events/s per core \
         (min / median / max), reference {} {d:.0} / {e:.0} / {f:.0}; ratio this / reference (medians) {:.3}",
        reference.display(),
        b / e
    );
    println!(
        "   load average after each round: {}",
        loads.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" | ")
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> anyhow::Result<()> {
    // `GLASSHOUSE_BENCH_ONLY=scoring|memory|latency` runs one part (profiling).
    let only = std::env::var("GLASSHOUSE_BENCH_ONLY").unwrap_or_default();
    let run = |part: &str| only.is_empty() || only == part;
    // Memory first: the allocator keeps what later parts free.
    if run("memory") {
        memory()?;
    }
    if run("scoring") {
        match std::env::var_os("GLASSHOUSE_BENCH_REFERENCE_ANALYZER") {
            Some(reference) => compare_scoring(std::path::Path::new(&reference))?,
            None => scoring()?,
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
