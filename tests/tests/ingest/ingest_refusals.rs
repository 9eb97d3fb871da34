//! The aggregator refuses bad clients and bad input — each with its own gRPC
//! status — while a concurrent well-behaved agent keeps being served and every
//! one of its events reaches Kafka.

use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_agent::client;
use glasshouse_aggregator::service::MAX_HELLO_FIELD;
use glasshouse_proto::v1;
use glasshouse_runtime::service::parse_config;
use glasshouse_tests::{Broker, free_port, init_logging, simulated, wire};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const GOOD_SECRET: &str = "good-agent-secret-0123456789";
const BAD_SECRET: &str = "bad-agent-secret-0123456789";
const MIXED_SECRET: &str = "mixed-agent-secret-0123456789";

/// Opens a stream as `agent` with `secret`, sends `frames`, and returns the
/// acks received until the aggregator ends the stream (or its status).
async fn play(
    endpoint: &str,
    auth: Option<(&str, &str)>,
    frames: Vec<v1::AgentFrame>,
    expect_acks: usize,
) -> Result<Vec<u64>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    wire::exchange(channel, auth, frames, expect_acks).await
}

fn expect_status(result: Result<Vec<u64>, tonic::Status>, code: Code, words: &str) -> anyhow::Result<()> {
    let status = match result {
        Ok(acks) => anyhow::bail!("expected {code:?} ({words}), got acks {acks:?}"),
        Err(s) => s,
    };
    ensure!(status.code() == code, "expected {code:?}, got {status:?}");
    ensure!(
        status.message().contains(words),
        "status {status:?} should mention {words:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_get_their_status_and_a_good_agent_is_unaffected() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let dir = std::env::temp_dir().join(format!("glasshouse-refusals-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let tokens = dir.join("tokens.toml");
    std::fs::write(
        &tokens,
        // Each credential binds the host name its hello claims; "bad" also
        // binds a cluster.
        format!(
            "[agents]\ngood = {{ secret = \"{GOOD_SECRET}\", hostname = \"good-host\" }}\n\
             bad = {{ secret = \"{BAD_SECRET}\", hostname = \"bad-host\", cluster = \"prod\" }}\n\
             mixed = {{ secret = \"{MIXED_SECRET}\", hostname = \"mixed-host\" }}\n"
        ),
    )?;
    let cancel = CancellationToken::new();
    let metrics_port = free_port()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let config: glasshouse_aggregator::Config = parse_config(
        "test",
        &format!(
            "brokers = \"{}\"\nmax_batch_events = 100\ntokens_file = \"{}\"\nflush_max_age_ms = 20\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            broker.bootstrap(),
            tokens.display()
        ),
    )?;
    let aggregator = tokio::spawn(glasshouse_aggregator::serve(config, listener, cancel.clone()));

    // The good agent streams 50 batches of 10 events while the others misbehave.
    const BATCHES: u64 = 50;
    let good = {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let mut frames = vec![wire::hello("good")];
            frames.extend((1..=BATCHES).map(|seq| wire::batch(seq, 10, seq == 1)));
            play(&endpoint, Some(("good", GOOD_SECRET)), frames, BATCHES as usize).await
        })
    };

    for (case, auth, frames, code, words) in misbehaving_clients() {
        expect_status(play(&endpoint, auth, frames, 1).await, code, words).with_context(|| case.to_owned())?;
    }

    // The real agent client: a batch refused as malformed is dropped and
    // counted, not re-sent forever; the batches around it are delivered.
    let container = simulated::container(9, "localhost/mixed");
    let (tx, rx) = mpsc::channel(4);
    for (seq, events) in [(1, 10), (2, 101), (3, 10)] {
        tx.send(simulated::batch(&container, seq, events)).await?;
    }
    drop(tx);
    let mut mixed = simulated::agent("mixed", 1, vec![endpoint.clone()], 8);
    mixed.token = Some(MIXED_SECRET.to_owned());
    let report = tokio::time::timeout(Duration::from_secs(60), client::run(mixed, rx, cancel.child_token())).await?;
    ensure!(
        (
            report.batches_acked,
            report.batches_refused,
            report.events_refused,
            report.batches_unacked
        ) == (2, 1, 101, 0),
        "mixed agent: {report:?}"
    );

    // The gRPC health service says the ingest is serving.
    ensure_serving(&endpoint).await?;

    // The good agent got every ack, in order.
    let acks = tokio::time::timeout(Duration::from_secs(60), good).await???;
    assert_eq!(acks, (1..=BATCHES).collect::<Vec<_>>());

    // And every one of its events is in Kafka, once; nothing from the others.
    let expected = usize::try_from(BATCHES * 10)?;
    let seen = simulated::collect_ids(&broker.bootstrap(), expected, Duration::from_secs(30)).await?;
    let good: Vec<_> = seen.iter().filter(|((agent, ..), _)| agent != "mixed").collect();
    ensure!(
        good.len() == expected,
        "{} of {expected} events of the good agent in kafka",
        good.len()
    );
    for ((agent, ..), count) in good {
        assert_eq!(agent, "good", "a refused agent's event reached kafka");
        assert_eq!(*count, 1, "duplicate event");
    }

    // Refusals are counted by reason, and accepted records too.
    let metrics = glasshouse_tests::http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
    for (reason, n) in [
        ("unauthenticated", 3),
        ("impersonation", 4),
        ("too_large", 2),
        ("dangling_reference", 2),
        ("protocol", 2),
    ] {
        let line = format!("glasshouse_aggregator_refusals_total{{reason=\"{reason}\"}} {n}\n");
        ensure!(metrics.contains(&line), "metrics lack {line:?}:\n{metrics}");
    }
    // The good agent's events, plus the mixed agent's two good batches (its
    // first may be counted twice: it was re-sent after the refusal).
    let records_in = glasshouse_tests::metric_value(&metrics, "glasshouse_aggregator_records_in_total")
        .context("no records_in metric")?;
    ensure!(
        (BATCHES * 10 + 20..=BATCHES * 10 + 30).contains(&records_in),
        "records_in {records_in}"
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Raw gRPC frames to the ingest: whatever bytes a hostile client sends, as
/// one message each (tonic adds only the 5-byte length prefix).
mod raw {
    use bytes::{Buf, BufMut};
    use glasshouse_proto::v1;
    use prost::Message;
    use tonic::Status;
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

    #[derive(Debug, Default)]
    pub struct RawCodec;
    #[derive(Debug)]
    pub struct RawEncoder;
    #[derive(Debug)]
    pub struct FrameDecoder;

    impl Codec for RawCodec {
        type Encode = Vec<u8>;
        type Decode = v1::AggregatorFrame;
        type Encoder = RawEncoder;
        type Decoder = FrameDecoder;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> FrameDecoder {
            FrameDecoder
        }
    }

    impl Encoder for RawEncoder {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }

    impl Decoder for FrameDecoder {
        type Item = v1::AggregatorFrame;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<v1::AggregatorFrame>, Status> {
            let bytes = src.copy_to_bytes(src.remaining());
            v1::AggregatorFrame::decode(bytes)
                .map(Some)
                .map_err(|e| Status::internal(e.to_string()))
        }
    }

    /// Sends `frames` as raw messages on one stream; the status the stream
    /// ends with (`Ok` if it ended cleanly).
    pub async fn send(endpoint: &str, frames: Vec<Vec<u8>>) -> anyhow::Result<Status> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect()
            .await?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await?;
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/glasshouse.v1.Ingest/Stream");
        let request = tonic::Request::new(futures_stream(frames));
        let mut inbound = match grpc.streaming(request, path, RawCodec).await {
            Ok(response) => response.into_inner(),
            Err(status) => return Ok(status),
        };
        loop {
            match inbound.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(Status::ok("stream ended")),
                Err(status) => return Ok(status),
            }
        }
    }

    fn futures_stream(frames: Vec<Vec<u8>>) -> impl tokio_stream::Stream<Item = Vec<u8>> + Send + 'static {
        // Keep the request open after the frames: the aggregator, not the
        // client, must end the stream.
        let (tx, rx) = tokio::sync::mpsc::channel(frames.len() + 1);
        for f in frames {
            let _ = tx.try_send(f);
        }
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(20)).await;
            drop(tx);
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    pub fn encode(frame: &v1::AgentFrame) -> Vec<u8> {
        frame.encode_to_vec()
    }
}

