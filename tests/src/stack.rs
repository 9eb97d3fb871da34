//! One stack for the end-to-end tests: a broker, the Podman service, an
//! aggregator and an agent in this process, each with the test's config
//! overrides, started in order and waited on by readiness signals instead of
//! fixed sleeps.
//!
//! Readiness: the broker and the Podman service are ready when their start
//! returns (port open, socket created). The agent sends its hello only after
//! its sensor is attached, so "the aggregator has an open agent stream"
//! ([`glasshouse_aggregator::internal_events::STREAMS`]) means the agent is
//! watching: a container started after [`StackBuilder::start`] returns is
//! seen from its first exec. nextest runs every test in its own process, so
//! the gauge counts this test's streams only.
//!
//! ```ignore
//! let stack = Stack::builder().agent("file-agent", "sensor = \"bpf\"").start().await?;
//! // … run containers …
//! let mut tail = stack.tail(&[RecordType::File])?;
//! let done = tail.until(Duration::from_secs(30), |record, batch| { …; Ok(found) }).await?;
//! stack.stop().await?;
//! ```

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use glasshouse_proto::ipc;
use glasshouse_proto::record::RecordType;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Message};
use tokio_util::sync::CancellationToken;

use crate::{AggregatorTask, Broker, PodmanService, free_port};

/// How long the agent may take from start to an open stream (loading the eBPF
/// programs and the start-up scan of /proc take a few seconds on a busy host).
const AGENT_READY_WITHIN: Duration = Duration::from_secs(60);

/// The task of an agent run in the test's process.
pub type AgentTask =
    tokio::task::JoinHandle<Result<glasshouse_agent::client::ClientReport, glasshouse_agent::AgentError>>;

/// What to start; see [`Stack::builder`].
#[derive(Debug, Default)]
pub struct StackBuilder {
    aggregator: String,
    agent: Option<(String, String)>,
    no_containers: bool,
}

impl StackBuilder {
    /// No Podman service and no test image: a stack for hand-built frames.
    pub fn no_containers(mut self) -> Self {
        self.no_containers = true;
        self
    }

    /// Extra aggregator config lines (after `brokers` and 20 ms flushes).
    pub fn aggregator(mut self, extra: &str) -> Self {
        self.aggregator = extra.to_owned();
        self
    }

    /// Start an agent named `agent_id` in this process, with `extra` config
    /// lines (after aggregator, Podman socket, no spool and 50 ms batches).
    pub fn agent(mut self, agent_id: &str, extra: &str) -> Self {
        self.agent = Some((agent_id.to_owned(), extra.to_owned()));
        self
    }

    /// Starts broker, Podman service, aggregator and (if asked) the agent,
    /// returning once the agent has an open stream.
    pub async fn start(self) -> anyhow::Result<Stack> {
        crate::init_logging();
        let podman = if self.no_containers {
            None
        } else {
            crate::require_test_image()?;
            Some(PodmanService::start()?)
        };
        let broker = Broker::start()?;
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let ingest = listener.local_addr()?;
        let config: glasshouse_aggregator::Config = glasshouse_runtime::service::parse_config(
            "test",
            &format!(
                "brokers = \"{}\"\nflush_max_age_ms = 20\n{}",
                broker.bootstrap(),
                self.aggregator
            ),
        )?;
        let aggregator = tokio::spawn(glasshouse_aggregator::serve(config, listener, cancel.clone()));
        let mut stack = Stack {
            broker,
            podman,
            ingest,
            cancel,
            agent_cancel: CancellationToken::new(),
            aggregator: Some(aggregator),
            agent: None,
        };
        if let Some((agent_id, extra)) = self.agent {
            stack.start_agent(&agent_id, &extra).await?;
        }
        Ok(stack)
    }
}

/// A started stack; stopped (agent first, then aggregator) by [`Stack::stop`],
/// killed on drop.
pub struct Stack {
    pub broker: Broker,
    /// `None` for a stack built with [`StackBuilder::no_containers`].
    podman: Option<PodmanService>,
    /// The aggregator's ingest address.
    pub ingest: SocketAddr,
    cancel: CancellationToken,
    agent_cancel: CancellationToken,
    aggregator: Option<AggregatorTask>,
    agent: Option<AgentTask>,
}

impl Stack {
    pub fn builder() -> StackBuilder {
        StackBuilder::default()
    }

    /// The Podman service (a stack with containers).
    pub fn podman(&self) -> anyhow::Result<&PodmanService> {
        self.podman
            .as_ref()
            .context("a stack without containers has no Podman service")
    }

