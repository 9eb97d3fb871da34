//! The aggregator refuses bad clients and bad input — each with its own gRPC
//! status — while a concurrent well-behaved agent keeps being served and every
//! one of its events reaches Kafka.

use std::time::Duration;

use anyhow::{Context, ensure};
use glasshouse_agent::client;
use glasshouse_proto::service::parse_config;
use glasshouse_proto::v1;
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
        format!("[agents]\ngood = \"{GOOD_SECRET}\"\nbad = \"{BAD_SECRET}\"\nmixed = \"{MIXED_SECRET}\"\n"),
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

    let hello_and = |frames: Vec<v1::AgentFrame>| {
        let mut all = vec![wire::hello("bad")];
        all.extend(frames);
        all
    };
    let mut dangling = wire::batch(1, 1, true);
    if let Some(v1::agent_frame::Frame::Batch(b)) = &mut dangling.frame {
        b.process_events[0].argv.push(77);
    }
    let bad = Some(("bad", BAD_SECRET));
    /// Case name, credentials, frames sent, expected code, words in the message.
    type Case<'a> = (&'a str, Option<(&'a str, &'a str)>, Vec<v1::AgentFrame>, Code, &'a str);
    let cases: Vec<Case<'_>> = vec![
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
            "claiming \"good\"",
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
    ];
    for (case, auth, frames, code, words) in cases {
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
    let mut health = HealthClient::new(
        tonic::transport::Endpoint::from_shared(endpoint.clone())?
            .connect()
            .await?,
    );
    let serving = health
        .check(HealthCheckRequest {
            service: "glasshouse.v1.Ingest".into(),
        })
        .await?
        .into_inner();
    assert_eq!(serving.status, ServingStatus::Serving as i32);

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
        ("impersonation", 1),
        ("too_large", 2),
        ("dangling_reference", 2),
        ("protocol", 1),
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