/// A batch of one exec whose argv references a string of `long` bytes
/// `times` times and then a string of `short` bytes once.
fn expanding(sequence: u64, long: usize, times: usize, short: usize) -> v1::AgentFrame {
    v1::AgentFrame {
        frame: Some(v1::agent_frame::Frame::Batch(v1::Batch {
            sequence,
            base_time_unix_ns: glasshouse_tests::epoch(),
            reset_strings: true,
            strings: vec![
                v1::StringDef {
                    id: 1,
                    value: vec![b'L'; long].into(),
                },
                v1::StringDef {
                    id: 2,
                    value: vec![b's'; short].into(),
                },
            ],
            process_events: vec![v1::ProcessEvent {
                time_delta_ns: 1,
                kind: v1::ProcessEventKind::Exec as i32,
                pid: 1,
                argv: [vec![1; times], vec![2]].concat(),
                count: 1,
                ..Default::default()
            }],
            ..Default::default()
        })),
    }
}

/// What `frame`'s rows take under the aggregator's own accounting.
fn expanded_bytes(agent: &str, frame: v1::AgentFrame) -> anyhow::Result<usize> {
    let Some(v1::agent_frame::Frame::Hello(hello)) = wire::hello(agent).frame else {
        anyhow::bail!("hello")
    };
    let Some(v1::agent_frame::Frame::Batch(batch)) = frame.frame else {
        anyhow::bail!("batch")
    };
    let unlimited = glasshouse_aggregator::decode::Limits {
        max_batch_events: 1 << 20,
        max_strings: 1 << 20,
        max_batch_bytes: usize::MAX,
        max_string_bytes: usize::MAX,
        time_window: None,
    };
    let rows = glasshouse_aggregator::decode::StreamTables::new(&hello, unlimited).resolve(batch)?;
    Ok(rows.process.iter().flat_map(|(_, r)| r).map(|r| r.approx_bytes()).sum())
}

