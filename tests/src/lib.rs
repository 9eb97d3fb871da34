//! Harness for end-to-end tests that start real parts: a Kafka-protocol broker
//! (tansu, as its own process), `podman system service` for container
//! metadata, real Podman containers, and the Glasshouse services in-process
//! through the same `run` functions their binaries call.
//!
//! Nothing here skips: a missing `tansu`, `podman` or test image is a test
//! failure with a message saying how to install it (`deploy/local/setup.sh`).
//!
//! # Layout
//! - [`Broker`]: a tansu broker on a free loopback port, killed on drop;
//!   [`Broker::pause`] stalls it.
//! - [`AggregatorProcess`]: `glasshouse-aggregator` as its own process (to kill
//!   it, measure its CPU and memory); [`workspace_binary`] finds it.
//! - [`PodmanService`]: the Docker-compatible API on a private socket.
//! - [`podman`]: run a podman command and return its stdout.
//! - [`wire`]: hand-built frames and a raw ingest exchange.
//! - [`simulated`]: the real agent client fed synthetic batches; event ids in Kafka.
//! - [`http_get`], [`metric_value`]: reading a `/metrics` page.
//! - [`free_port`], [`wait_for_port`].

use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// The image `deploy/local/setup.sh` builds from Debian's busybox-static.
pub const TEST_IMAGE: &str = "localhost/glasshouse-test:latest";

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after {timeout:?}")
}

fn find_tansu() -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var("GLASSHOUSE_TANSU") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("tansu")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/tansu"));
    }
    candidates
        .into_iter()
        .find(|p| p.is_file())
        .context("tansu broker not found on PATH or in ~/.cargo/bin: run deploy/local/setup.sh")
}

/// A tansu broker with in-memory storage on a free loopback port.
#[derive(Debug)]
pub struct Broker {
    child: Child,
    pub addr: SocketAddr,
}

impl Broker {
    pub fn start() -> anyhow::Result<Broker> {
        let tansu = find_tansu()?;
        let port = free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", tansu.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let broker = Broker { child, addr };
        wait_for_port(addr, Duration::from_secs(20)).context("tansu broker did not start")?;
        Ok(broker)
    }

