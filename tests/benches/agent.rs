//! Agent overhead and compactness, printed as figures and ratios measured in
//! one run (`cargo bench -p glasshouse-tests --bench agent`; needs root, Podman,
//! the test image and the release binaries: `cargo build --release --workspace
//! --bins`).
//!
//! A static load generator (`storm.c`, built here with `gcc -static`) runs in
//! a Podman container, first with no agent, then with the real agent (eBPF
//! sensor) streaming through a real aggregator into a tansu broker:
//!
//! 1. exec storm: `execs()` fork + execve + wait; slowdown = time with / without;
//! 2. TCP storm: `connections()` loopback connect + accept + close; same ratio;
//! 3. agent CPU (its threads' run time, /proc/PID/task/*/schedstat, ns) per
//!    kernel event during the storms;
//! 4. kernel drops (ring buffer full) and queue drops at the storms' event rate;
//! 5. wire bytes per exec event (the agent's encoder on a realistic batch) vs
//!    the same fields as JSON.
//!
//! Each storm runs `rounds()` times per side; the medians are compared. The
//! per-container rate limit is off here (`container_rate_limit = 0`): the
//! figures are what the sensors themselves sustain.
//!
//! With `GLASSHOUSE_BENCH_REFERENCE_AGENT` (a release agent of another
//! revision, e.g. from `tests/benches/reference.sh`), that agent and this
//! one take turns, round by round, and the CPU per event of both and their
//! ratio are printed.
//!
//! `cargo test --benches` runs it in smoke mode (`glasshouse_tests::bench`:
//! a few hundred events per storm, one round).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use glasshouse_agent::attribute::ContainerKey;
use glasshouse_agent::encode::StreamEncoder;
use glasshouse_agent::pipeline::{Container, Event, PendingBatch};
use glasshouse_agent::runtime::ContainerMeta;
use glasshouse_proto::process::Kind;
use glasshouse_proto::v1;
use glasshouse_tests::bench::{self, Load, Spread};
use glasshouse_tests::{
    AgentLaunch, AgentProcess, AggregatorProcess, Broker, PodmanService, TEST_IMAGE, build_storm, cpu_time_precise_of,
    free_port, http_get, metric_value, podman, require_test_image,
};
use prost::Message;

/// Execs per storm (smoke: a few hundred).
fn execs() -> u64 {
    bench::size(20_000, 300)
}
/// Loopback TCP connections per storm.
fn connections() -> u64 {
    bench::size(50_000, 500)
}
fn rounds() -> usize {
    bench::size(5, 1)
}

fn main() -> anyhow::Result<()> {
    bench::banner("agent");
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run())
}

/// Runs one storm in the container; the seconds its loop took.
fn storm(container: &str, kind: &str, n: u64) -> anyhow::Result<f64> {
    let out = podman(&["exec", container, "/gh/storm", kind, &n.to_string()])?;
    out.trim().parse().with_context(|| format!("storm printed {out:?}"))
}

struct Side {
    exec: Vec<f64>,
    tcp: Vec<f64>,
}

fn measure(container: &str) -> anyhow::Result<Side> {
    let mut side = Side {
        exec: Vec::new(),
        tcp: Vec::new(),
    };
    for _ in 0..rounds() {
        side.exec.push(storm(container, "exec", execs())?);
        side.tcp.push(storm(container, "tcp", connections())?);
    }
    Ok(side)
}

async fn counters(agent: &AgentProcess) -> anyhow::Result<[u64; 3]> {
    let page = http_get(&agent.metrics.to_string(), "/metrics").await?;
    let get = |name| metric_value(&page, name).with_context(|| format!("no {name} in agent metrics"));
    Ok([
        get("glasshouse_agent_events_total")?,
        get("glasshouse_agent_kernel_overflows_total")?,
        get("glasshouse_agent_queue_drops_total")?,
    ])
}