fn frames_len(chunks: u32) -> usize {
    usize::try_from(chunks).unwrap_or(usize::MAX) + 1
}

/// A good agent's 5 batches of 10 events are all acknowledged, and health
/// says SERVING.
async fn a_normal_agent_is_served(endpoint: &str, agent: &str) -> anyhow::Result<()> {
    let mut frames = vec![wire::hello(agent)];
    frames.extend((1..=5).map(|seq| wire::batch(seq, 10, seq == 1)));
    let acks = tokio::time::timeout(Duration::from_secs(30), play(endpoint, None, frames, 5))
        .await
        .context("normal agent timed out")??;
    ensure!(acks == vec![1, 2, 3, 4, 5], "normal agent acks {acks:?}");
    ensure_serving(endpoint).await
}

/// The gRPC health service says the ingest is serving.
async fn ensure_serving(endpoint: &str) -> anyhow::Result<()> {
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(endpoint.to_owned())?
            .connect()
            .await?,
    );
    let serving = health
        .check(HealthCheckRequest {
            service: "glasshouse.v1.Ingest".into(),
        })
        .await?
        .into_inner();
    ensure!(serving.status == ServingStatus::Serving as i32, "health {serving:?}");
    Ok(())
}

/// Budgets in bytes where data expands: a batch one byte over
/// `max_batch_bytes` is refused before anything is built (the ~1 MiB batch
/// that expanded to hundreds of MiB and then panicked the shared sink), a
/// stream's dictionary one byte over `max_string_bytes` likewise, a frame
/// that does not decode or is too large ends its stream with a non-OK status
/// — each counted by reason — and after each a normal agent is served and
/// the aggregator's peak memory stayed within a bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn byte_budgets_and_malformed_frames_are_refused_and_counted() -> anyhow::Result<()> {
    use glasshouse_proto::limits::{MIN_BATCH_BYTES, MIN_STRING_BYTES};
    init_logging();
    let broker = Broker::start()?;
    // The budget: what a batch of 24 references to 1 MiB plus one string of
    // `short` bytes takes, minus one byte (at least the smallest budget).
    const MIB: usize = 1 << 20;
    let short = 1000;
    let times = MIN_BATCH_BYTES / MIB;
    let exact = expanded_bytes("hostile", expanding(1, MIB, times, short))?;
    ensure!(exact > MIN_BATCH_BYTES, "{exact} under the smallest budget");
    let budget = exact - 1;
    let metrics_port = free_port()?;
    let mut aggregator = glasshouse_tests::AggregatorProcess::start(
        &broker.bootstrap(),
        &format!(
            "flush_max_age_ms = 20\nmax_batch_bytes = {budget}\nmax_string_bytes = {MIN_STRING_BYTES}\nmetrics_listen = \"127.0.0.1:{metrics_port}\""
        ),
    )?;
    let endpoint = aggregator.endpoint();
    let rss_at_start = aggregator.peak_rss()?;

    // One byte over: refused, naming the limit.
    let over = play(
        &endpoint,
        None,
        vec![wire::hello("hostile"), expanding(1, MIB, times, short)],
        1,
    )
    .await;
    expect_status(over, Code::ResourceExhausted, &format!("max_batch_bytes = {budget}"))?;
    // Exactly at the budget (the short string one byte shorter): acknowledged.
    let at = play(
        &endpoint,
        None,
        vec![wire::hello("hostile"), expanding(1, MIB, times, short - 1)],
        1,
    )
    .await?;
    ensure!(at == vec![1], "batch at the budget: acks {at:?}");
    // The reported case: two thousand references to one 1 MiB string (2 GiB
    // once built, 1 MiB on the wire).
    let flood = play(
        &endpoint,
        None,
        vec![wire::hello("hostile-3"), expanding(1, MIB, 2000, 1)],
        1,
    )
    .await;
    expect_status(flood, Code::ResourceExhausted, "max_batch_bytes")?;
    a_normal_agent_is_served(&endpoint, "normal-1").await?;

    // The dictionary: 64 MiB defined in batches of 8 MiB is accepted, one
    // byte more is refused.
    let defs = |sequence: u64, first_id: u32, sizes: &[usize]| v1::AgentFrame {
        frame: Some(v1::agent_frame::Frame::Batch(v1::Batch {
            sequence,
            base_time_unix_ns: glasshouse_tests::epoch(),
            strings: sizes
                .iter()
                .zip(first_id..)
                .map(|(len, id)| v1::StringDef {
                    id,
                    value: vec![b'd'; *len].into(),
                })
                .collect(),
            ..Default::default()
        })),
    };
    let chunk = 8 * MIB;
    let chunks = MIN_STRING_BYTES / chunk;
    let mut frames = vec![wire::hello("hoarder")];
    let chunks = u32::try_from(chunks)?;
    frames.extend((1..=chunks).map(|id| defs(u64::from(id), id, &[chunk])));
    frames.push(defs(u64::from(chunks) + 1, 1000, &[1]));
    let hoard = play(&endpoint, None, frames, frames_len(chunks)).await;
    expect_status(
        hoard,
        Code::ResourceExhausted,
        &format!(
            "{} bytes, more than max_string_bytes = {MIN_STRING_BYTES}",
            MIN_STRING_BYTES + 1
        ),
    )?;
    a_normal_agent_is_served(&endpoint, "normal-2").await?;

    // A frame that is not a protobuf message, after a good hello.
    let garbage = raw::send(&endpoint, vec![raw::encode(&wire::hello("garbler")), vec![0xff; 16]]).await?;
    ensure!(
        garbage.code() == Code::InvalidArgument && garbage.message().contains("malformed frame"),
        "garbage frame: {garbage:?}"
    );
    // A frame over max_message_bytes (16 MiB).
    let huge = raw::send(
        &endpoint,
        vec![raw::encode(&wire::hello("huge")), vec![0u8; 16 * MIB + 1]],
    )
    .await?;
    ensure!(huge.code() == Code::ResourceExhausted, "oversized frame: {huge:?}");
    a_normal_agent_is_served(&endpoint, "normal-3").await?;

    // Agent-controlled times: events an hour and a minute apart in one batch
    // (each would open lake partitions of its own), and an event a day
    // ahead of the aggregator's clock.
    const MINUTE: i64 = 60_000_000_000;
    let mut spread = wire::batch(1, 2, true);
    if let Some(v1::agent_frame::Frame::Batch(b)) = &mut spread.frame {
        b.base_time_unix_ns -= 61 * MINUTE;
        b.process_events[1].time_delta_ns = 61 * MINUTE;
    }
    let wide = play(&endpoint, None, vec![wire::hello("clock"), spread], 1).await;
    expect_status(wide, Code::InvalidArgument, "span 3660 s, more than the 3600 s")?;
    let mut ahead = wire::batch(1, 1, true);
    if let Some(v1::agent_frame::Frame::Batch(b)) = &mut ahead.frame {
        b.base_time_unix_ns += 24 * 60 * MINUTE;
    }
    let future = play(&endpoint, None, vec![wire::hello("clock"), ahead], 1).await;
    expect_status(future, Code::InvalidArgument, "timestamp out of range")?;
    a_normal_agent_is_served(&endpoint, "normal-4").await?;

    let metrics = glasshouse_tests::http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
    for (reason, n) in [
        ("over_budget", 3),
        ("malformed", 1),
        ("too_large", 1),
        ("bad_timestamp", 2),
    ] {
        let line = format!("glasshouse_aggregator_refusals_total{{reason=\"{reason}\"}} {n}\n");
        ensure!(metrics.contains(&line), "metrics lack {line:?}:\n{metrics}");
    }
    // Peak memory: the largest thing held is one 64 MiB dictionary and one
    // budget-sized batch, never the 2 GiB the flood would expand to.
    let peak = aggregator.peak_rss()?;
    println!(
        "hostile ingest: aggregator peak RSS {} MiB (at start {} MiB), budget {} MiB",
        peak >> 20,
        rss_at_start >> 20,
        budget >> 20
    );
    ensure!(peak < 512 * MIB as u64, "peak RSS {} MiB", peak >> 20);
    let status = aggregator.stop()?;
    ensure!(status.success(), "aggregator exit {status}");
    Ok(())
}

