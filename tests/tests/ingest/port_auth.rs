//! An unauthenticated or revoked client at every network port of the
//! system, against the real processes:
//!
//! - ingest (gRPC, bearer tokens): no credentials, an agent id nobody
//!   issued a token to, and an agent listed in `revoked_agents` presenting
//!   its own still-valid token are refused with `UNAUTHENTICATED`, while an
//!   agent with its token streams and is acknowledged (mTLS refusals:
//!   `ingest_mtls`; wrong secrets, impersonation: `ingest_refusals`);
//! - the HTTP endpoints with `metrics_token_file` set: the agent's and the
//!   aggregator's `/metrics`, the analyzer's `/metrics` and `/containers`
//!   answer 401 without a token, with a wrong one, or with another scheme,
//!   and 200 with the right one; `glasshouse containers --token-file`
//!   reads the analyzer's scores, and fails without the token.

use std::time::Duration;

use anyhow::ensure;
use glasshouse_tests::{
    AgentProcess, AggregatorProcess, AnalyzerProcess, Broker, free_port, http_get_with, wait_for_port, wire,
    workspace_binary,
};
use tonic::Code;
use tonic::transport::Channel;

const AGENT_SECRET: &str = "7c1d2f0e-agent-token";
const REVOKED_SECRET: &str = "4a9b-still-valid-but-revoked";
const METRICS_TOKEN: &str = "m3tr1cs-Token";

/// Checks an endpoint refuses without, with a wrong, and with a non-bearer
/// credential, and answers 200 holding `expect` with the token.
async fn check_endpoint(addr: &str, path: &str, expect: &str) -> anyhow::Result<()> {
    for (what, headers) in [
        ("no token", String::new()),
        ("wrong token", "Authorization: Bearer m3tr1cs-Tokem\r\n".to_owned()),
        ("token prefix", "Authorization: Bearer m3tr1cs\r\n".to_owned()),
        ("basic scheme", format!("Authorization: Basic {METRICS_TOKEN}\r\n")),
        ("other header", format!("X-Token: {METRICS_TOKEN}\r\n")),
    ] {
        let answer = http_get_with(addr, path, &headers).await?;
        ensure!(
            answer.starts_with("HTTP/1.1 401 Unauthorized") && !answer.contains(expect),
            "{addr}{path} with {what}: {answer}"
        );
    }
    let answer = http_get_with(addr, path, &format!("Authorization: Bearer {METRICS_TOKEN}\r\n")).await?;
    ensure!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.contains(expect),
        "{addr}{path} with the token: {answer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_port_refuses_unauthenticated_and_revoked_clients() -> anyhow::Result<()> {
    glasshouse_tests::init_logging();
    let broker = Broker::start()?;
    let brokers = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens.toml");
    // The agent process claims this machine's host name.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?.trim().to_owned();
    std::fs::write(
        &tokens,
        format!(
            "[agents]\nport-agent = {{ secret = \"{AGENT_SECRET}\", hostname = \"port-agent-host\" }}\n\
             gone = {{ secret = \"{REVOKED_SECRET}\", hostname = \"gone-host\" }}\n\
             real-agent = {{ secret = \"{AGENT_SECRET}\", hostname = \"{host}\" }}\n"
        ),
    )?;
    let metrics_token = dir.path().join("metrics.token");
    std::fs::write(&metrics_token, format!("{METRICS_TOKEN}\n"))?;
    let agent_token = dir.path().join("agent.token");
    std::fs::write(&agent_token, AGENT_SECRET)?;

    let aggregator_metrics = format!("127.0.0.1:{}", free_port()?);
    let aggregator = AggregatorProcess::start(
        &brokers,
        &format!(
            "flush_max_age_ms = 20\ntokens_file = \"{}\"\nrevoked_agents = [\"gone\"]\n\
             metrics_listen = \"{aggregator_metrics}\"\nmetrics_token_file = \"{}\"",
            tokens.display(),
            metrics_token.display()
        ),
    )?;

    // Ingest.
    let channel = || Channel::from_shared(aggregator.endpoint()).map(|e| e.connect_lazy());
    let good = wire::exchange(
        channel()?,
        Some(("port-agent", AGENT_SECRET)),
        vec![wire::hello("port-agent"), wire::batch(1, 3, true)],
        1,
    )
    .await;
    ensure!(matches!(good.as_deref(), Ok([1])), "the agent with its token: {good:?}");
    for (what, auth, hello) in [
        ("no credentials", None, "port-agent"),
        ("unknown agent", Some(("stranger", AGENT_SECRET)), "stranger"),
        (
            "revoked agent with its valid token",
            Some(("gone", REVOKED_SECRET)),
            "gone",
        ),
    ] {
        let refused = wire::exchange(channel()?, auth, vec![wire::hello(hello), wire::batch(1, 3, true)], 1).await;
        match refused {
            Err(status) => ensure!(status.code() == Code::Unauthenticated, "{what}: {status:?}"),
            Ok(acks) => anyhow::bail!("{what} was served: acks {acks:?}"),
        }
        println!("ingest, {what}: refused (UNAUTHENTICATED)");
    }

    // The aggregator's /metrics.
    check_endpoint(
        &aggregator_metrics,
        "/metrics",
        "glasshouse_aggregator_records_in_total",
    )
    .await?;
    println!("aggregator /metrics: 401 without or with a wrong token, 200 with it");

    // The agent's /metrics (the agent streams with its own token meanwhile).
    let agent = AgentProcess::start(
        &aggregator.endpoint(),
        &format!(
            "agent_id = \"real-agent\"\ntoken_file = \"{}\"\nmetrics_token_file = \"{}\"",
            agent_token.display(),
            metrics_token.display()
        ),
    )?;
    check_endpoint(&agent.metrics.to_string(), "/metrics", "glasshouse_agent_").await?;
    println!("agent /metrics: 401 without or with a wrong token, 200 with it");

    // The analyzer's /metrics and /containers, and the CLI reading the latter.
    let analyzer_port = free_port()?;
    let analyzer_addr = format!("127.0.0.1:{analyzer_port}");
    let _analyzer = AnalyzerProcess::start(&format!(
        "brokers = \"{brokers}\"\ngroup = \"port-auth\"\nview = false\nmetrics_listen = \"{analyzer_addr}\"\n\
         metrics_token_file = \"{}\"\n[topics]\npartitions = 1",
        metrics_token.display()
    ))?;
    wait_for_port(analyzer_addr.parse()?, Duration::from_secs(60))?;
    check_endpoint(&analyzer_addr, "/metrics", "glasshouse_analyzer_events_total").await?;
    check_endpoint(&analyzer_addr, "/containers", "[").await?;
    println!("analyzer /metrics and /containers: 401 without or with a wrong token, 200 with it");
    let cli = |token: Option<&std::path::Path>| -> anyhow::Result<std::process::Output> {
        let mut c = std::process::Command::new(workspace_binary("glasshouse")?);
        c.args(["--brokers", &brokers, "containers", "--analyzer", &analyzer_addr]);
        if let Some(t) = token {
            c.arg("--token-file").arg(t);
        }
        Ok(c.output()?)
    };
    let refused = cli(None)?;
    ensure!(
        !refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains("401"),
        "glasshouse containers without the token: {refused:?}"
    );
    let served = cli(Some(&metrics_token))?;
    ensure!(
        served.status.success(),
        "glasshouse containers with the token: {served:?}"
    );
    println!("glasshouse containers: fails without --token-file, reads the scores with it");
    drop(agent);
    Ok(())
}