async fn run() -> anyhow::Result<()> {
    require_test_image()?;
    let dir = build_storm()?;
    let name = format!("gh-bench-{}", free_port()?);
    let volume = format!("{}:/gh:ro", dir.display());
    podman(&[
        "run", "-d", "--name", &name, "-v", &volume, TEST_IMAGE, "sleep", "100000",
    ])?;
    let result = bench(&name).await;
    let _ = podman(&["rm", "-f", "-t", "0", &name]);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What one agent binary measured over the rounds.
#[derive(Default)]
struct WithAgent {
    exec: Vec<f64>,
    tcp: Vec<f64>,
    /// Agent CPU per kernel event (µs), per storm kind.
    per_event: Vec<(&'static str, f64)>,
    /// Kernel events per second, per storm.
    rates: Vec<(&'static str, f64)>,
    kernel_drops: u64,
    queue_drops: u64,
}

/// One round of both storms with a fresh agent of `binary` (`None`: this
/// workspace's) watching.
async fn round_with_agent(
    container: &str,
    endpoint: &str,
    podman_socket: &std::path::Path,
    binary: Option<&std::path::Path>,
    into: &mut WithAgent,
) -> anyhow::Result<()> {
    let mut agent = AgentProcess::start_with(
        endpoint,
        &format!(
            "sensor = \"bpf\"\ncontainer_rate_limit = 0\nruntime_sockets = [\"{}\"]",
            podman_socket.display()
        ),
        &AgentLaunch {
            binary: binary.map(std::path::Path::to_path_buf),
            ..Default::default()
        },
    )?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (kind, n) in [("exec", execs()), ("tcp", connections())] {
        let cpu0 = cpu_time_precise_of(agent.pid())?;
        let [e0, k0, q0] = counters(&agent).await?;
        let secs = storm(container, kind, n)?;
        // Let the agent finish what the storm queued before reading its CPU.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cpu = cpu_time_precise_of(agent.pid())?.saturating_sub(cpu0);
        let [e1, k1, q1] = counters(&agent).await?;
        let events = e1.saturating_sub(e0).max(1);
        #[expect(clippy::cast_precision_loss, reason = "event counts are far below 2^52")]
        into.per_event.push((kind, cpu.as_secs_f64() * 1e6 / events as f64));
        #[expect(clippy::cast_precision_loss, reason = "event counts are far below 2^52")]
        into.rates.push((kind, events as f64 / secs));
        into.kernel_drops += k1 - k0;
        into.queue_drops += q1 - q0;
        if kind == "exec" {
            into.exec.push(secs);
        } else {
            into.tcp.push(secs);
        }
    }
    agent.stop()?;
    Ok(())
}

/// min / median / max of `v`.
fn spread(v: &[f64]) -> anyhow::Result<Spread> {
    Spread::of(v).context("no rounds")
}

fn per_event_of(with: &WithAgent, kind: &str) -> Vec<f64> {
    with.per_event.iter().filter(|p| p.0 == kind).map(|p| p.1).collect()
}

async fn bench(container: &str) -> anyhow::Result<()> {
    println!(
        "agent benchmark: {} execs and {} loopback TCP connections per storm, {} rounds",
        execs(),
        connections(),
        rounds()
    );
    let reference = std::env::var_os("GLASSHOUSE_BENCH_REFERENCE_AGENT").map(std::path::PathBuf::from);
    let without = measure(container)?;

    let broker = Broker::start()?;
    let podman_api = PodmanService::start()?;
    let aggregator = AggregatorProcess::start(&broker.bootstrap(), "")?;
    let endpoint = aggregator.endpoint();

    let mut with = WithAgent::default();
    let mut with_reference = WithAgent::default();
    let mut loads = Vec::new();
    let load = Load::start();
    for _ in 0..rounds() {
        // The reference (when given) and this agent alternate, round by
        // round, so both see the same machine.
        if let Some(reference) = &reference {
            round_with_agent(
                container,
                &endpoint,
                &podman_api.socket,
                Some(reference),
                &mut with_reference,
            )
            .await?;
        }
        round_with_agent(container, &endpoint, &podman_api.socket, None, &mut with).await?;
        loads.push(std::fs::read_to_string("/proc/loadavg").unwrap_or_default());
    }

    // Slowdown of each round: its storm with the agent against the same
    // round's storm without.
    let slowdown =
        |with: &[f64], without: &[f64]| -> Vec<f64> { with.iter().zip(without).map(|(w, b)| w / b).collect() };
    for (kind, with_agent, without_agent, goal_us) in [
        ("exec", &with.exec, &without.exec, 1.5),
        ("tcp", &with.tcp, &without.tcp, 1.2),
    ] {
        println!(
            "{kind} storm: {:.3} s without agent, {:.3} s with (min / median / max); slowdown per round {:.3} \
             (goal <= 1.10 every round, <= 1.05 median)",
            spread(without_agent)?,
            spread(with_agent)?,
            spread(&slowdown(with_agent, without_agent))?
        );
        let of_kind = spread(&per_event_of(&with, kind))?;
        println!("  agent CPU per kernel event: {of_kind:.2} us (goal <= {goal_us} us median)");
        if let Some(reference) = &reference {
            let reference_of_kind = spread(&per_event_of(&with_reference, kind))?;
            println!(
                "  reference agent {}: {reference_of_kind:.2} us; ratio this / reference (medians) {:.3}",
                reference.display(),
                of_kind.median / reference_of_kind.median
            );
        }
    }
    let peak = with.rates.iter().map(|r| r.1).fold(0.0, f64::max);
    for (kind, rate) in &with.rates {
        println!("  {kind} storm kernel events/s: {rate:.0}");
    }
    println!(
        "kernel drops: {}, queue drops: {} at up to {peak:.0} events/s (goal 0 at 50,000/s)",
        with.kernel_drops, with.queue_drops
    );
    println!(
        "load average after each round: {}",
        loads.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" | ")
    );
    println!("while the rounds with an agent ran: {}", load.report());

    let (wire, json) = wire_vs_json();
    println!(
        "wire bytes per exec event: {wire:.1} (protobuf, interned) vs {json:.1} as JSON: {:.1}x smaller (goal >= 10x)",
        json / wire
    );
    drop(aggregator);
    drop(podman_api);
    drop(broker);
    Ok(())
}

/// Bytes per exec on the wire for a realistic batch of 512 execs (a web
/// container running a few tools with varying arguments), steady state (the
/// stream's dictionary already holds the recurring strings), vs the same
/// fields as one JSON object per event.
fn wire_vs_json() -> (f64, f64) {
    let container = Arc::new(Container {
        key: ContainerKey {
            runtime: v1::ContainerRuntime::Podman,
            id: "4f1c9d0e7a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5".to_owned(),
            pod_uid: None,
        },
        meta: ContainerMeta {
            name: Some("shop-web-7d9f".to_owned()),
            image: Some("registry.local/shop/web:1.4.2".to_owned()),
            image_id: Some("sha256:9a8b7c6d5e4f30211f2e3d4c5b6a79881726354453627180f9e8d7c6b5a49382".to_owned()),
            ..Default::default()
        },
        workload_id: "registry.local/shop/web".to_owned(),
        complete: true,
        reported: true,
    });
    let tools: [(&str, &[&str]); 4] = [
        ("/usr/bin/curl", &["curl", "-fsS", "http://127.0.0.1:8080/healthz"]),
        ("/bin/sh", &["sh", "-c", "/usr/local/bin/rotate-logs --keep 7"]),
        ("/usr/bin/python3", &["python3", "/srv/app/manage.py", "runjob", "--id"]),
        ("/usr/local/bin/rotate-logs", &["rotate-logs", "--keep", "7"]),
    ];
    let batch = |sequence: u64| PendingBatch {
        sequence,
        events: (0..512u32)
            .map(|i| {
                let (path, args) = tools[i as usize % 4];
                let mut argv: Vec<Bytes> = args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect();
                if i % 4 == 2 {
                    argv.push(Bytes::from(format!("{}", 10_000 + u64::from(i) + sequence * 512)));
                }
                Event {
                    time_unix_ns: glasshouse_tests::epoch() + i64::from(i) * 1_700_000,
                    kind: Kind::Exec,
                    container: Some(container.clone()),
                    pid: 20_000 + i,
                    ppid: 1,
                    uid: 33,
                    gid: 33,
                    path: Some(Bytes::from_static(path.as_bytes())),
                    argv,
                    cwd: Some(Bytes::from_static(b"/srv/app")),
                    parent_exe: Some(Bytes::from_static(b"/usr/local/bin/gunicorn")),
                    exit_code: None,
                    exec_in: false,
                    drift: false,
                    stdio_socket: false,
                    count: 1,
                }
            })
            .collect(),
        ..Default::default()
    };
    let mut encoder = StreamEncoder::new(100_000);
    let _ = encoder.encode(&batch(1));
    let second = batch(2);
    let wire = encoder.encode(&second).encoded_len();
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let json: usize = second
        .events
        .iter()
        .map(|e| {
            let c = e.container.as_ref().expect("every event has the container");
            serde_json::json!({
                "time_unix_ns": e.time_unix_ns,
                "kind": "exec",
                "container_id": c.key.id,
                "container_name": c.meta.name,
                "image": c.meta.image,
                "image_id": c.meta.image_id,
                "workload_id": c.workload_id,
                "pid": e.pid,
                "ppid": e.ppid,
                "uid": e.uid,
                "gid": e.gid,
                "path": text(&e.path),
                "argv": e.argv.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>(),
                "cwd": text(&e.cwd),
                "parent_exe": text(&e.parent_exe),
            })
            .to_string()
            .len()
        })
        .sum();
    #[expect(clippy::cast_precision_loss, reason = "byte counts are small")]
    (wire as f64 / 512.0, json as f64 / 512.0)
}