/// Every listener has a cap and an idle deadline: with the ingest's
/// connections all taken by idle sockets, one more is closed at once; the
/// idle ones are cut after `idle_timeout_ms`, and then a normal agent is
/// served. The same guard fronts `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sockets_cannot_lock_a_normal_agent_out() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    init_logging();
    let broker = Broker::start()?;
    let metrics_port = free_port()?;
    const CAP: usize = 16;
    let mut aggregator = glasshouse_tests::AggregatorProcess::start(
        &broker.bootstrap(),
        &format!(
            "flush_max_age_ms = 20\nmax_connections = {CAP}\nidle_timeout_ms = 1500\nmetrics_listen = \"127.0.0.1:{metrics_port}\""
        ),
    )?;
    let endpoint = aggregator.endpoint();
    // CAP silent sockets, each accepted (it got the server's HTTP/2
    // preface). One may be refused while the start-up probe's connection
    // still holds its slot: that one is opened again.
    let mut idle = Vec::new();
    let mut byte = [0u8; 1];
    let mut attempts = 0;
    while idle.len() < CAP {
        attempts += 1;
        ensure!(attempts <= 2 * CAP, "{} of {CAP} sockets accepted", idle.len());
        let mut s = tokio::net::TcpStream::connect(aggregator.addr).await?;
        let accepted = tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .context("a socket was neither served nor closed")?;
        if accepted.is_ok() {
            idle.push(s);
        }
    }
    // Then one more is closed at once.
    let mut extra = tokio::net::TcpStream::connect(aggregator.addr).await?;
    let started = std::time::Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut byte))
        .await
        .context("the connection over the cap was not closed at once")?
        .unwrap_or(0);
    ensure!(n == 0, "over the cap: got {n} bytes");
    let refused_after = started.elapsed();
    // The idle ones are cut after the deadline (they never sent a byte;
    // the server's HTTP/2 preface is all they receive before the close).
    let started = std::time::Instant::now();
    for mut s in idle {
        let mut received = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut received))
            .await
            .context("an idle socket was not cut off")?
            .ok();
        ensure!(received.len() < 100, "idle socket got {} bytes", received.len());
    }
    let cut_after = started.elapsed();
    a_normal_agent_is_served(&endpoint, "normal").await?;
    let metrics = glasshouse_tests::http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
    let refused = |reason: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("glasshouse_connections_refused_total{{reason=\"{reason}\"}} ")))
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0)
    };
    let (limit, timeouts) = (refused("limit"), refused("timeout"));
    ensure!(
        limit == attempts - CAP + 1 && timeouts >= CAP,
        "refused for the limit {limit} (expected {}), for timeouts {timeouts}:\n{metrics}",
        attempts - CAP + 1
    );
    println!(
        "connection guard: {CAP} idle sockets + 1 over the cap; closed the extra in {refused_after:?}, cut the idle ones within {cut_after:?} of the cap"
    );

    // /metrics: 64 silent sockets take every slot; one more is closed at
    // once; after the 5 s deadline a scrape is answered.
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{metrics_port}").parse()?;
    let mut silent = Vec::new();
    for _ in 0..glasshouse_runtime::endpoint::LIMITS.max_connections {
        silent.push(tokio::net::TcpStream::connect(metrics_addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A scrape of this test whose connection the server had not yet
    // released when the silent ones came holds a slot a little longer:
    // the silent sockets it left no room for were refused (closed: EOF).
    let refused_silent = silent
        .iter()
        .filter(|s| matches!(s.try_read(&mut [0u8; 1]), Ok(0)))
        .count();
    ensure!(
        refused_silent <= 2,
        "{refused_silent} of the silent metrics sockets refused"
    );
    let mut extra = tokio::net::TcpStream::connect(metrics_addr).await?;
    let n = tokio::time::timeout(Duration::from_secs(1), extra.read(&mut byte))
        .await
        .context("the metrics connection over the cap was not closed at once")?
        .unwrap_or(0);
    ensure!(n == 0, "metrics over the cap: got {n} bytes");
    tokio::time::sleep(glasshouse_runtime::endpoint::LIMITS.idle + Duration::from_millis(500)).await;
    let page = glasshouse_tests::http_get(&metrics_addr.to_string(), "/metrics").await?;
    ensure!(
        page.contains(&format!(
            "glasshouse_connections_refused_total{{reason=\"limit\"}} {}\n",
            limit + 1 + refused_silent
        )),
        "after the idle metrics sockets were cut ({refused_silent} silent ones refused): {page}"
    );
    drop(silent);
    let status = aggregator.stop()?;
    ensure!(status.success(), "aggregator exit {status}");
    Ok(())
}

/// A batch of one exec in a container of `workload` (the test build's
/// fault-injection workloads of the sink).
fn batch_of_workload(workload: &str) -> v1::AgentFrame {
    let mut frame = wire::batch(1, 1, true);
    if let Some(v1::agent_frame::Frame::Batch(b)) = &mut frame.frame {
        for s in &mut b.strings {
            if s.id == 3 {
                s.value = workload.as_bytes().to_vec().into();
            }
        }
    }
    frame
}

/// No panic path in the shared sink: rows that cannot be built (injected in
/// the debug build, as an Arrow offset overflow would panic) refuse their
/// batch (`INVALID_ARGUMENT`, `refusals_total{reason="unbuildable"}`) and
/// the next agent is served; if the sink task dies anyway, health says
/// `NOT_SERVING`, the streams end, and the process exits non-zero so that its
/// supervisor restarts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unbuildable_batch_is_refused_and_a_dead_sink_ends_the_process() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let metrics_port = free_port()?;
    let mut aggregator = glasshouse_tests::AggregatorProcess::start(
        &broker.bootstrap(),
        &format!("flush_max_age_ms = 20\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n[topics]\npartitions = 1"),
    )?;
    let endpoint = aggregator.endpoint();
    a_normal_agent_is_served(&endpoint, "before").await?;

    let refused = play(
        &endpoint,
        None,
        vec![
            wire::hello("unbuildable"),
            batch_of_workload("glasshouse-fault/unbuildable"),
        ],
        1,
    )
    .await;
    expect_status(
        refused,
        Code::InvalidArgument,
        "injected fault: rows that cannot be built",
    )?;
    a_normal_agent_is_served(&endpoint, "after-unbuildable").await?;
    let metrics = glasshouse_tests::http_get(&format!("127.0.0.1:{metrics_port}"), "/metrics").await?;
    let line = "glasshouse_aggregator_refusals_total{reason=\"unbuildable\"} 1\n";
    ensure!(metrics.contains(line), "metrics lack {line:?}:\n{metrics}");

    // The sink dies: the stream fails, and the process exits non-zero.
    let dying = play(
        &endpoint,
        None,
        vec![wire::hello("killer"), batch_of_workload("glasshouse-fault/sink-death")],
        1,
    )
    .await;
    ensure!(dying.is_err(), "a batch was acknowledged by a dead sink: {dying:?}");
    let status = aggregator.wait_exit(Duration::from_secs(30))?;
    ensure!(
        !status.success(),
        "the aggregator exited with {status} after its sink died"
    );
    println!("unbuildable batch: refused and counted, next agent served; sink death: {dying:?}, process exit {status}");
    Ok(())
}

/// Case name, credentials, frames sent, expected code, words in the message.
type Case = (
    &'static str,
    Option<(&'static str, &'static str)>,
    Vec<v1::AgentFrame>,
    Code,
    &'static str,
);

/// Clients that misbehave (as the agent "bad", bound to host "bad-host" and
/// cluster "prod", unless the case says otherwise), each with the status it
/// must get.
fn misbehaving_clients() -> Vec<Case> {
    let hello_and = |frames: Vec<v1::AgentFrame>| {
        let mut all = vec![wire::hello_as("bad", "bad-host", "prod")];
        all.extend(frames);
        all
    };
    let mut dangling = wire::batch(1, 1, true);
    if let Some(v1::agent_frame::Frame::Batch(b)) = &mut dangling.frame {
        b.process_events[0].argv.push(77);
    }
    let bad = Some(("bad", BAD_SECRET));
    vec![
        (
            "no credentials",
            None,
            hello_and(vec![wire::batch(1, 1, true)]),
            Code::Unauthenticated,
            "missing glasshouse-agent-id",
        ),
        (
            "wrong secret",
            Some(("bad", GOOD_SECRET)),
            hello_and(vec![wire::batch(1, 1, true)]),
            Code::Unauthenticated,
            "wrong token",
        ),
        (
            "revoked agent",
            Some(("revoked", BAD_SECRET)),
            hello_and(vec![wire::batch(1, 1, true)]),
            Code::Unauthenticated,
            "wrong token",
        ),
        (
            "impersonation",
            bad,
            vec![wire::hello("good"), wire::batch(1, 1, true)],
            Code::PermissionDenied,
            "claiming agent \"good\"",
        ),
        (
            "another host",
            bad,
            vec![wire::hello_as("bad", "good-host", "prod"), wire::batch(1, 1, true)],
            Code::PermissionDenied,
            "binds host name \"bad-host\", the hello claims \"good-host\"",
        ),
        (
            "another cluster",
            bad,
            vec![wire::hello_as("bad", "bad-host", "dev"), wire::batch(1, 1, true)],
            Code::PermissionDenied,
            "binds cluster \"prod\", the hello claims \"dev\"",
        ),
        (
            "over the limit",
            bad,
            hello_and(vec![wire::batch(1, 101, true)]),
            Code::ResourceExhausted,
            "101 events, limit is 100",
        ),
        (
            "undefined container",
            bad,
            hello_and(vec![wire::batch(1, 1, false)]),
            Code::InvalidArgument,
            "unknown container reference 1",
        ),
        (
            "dangling string",
            bad,
            hello_and(vec![dangling]),
            Code::InvalidArgument,
            "unknown string reference 77",
        ),
        (
            "no hello",
            bad,
            vec![wire::batch(1, 1, true)],
            Code::InvalidArgument,
            "first frame must be a hello",
        ),
        // A claimed host name of 253 bytes is compared with the binding (and
        // quoted in the refusal); one byte more is refused before.
        (
            "host name at its limit",
            bad,
            vec![
                wire::hello_as("bad", &"h".repeat(MAX_HELLO_FIELD), "prod"),
                wire::batch(1, 1, true),
            ],
            Code::PermissionDenied,
            "binds host name \"bad-host\"",
        ),
        (
            "host name one byte over",
            bad,
            vec![
                wire::hello_as("bad", &"h".repeat(MAX_HELLO_FIELD + 1), "prod"),
                wire::batch(1, 1, true),
            ],
            Code::InvalidArgument,
            "longer than 253 bytes",
        ),
    ]
}