    /// The aggregator's ingest endpoint as agents name it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.ingest)
    }

    /// A gRPC channel to the aggregator.
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        Ok(tonic::transport::Endpoint::from_shared(self.endpoint())?
            .connect()
            .await?)
    }

    /// The agent config a test's agent gets: `agent_id`, this stack's
    /// aggregator and Podman socket, no spool, 50 ms batches, then `extra`.
    pub fn agent_config(&self, agent_id: &str, extra: &str) -> anyhow::Result<glasshouse_agent::Config> {
        Ok(glasshouse_runtime::service::parse_config(
            "test",
            &format!(
                "agent_id = \"{agent_id}\"\nspool = false\naggregators = [\"{}\"]\n\
                 runtime_sockets = [\"{}\"]\nbatch_max_age_ms = 50\n{extra}",
                self.endpoint(),
                self.podman()?.socket.display()
            ),
        )?)
    }

    /// Starts an agent in this process and waits until it is watching (its
    /// stream is open); fails if it exits first.
    pub async fn start_agent(&mut self, agent_id: &str, extra: &str) -> anyhow::Result<()> {
        ensure!(self.agent.is_none(), "the stack runs one agent at a time");
        let config = self.agent_config(agent_id, extra)?;
        self.agent_cancel = CancellationToken::new();
        let agent = tokio::spawn(glasshouse_agent::run(config, self.agent_cancel.clone()));
        let streams_before = glasshouse_aggregator::internal_events::STREAMS.get();
        let deadline = Instant::now() + AGENT_READY_WITHIN;
        while glasshouse_aggregator::internal_events::STREAMS.get() <= streams_before {
            if agent.is_finished() {
                bail!("agent {agent_id} exited before it was ready: {:?}", agent.await);
            }
            ensure!(
                Instant::now() < deadline,
                "agent {agent_id} opened no stream within {AGENT_READY_WITHIN:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.agent = Some(agent);
        Ok(())
    }

    /// Stops the agent (it drains: its last batch is acknowledged by the
    /// running aggregator) and returns its report.
    pub async fn stop_agent(&mut self) -> anyhow::Result<glasshouse_agent::client::ClientReport> {
        let agent = self.agent.take().context("no agent running")?;
        self.agent_cancel.cancel();
        Ok(tokio::time::timeout(Duration::from_secs(20), agent)
            .await
            .context("agent did not stop within 20 s")???)
    }

    /// Whether the agent is still running (false once it exited on its own).
    pub fn agent_running(&self) -> bool {
        self.agent.as_ref().is_some_and(|a| !a.is_finished())
    }

    /// Stops agent then aggregator, each within 20 s, and fails if either
    /// failed; broker and Podman service run until the stack is dropped.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.agent.is_some() {
            self.stop_agent().await?;
        }
        self.cancel.cancel();
        if let Some(aggregator) = self.aggregator.take() {
            tokio::time::timeout(Duration::from_secs(20), aggregator)
                .await
                .context("aggregator did not stop within 20 s")???;
        }
        Ok(())
    }

    /// A consumer of `records`' topics from their start.
    pub fn tail(&self, records: &[RecordType]) -> anyhow::Result<Tail> {
        Tail::new(&self.broker.bootstrap(), records)
    }
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("broker", &self.broker.bootstrap())
            .field("ingest", &self.ingest)
            .field("agent_running", &self.agent_running())
            .finish_non_exhaustive()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.agent_cancel.cancel();
        self.cancel.cancel();
    }
}

/// Waits until `container` (a running Podman container) has a TCP socket
/// listening on `port` (IPv4 or IPv6: busybox `nc -l` takes `::`), read
/// from its `/proc/net/tcp{,6}` through `podman exec` (an exec-in an agent
/// watching would report).
pub fn wait_listening(container: &str, port: u16, within: Duration) -> anyhow::Result<()> {
    let local = format!(":{port:04X} ");
    let deadline = Instant::now() + within;
    // State 0A is LISTEN.
    let script = "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null; true";
    while !crate::podman(&["exec", container, "sh", "-c", script])?
        .lines()
        .any(|l| l.contains(&local) && l.split_whitespace().nth(3) == Some("0A"))
    {
        ensure!(
            Instant::now() < deadline,
            "{container} did not listen on {port} within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A consumer of record topics from their start, in a group of its own.
pub struct Tail {
    consumer: StreamConsumer,
    records: Vec<RecordType>,
}

impl Tail {
    pub fn new(brokers: &str, records: &[RecordType]) -> anyhow::Result<Tail> {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", format!("tail-{}", free_port()?))
            .set("auto.offset.reset", "earliest")
            .create()?;
        let topics: Vec<&str> = records.iter().map(|r| r.topic()).collect();
        consumer.subscribe(&topics)?;
        Ok(Tail {
            consumer,
            records: records.to_vec(),
        })
    }

    /// Hands every message's batch to `seen` until it returns true (then
    /// `Ok(true)`) or `within` passed (then `Ok(false)`, so the test can name
    /// what it saw). A message that is not a valid batch is an error.
    pub async fn until(
        &mut self,
        within: Duration,
        mut seen: impl FnMut(RecordType, &arrow_array::RecordBatch) -> anyhow::Result<bool>,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            let Ok(msg) = tokio::time::timeout(left.min(Duration::from_millis(200)), self.consumer.recv()).await else {
                continue;
            };
            let (record, batch) = self.decode(msg?)?;
            if seen(record, &batch)? {
                return Ok(true);
            }
        }
    }

    /// Hands every message's batch to `seen` until the topics were quiet
    /// for `quiet` (at most 30 s): what late rows there are.
    pub async fn settle(
        &mut self,
        quiet: Duration,
        mut seen: impl FnMut(RecordType, &arrow_array::RecordBatch) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(msg) = tokio::time::timeout(quiet, self.consumer.recv()).await else {
                return Ok(());
            };
            let (record, batch) = self.decode(msg?)?;
            seen(record, &batch)?;
        }
        Ok(())
    }

    fn decode(&self, msg: BorrowedMessage<'_>) -> anyhow::Result<(RecordType, arrow_array::RecordBatch)> {
        let record = self
            .records
            .iter()
            .copied()
            .find(|r| r.topic() == msg.topic())
            .with_context(|| format!("message on unexpected topic {}", msg.topic()))?;
        Ok((record, ipc::decode(msg.payload().context("empty payload")?)?))
    }
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tail")
            .field("records", &self.records)
            .finish_non_exhaustive()
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        // Leave the group before closing: a plain drop waits out the session timeout.
        self.consumer.unsubscribe();
    }
}