    /// SIGSTOP: the broker keeps its connections but answers nothing (a stall).
    pub fn pause(&self) {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP) };
    }

    /// SIGCONT after [`Broker::pause`].
    pub fn resume(&self) {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Ignored errors: the broker may already have exited.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `podman ARGS`, returning trimmed stdout; fails with podman's stderr.
pub fn podman(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("podman")
        .args(args)
        .output()
        .context("podman not found: run deploy/local/setup.sh")?;
    ensure!(
        out.status.success(),
        "podman {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Fails unless the test image exists.
pub fn require_test_image() -> anyhow::Result<()> {
    podman(&["image", "exists", TEST_IMAGE])
        .with_context(|| format!("test image {TEST_IMAGE} missing: run deploy/local/setup.sh"))?;
    Ok(())
}

/// `podman system service` (the Docker-compatible API) on a private socket.
#[derive(Debug)]
pub struct PodmanService {
    child: Child,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl PodmanService {
    pub fn start() -> anyhow::Result<PodmanService> {
        let dir = std::env::temp_dir().join(format!("glasshouse-podman-{}-{}", std::process::id(), free_port()?));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("podman.sock");
        let child = Command::new("podman")
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("podman not found: run deploy/local/setup.sh")?;
        let service = PodmanService { child, socket, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !service.socket.exists() {
            ensure!(
                Instant::now() < deadline,
                "podman system service did not create {}",
                service.socket.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(service)
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        // Ignored errors: best-effort cleanup of a helper process and its dir.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A binary of this workspace, built next to the test executables
/// (`cargo test --workspace` builds every binary of the workspace).
pub fn workspace_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let bin = dir.join(name);
    ensure!(
        bin.is_file(),
        "{} not built: run `cargo build --workspace` first",
        bin.display()
    );
    Ok(bin)
}

/// A `glasshouse-aggregator` as its own process (so a test can kill -9 it).
#[derive(Debug)]
pub struct AggregatorProcess {
    child: Child,
    pub addr: SocketAddr,
    config: PathBuf,
}

impl AggregatorProcess {
    /// Starts one on a free port, writing to `brokers`; `extra` is appended
    /// to its TOML config.
    pub fn start(brokers: &str, extra: &str) -> anyhow::Result<AggregatorProcess> {
        AggregatorProcess::start_on(free_port()?, brokers, extra)
    }

    /// Starts one on 127.0.0.1:`port` (e.g. to replace one that was killed).
    pub fn start_on(port: u16, brokers: &str, extra: &str) -> anyhow::Result<AggregatorProcess> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = std::env::temp_dir().join(format!("glasshouse-aggregator-{port}.toml"));
        std::fs::write(
            &config,
            format!("listen = \"{addr}\"\nbrokers = \"{brokers}\"\nproducer_id = \"aggregator/{port}\"\n{extra}\n"),
        )?;
        let child = Command::new(workspace_binary("glasshouse-aggregator")?)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting glasshouse-aggregator")?;
        let process = AggregatorProcess { child, addr, config };
        wait_for_port(addr, Duration::from_secs(30)).context("aggregator did not start")?;
        Ok(process)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// CPU time (user + system) the process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time_of(self.child.id())
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/PID/status")?;
        Ok(kb * 1024)
    }

    /// SIGKILL: no drain, no flush.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM and wait: the orderly shutdown path.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for AggregatorProcess {
    fn drop(&mut self) {
        // Ignored errors: it may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// This crate's directory (`tests/`) at run time (cargo sets it for tests and
/// benches), not the one compiled in: one target directory serves clones at
/// other paths, and a test binary built for another clone is reused when
/// nothing changed.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Builds `tests/benches/storm.c` (a static load generator: `storm exec N`,
/// `storm tcp N`) into a fresh directory, to mount into containers.
pub fn build_storm() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("glasshouse-storm-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let src = manifest_dir().join("benches/storm.c");
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("storm"))
        .arg(&src)
        .status()
        .context("running gcc")?;
    ensure!(status.success(), "gcc failed on {}", src.display());
    Ok(dir)
}

/// CPU time (user + system) process `pid` has used so far.
pub fn cpu_time_of(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the
    // 12th and 13th of them.
    let rest = stat.rsplit_once(')').context("malformed /proc/PID/stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 =
        fields.get(11).context("no utime")?.parse::<u64>()? + fields.get(12).context("no stime")?.parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// A `glasshouse-agent` as its own process, with its `/metrics` on a free port.
#[derive(Debug)]
pub struct AgentProcess {
    child: Child,
    pub metrics: SocketAddr,
    config: PathBuf,
}

impl AgentProcess {
    /// Starts one streaming to `endpoint`; `extra` is appended to its TOML config.
    pub fn start(endpoint: &str, extra: &str) -> anyhow::Result<AgentProcess> {
        let port = free_port()?;
        let metrics = SocketAddr::from(([127, 0, 0, 1], port));
        let config = std::env::temp_dir().join(format!("glasshouse-agent-{port}.toml"));
        std::fs::write(
            &config,
            // No spool: a benchmark's agent must not re-send another run's batches.
            format!("aggregators = [\"{endpoint}\"]\nmetrics_listen = \"{metrics}\"\nspool = false\n{extra}\n"),
        )?;
        let child = Command::new(workspace_binary("glasshouse-agent")?)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting glasshouse-agent")?;
        let process = AgentProcess { child, metrics, config };
        wait_for_port(metrics, Duration::from_secs(30)).context("agent did not start")?;
        Ok(process)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: the orderly shutdown path.
    pub fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid with a constant signal.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        Ok(self.child.wait()?)
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        // Ignored errors: it may already be gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// `GET path` on `addr` over plain HTTP/1.1; the whole response as text.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of the unlabelled sample `name` in a Prometheus text page.
pub fn metric_value(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Installs a test log subscriber once (RUST_LOG or `info`).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,librdkafka=warn,rdkafka=warn"));
    // Ignored error: another test installed it first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Hand-built wire frames, for tests that play an agent.
pub mod wire {
    use glasshouse_proto::v1::{self, aggregator_frame, ingest_client::IngestClient};
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Status;
    use tonic::metadata::MetadataValue;
    use tonic::transport::Channel;

    /// Opens a stream on `channel` (with a bearer token when `auth` is
    /// `(agent, secret)`), sends `frames`, and returns the acks received until
    /// `expect_acks` arrived or the aggregator ended the stream — or its status.
    pub async fn exchange(
        channel: Channel,
        auth: Option<(&str, &str)>,
        frames: Vec<v1::AgentFrame>,
        expect_acks: usize,
    ) -> Result<Vec<u64>, Status> {
        let (tx, rx) = mpsc::channel(frames.len() + 1);
        for f in frames {
            tx.send(f).await.map_err(|_| Status::internal("channel"))?;
        }
        let mut request = tonic::Request::new(ReceiverStream::new(rx));
        if let Some((agent, secret)) = auth {
            let agent = MetadataValue::try_from(agent).map_err(|_| Status::internal("header"))?;
            let bearer = MetadataValue::try_from(format!("Bearer {secret}")).map_err(|_| Status::internal("header"))?;
            request
                .metadata_mut()
                .insert(glasshouse_proto::metadata::AGENT_ID, agent);
            request.metadata_mut().insert("authorization", bearer);
        }
        let mut inbound = IngestClient::new(channel).stream(request).await?.into_inner();
        let mut acks = Vec::new();
        while acks.len() < expect_acks {
            match inbound.message().await? {
                Some(v1::AggregatorFrame {
                    frame: Some(aggregator_frame::Frame::Ack(a)),
                }) => acks.push(a.sequence),
                Some(_) => {}
                None => break,
            }
        }
        // Closing our side ends the stream.
        drop(tx);
        Ok(acks)
    }

    /// A hello from `agent_id`.
    pub fn hello(agent_id: &str) -> v1::AgentFrame {
        v1::AgentFrame {
            frame: Some(v1::agent_frame::Frame::Hello(v1::Hello {
                agent_id: agent_id.to_owned(),
                boot_id: 1,
                hostname: format!("{agent_id}-host"),
                agent_version: "test".into(),
                sensor_mode: "test".into(),
            })),
        }
    }

    /// A batch of `events` exec events in one container. The first batch of a
    /// stream (`define = true`) defines the strings and the container.
    pub fn batch(sequence: u64, events: usize, define: bool) -> v1::AgentFrame {
        let s = |id: u32, v: &str| v1::StringDef {
            id,
            value: v.as_bytes().to_vec().into(),
        };
        let (strings, containers) = if define {
            (
                vec![
                    s(1, &"ab".repeat(32)),
                    s(2, "localhost/sim:1"),
                    s(3, "localhost/sim"),
                    s(4, "/bin/true"),
                ],
                vec![v1::ContainerDef {
                    r#ref: 1,
                    runtime: v1::ContainerRuntime::Podman as i32,
                    container_id: 1,
                    image: 2,
                    workload_id: 3,
                    ..Default::default()
                }],
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let process_events = (0..events)
            .map(|i| v1::ProcessEvent {
                time_delta_ns: 1_000,
                kind: v1::ProcessEventKind::Exec as i32,
                container: 1,
                pid: 1000 + u32::try_from(i).unwrap_or(0),
                path: 4,
                argv: vec![4],
                count: 1,
                ..Default::default()
            })
            .collect();
        v1::AgentFrame {
            frame: Some(v1::agent_frame::Frame::Batch(v1::Batch {
                sequence,
                base_time_unix_ns: 1_800_000_000_000_000_000,
                reset_strings: false,
                strings,
                containers,
                process_events,
                ..Default::default()
            })),
        }
    }
}

/// Simulated agents: the real agent stream client fed synthetic batches.
pub mod simulated {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::{Context, ensure};
    use bytes::Bytes;
    use glasshouse_agent::attribute::ContainerKey;
    use glasshouse_agent::client::ClientConfig;
    use glasshouse_agent::pipeline::{Container, Event, PendingBatch};
    use glasshouse_agent::runtime::ContainerMeta;
    use glasshouse_proto::process::{self, Kind};
    use glasshouse_proto::record::RecordType;
    use glasshouse_proto::{ipc, v1};
    use rdkafka::ClientConfig as KafkaConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Message;

    /// A Podman container numbered `n` of workload `workload`.
    pub fn container(n: u64, workload: &str) -> Arc<Container> {
        Arc::new(Container {
            key: ContainerKey {
                runtime: v1::ContainerRuntime::Podman,
                id: format!("{n:064x}"),
                pod_uid: None,
            },
            meta: ContainerMeta {
                image: Some(format!("{workload}:1")),
                ..Default::default()
            },
            workload_id: workload.to_owned(),
            complete: true,
        })
    }

    /// Batch `sequence` of `events` distinct execs in `container`.
    pub fn batch(container: &Arc<Container>, sequence: u64, events: usize) -> PendingBatch {
        let events = (0..events)
            .map(|i| Event {
                time_unix_ns: 1_800_000_000_000_000_000 + i64::try_from(sequence * 1000).unwrap_or(0),
                kind: Kind::Exec,
                container: Some(container.clone()),
                pid: u32::try_from(i).unwrap_or(0) + 100,
                ppid: 1,
                uid: 0,
                gid: 0,
                path: Some(Bytes::from_static(b"/bin/true")),
                argv: vec![Bytes::from(format!("arg-{sequence}-{i}"))],
                cwd: Some(Bytes::from_static(b"/")),
                parent_exe: None,
                exit_code: None,
                exec_in: false,
                drift: false,
                stdio_socket: false,
                count: 1,
            })
            .collect();
        PendingBatch {
            sequence,
            events,
            ..Default::default()
        }
    }

    /// Client settings for agent `agent_id` (boot id `boot`).
    pub fn agent(agent_id: &str, boot: u64, endpoints: Vec<String>, max_unacked: usize) -> ClientConfig {
        ClientConfig {
            endpoints,
            hello: v1::Hello {
                agent_id: agent_id.to_owned(),
                boot_id: boot,
                hostname: format!("{agent_id}-host"),
                agent_version: "test".into(),
                sensor_mode: "simulated".into(),
            },
            token: None,
            tls: None,
            max_unacked,
            max_strings: 100_000,
            drain_timeout: Duration::from_secs(120),
            spool: None,
        }
    }

    /// Stable event id: agent, boot, batch sequence, index in batch.
    pub type EventId = (String, u64, u64, u32);

    /// Reads `glasshouse.process` from the start until `expected` distinct
    /// event ids are seen and the topic has been quiet for a second; returns
    /// how often each id was seen. Checks every message key is its rows'
    /// workload id.
    pub async fn collect_ids(
        brokers: &str,
        expected: usize,
        within: Duration,
    ) -> anyhow::Result<HashMap<EventId, u32>> {
        let consumer: StreamConsumer = KafkaConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("collect-{}", crate::free_port()?))
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[RecordType::Process.topic()])?;
        let mut seen: HashMap<EventId, u32> = HashMap::new();
        let deadline = Instant::now() + within;
        let mut idle_since = Instant::now();
        while seen.len() < expected || idle_since.elapsed() < Duration::from_secs(1) {
            ensure!(
                Instant::now() < deadline,
                "only {} of {expected} events in kafka",
                seen.len()
            );
            let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
                continue;
            };
            idle_since = Instant::now();
            let msg = msg?;
            let batch = ipc::decode(msg.payload().context("empty payload")?)?;
            let key = msg.key().map(|k| String::from_utf8_lossy(k).into_owned());
            for row in process::read_rows(&batch)? {
                ensure!(key.as_deref() == Some(&*row.workload_id), "key is not the workload id");
                *seen
                    .entry((row.agent_id.to_string(), row.boot_id, row.batch_seq, row.event_index))
                    .or_default() += 1;
            }
        }
        // Leave the group before closing: a plain drop waits out the session timeout.
        consumer.unsubscribe();
        Ok(seen)
    }
}

/// Reading a telemetry topic back as an independent consumer would.
pub mod topics {
    use std::time::{Duration, Instant};

    use anyhow::{Context, ensure};
    use glasshouse_proto::SCHEMA_VERSION;
    use glasshouse_proto::record::{HEADER_RECORD_TYPE, HEADER_SCHEMA_VERSION, RecordType};
    use rdkafka::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Headers, Message};

    /// Messages in `topic` now: the sum of its partitions' high watermarks
    /// minus their low ones.
    pub fn count_messages(brokers: &str, topic: &str) -> anyhow::Result<i64> {
        use rdkafka::consumer::BaseConsumer;
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = metadata.topics().first().context("no metadata")?;
        let mut n = 0;
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            n += high - low;
        }
        Ok(n)
    }

    /// Every message now in `topic`, read to its end (values as text).
    pub fn read_all(brokers: &str, topic: &str) -> anyhow::Result<Vec<String>> {
        Ok(read_all_bytes(brokers, topic)?
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect())
    }

    /// Every message now in `topic`, read to its end (values as bytes, e.g.
    /// Arrow IPC). The end is where each partition reports end-of-partition,
    /// not the high watermark: tansu 0.6 reports a high watermark of the
    /// last record *batch*'s base offset + 1, so a watermark-bounded read
    /// misses the other records of the last batch.
    pub fn read_all_bytes(brokers: &str, topic: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::error::KafkaError;
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "read-all")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .create()?;
        let timeout = Duration::from_secs(10);
        let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
        let t = metadata.topics().first().context("no metadata")?;
        let mut tpl = TopicPartitionList::new();
        let mut open: std::collections::HashSet<i32> = std::collections::HashSet::new();
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
            open.insert(p.id());
        }
        let mut out = Vec::new();
        if open.is_empty() {
            return Ok(out);
        }
        consumer.assign(&tpl)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !open.is_empty() {
            ensure!(
                Instant::now() < deadline,
                "read {} messages of {topic}, partitions {open:?} not at their end",
                out.len()
            );
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(m) => out.push(m?.payload().unwrap_or_default().to_vec()),
            }
        }
        Ok(out)
    }

    /// Validates every alert now on `glasshouse.alerts` against the OCSF
    /// schema (see [`crate::validate_ocsf`]); returns how many there were.
    pub fn validate_all_alerts(brokers: &str) -> anyhow::Result<usize> {
        let alerts = read_all(brokers, glasshouse_proto::record::TOPIC_ALERTS)?;
        if !alerts.is_empty() {
            crate::validate_ocsf(&alerts)?;
        }
        Ok(alerts.len())
    }

    /// Reads `record_type`'s topic from the start until `expected` rows arrived
    /// and the topic has been quiet for a second (so extra rows would be seen);
    /// `read` turns a message value into rows. Returns every row with its
    /// message's key. Checks every message has a key, a record-type header
    /// naming `record_type` and the schema version of this build.
    pub async fn read_topic<R>(
        brokers: &str,
        record_type: RecordType,
        expected: usize,
        read: impl Fn(&[u8]) -> anyhow::Result<Vec<R>>,
    ) -> anyhow::Result<Vec<(String, R)>> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set(
                "group.id",
                format!("read-{}-{}", record_type.name(), crate::free_port()?),
            )
            .set("auto.offset.reset", "earliest")
            .create()?;
        consumer.subscribe(&[record_type.topic()])?;
        let within = Duration::from_secs(30);
        let deadline = Instant::now() + within;
        let mut rows = Vec::new();
        let mut idle_since = Instant::now();
        while rows.len() < expected || idle_since.elapsed() < Duration::from_secs(1) {
            ensure!(
                Instant::now() < deadline,
                "only {} of {expected} {record_type} rows after {within:?}",
                rows.len()
            );
            let Ok(msg) = tokio::time::timeout(Duration::from_millis(200), consumer.recv()).await else {
                continue;
            };
            idle_since = Instant::now();
            let msg = msg?;
            let header = |key: &str| {
                msg.headers()
                    .and_then(|h| h.iter().find(|h| h.key == key))
                    .and_then(|h| h.value)
            };
            ensure!(
                header(HEADER_RECORD_TYPE) == Some(record_type.name().as_bytes()),
                "record type header {:?} on {}",
                header(HEADER_RECORD_TYPE),
                record_type.topic()
            );
            ensure!(
                header(HEADER_SCHEMA_VERSION) == Some(SCHEMA_VERSION.to_string().as_bytes()),
                "schema version header {:?} on {}",
                header(HEADER_SCHEMA_VERSION),
                record_type.topic()
            );
            let key = String::from_utf8(msg.key().context("message without key")?.to_vec())?;
            for row in read(msg.payload().context("empty payload")?)? {
                rows.push((key.clone(), row));
            }
        }
        ensure!(
            rows.len() == expected,
            "{} {record_type} rows, expected {expected}",
            rows.len()
        );
        // Leave the group before closing: a plain drop waits out the session timeout.
        consumer.unsubscribe();
        Ok(rows)
    }
}

/// Validates OCSF documents (one JSON document each) against the official
/// OCSF schema with `tests/ocsf/validate.py` (PyPI `ocsf-json-schema` and
/// `jsonschema`, offline). Fails naming every invalid document's errors.
pub fn validate_ocsf(docs: &[String]) -> anyhow::Result<()> {
    ensure!(!docs.is_empty(), "no OCSF documents to validate");
    let mut file = tempfile::NamedTempFile::new()?;
    for d in docs {
        ensure!(!d.contains('\n'), "a document spans lines: {d}");
        writeln!(file, "{d}")?;
    }
    file.flush()?;
    let out = Command::new("python3")
        .arg(manifest_dir().join("ocsf/validate.py"))
        .arg(file.path())
        .output()
        .context("running python3 tests/ocsf/validate.py (setup.sh installs ocsf-json-schema and jsonschema)")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "OCSF validation failed:\n{text}");
    ensure!(
        text.contains(&format!("{} checked, 0 invalid", docs.len())),
        "unexpected validator output:\n{text}"
    );
    Ok(())
}

/// The deploy tests' tools: helm and the offline Kubernetes validator
/// (`deploy/kubernetes/validate.py`), found on this host or failing with a
/// message naming `deploy/local/setup.sh`, never skipped.
pub mod deploy {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    use anyhow::{Context, bail, ensure};

    /// The repository's root directory.
    pub fn repo_root() -> PathBuf {
        crate::manifest_dir()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".."))
    }

    /// `deploy/helm/glasshouse`.
    pub fn chart() -> PathBuf {
        repo_root().join("deploy/helm/glasshouse")
    }

    /// An executable on `PATH`, or an error saying how to install it.
    pub fn tool(name: &str) -> anyhow::Result<PathBuf> {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.is_file())
            .with_context(|| format!("{name} not found on PATH: run deploy/local/setup.sh (it installs it)"))
    }

    /// A scratch directory removed on drop.
    #[derive(Debug)]
    pub struct Scratch(pub PathBuf);

    impl Scratch {
        pub fn new(tag: &str) -> anyhow::Result<Scratch> {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "glasshouse-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir)?;
            Ok(Scratch(dir))
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            // Ignored error: best-effort cleanup.
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `helm template glasshouse deploy/helm/glasshouse ARGS`: the rendered
    /// YAML, or an error with helm's message.
    pub fn helm_template(args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(tool("helm")?)
            .args(["template", "glasshouse"])
            .arg(chart())
            .args(args)
            .output()
            .context("running helm")?;
        if !out.status.success() {
            bail!(
                "helm template {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }

    /// What `validate.py` said of some manifests.
    #[derive(Debug)]
    pub struct Validation {
        /// Exit status 0.
        pub valid: bool,
        /// Its output: one line per problem, then a summary line.
        pub report: String,
        /// Every object it read, as JSON.
        pub objects: Vec<serde_json::Value>,
    }

    /// Runs `deploy/kubernetes/validate.py` (strict schemas of Kubernetes
    /// 1.30 and 1.37, Strimzi KafkaTopic, no unknown kinds) on `yaml`.
    pub fn validate(yaml: &str) -> anyhow::Result<Validation> {
        let python = tool("python3")?;
        let check = Command::new(&python)
            .args(["-c", "import kubernetes_validate"])
            .output()?;
        ensure!(
            check.status.success(),
            "python3 cannot import kubernetes_validate: run deploy/local/setup.sh (pip kubernetes-validate)"
        );
        let scratch = Scratch::new("validate")?;
        let input = scratch.0.join("manifests.yaml");
        let json = scratch.0.join("objects.json");
        std::fs::write(&input, yaml)?;
        let out = Command::new(&python)
            .arg(repo_root().join("deploy/kubernetes/validate.py"))
            .arg("--json-out")
            .arg(&json)
            .arg(&input)
            .output()?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            matches!(out.status.code(), Some(0 | 1)),
            "validate.py crashed ({}): {report}",
            out.status
        );
        let objects = match std::fs::read(&json) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(_) => Vec::new(),
        };
        Ok(Validation {
            valid: out.status.success(),
            report,
            objects,
        })
    }

    /// The object of `kind` named `name` among `objects`.
    pub fn find<'a>(objects: &'a [serde_json::Value], kind: &str, name: &str) -> anyhow::Result<&'a serde_json::Value> {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .with_context(|| format!("no {kind}/{name} in the rendered manifests"))
    }

    /// The capabilities the agent DaemonSet adds, in order.
    pub fn agent_capabilities(objects: &[serde_json::Value]) -> anyhow::Result<Vec<String>> {
        let ds = find(objects, "DaemonSet", "glasshouse-agent")?;
        let caps = ds["spec"]["template"]["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
            .as_array()
            .context("agent DaemonSet adds no capabilities")?;
        caps.iter()
            .map(|c| c.as_str().map(str::to_owned).context("capability is not a string"))
            .collect()
    }
}
