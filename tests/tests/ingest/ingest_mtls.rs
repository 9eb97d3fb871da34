//! mTLS between agents and the aggregator, with real certificates generated
//! here: an agent with a certificate from the agents' CA streams and is
//! acknowledged (its identity is the certificate's common name); a client
//! without a certificate, or with one from another CA, cannot connect; a
//! certificate used with a hello naming another agent is refused.

use std::path::Path;
use std::time::Duration;

use anyhow::ensure;
use glasshouse_agent::client;
use glasshouse_runtime::service::parse_config;
use glasshouse_tests::{Broker, free_port, init_logging, simulated, wire};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> anyhow::Result<Ca> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

/// A leaf certificate (PEM cert, PEM key) with `cn`, `sans` and an
/// organizational unit.
fn leaf(ca: &Ca, cn: &str, sans: &[&str], ou: Option<&str>) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())?;
    params.distinguished_name.push(DnType::CommonName, cn);
    if let Some(ou) = ou {
        params.distinguished_name.push(DnType::OrganizationalUnitName, ou);
    }
    let cert = params.signed_by(&key, &ca.issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn write(dir: &Path, name: &str, text: &str) -> anyhow::Result<String> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.display().to_string())
}

/// Opens a raw stream with `tls`, sends a hello for `agent` (on host
/// `{agent}-host`) and one batch, and returns the first error (connect,
/// call or stream).
async fn raw_attempt(endpoint: &str, tls: ClientTlsConfig, agent: &str) -> Result<(), String> {
    raw_hello(endpoint, tls, wire::hello(agent)).await
}

async fn raw_hello(
    endpoint: &str,
    tls: ClientTlsConfig,
    hello: glasshouse_proto::v1::AgentFrame,
) -> Result<(), String> {
    let channel = Endpoint::from_shared(endpoint.to_owned())
        .map_err(|e| e.to_string())?
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connect: {}", glasshouse_runtime::service::error_chain(&e)))?;
    match wire::exchange(channel, None, vec![hello, wire::batch(1, 1, true)], 1).await {
        Ok(acks) if acks.len() == 1 => Ok(()),
        Ok(_) => Err("stream closed".into()),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_agents_with_certificates_from_the_agent_ca_stream() -> anyhow::Result<()> {
    init_logging();
    let broker = Broker::start()?;
    let dir = std::env::temp_dir().join(format!("glasshouse-mtls-{}", free_port()?));
    std::fs::create_dir_all(&dir)?;
    let server_ca = ca("glasshouse test server ca")?;
    let agent_ca = ca("glasshouse test agent ca")?;
    let rogue_ca = ca("someone else")?;
    let (server_cert, server_key) = leaf(&server_ca, "aggregator", &["localhost", "127.0.0.1"], None)?;
    // The certificate binds the agent id (CN), the host names it may claim
    // (CN and DNS names) and the cluster (OU).
    let (agent_cert, agent_key) = leaf(&agent_ca, "tls-agent", &["tls-agent-host"], Some("prod"))?;
    let (rogue_cert, rogue_key) = leaf(&rogue_ca, "tls-agent", &["tls-agent-host"], Some("prod"))?;
    let (revoked_cert, revoked_key) = leaf(&agent_ca, "revoked-agent", &["revoked-agent-host"], None)?;

    let cancel = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("https://localhost:{}", listener.local_addr()?.port());
    let config: glasshouse_aggregator::Config = parse_config(
        "test",
        &format!(
            "brokers = \"{}\"\nflush_max_age_ms = 20\nrevoked_agents = [\"revoked-agent\"]\n[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n",
            broker.bootstrap(),
            write(&dir, "server.pem", &server_cert)?,
            write(&dir, "server.key", &server_key)?,
            write(&dir, "agent-ca.pem", &agent_ca.cert_pem)?,
        ),
    )?;
    let aggregator = tokio::spawn(glasshouse_aggregator::serve(config, listener, cancel.clone()));

    let trust = || ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&server_ca.cert_pem));
    let with = |cert: &str, key: &str| trust().identity(Identity::from_pem(cert, key));

    // The real agent client, authenticated by its certificate, gets every ack.
    let (tx, rx) = mpsc::channel(8);
    let container = simulated::container(7, "localhost/tls");
    for seq in 1..=5 {
        tx.send(simulated::batch(&container, seq, 1)).await?;
    }
    drop(tx);
    let mut agent_config = simulated::agent("tls-agent", 1, vec![endpoint.clone()], 8);
    agent_config.tls = Some(with(&agent_cert, &agent_key));
    agent_config.hello.cluster = "prod".into();
    let report = tokio::time::timeout(
        Duration::from_secs(60),
        client::run(agent_config, rx, cancel.child_token()),
    )
    .await?;
    ensure!(report.batches_acked == 5 && report.batches_unacked == 0, "{report:?}");

    // No client certificate, or one from another CA: the TLS layer refuses
    // (under TLS 1.3 the client learns it on its first request), no ack.
    let no_cert = raw_attempt(&endpoint, trust(), "tls-agent").await;
    ensure!(no_cert.is_err(), "a client without certificate was served");
    let rogue = raw_attempt(&endpoint, with(&rogue_cert, &rogue_key), "tls-agent").await;
    ensure!(rogue.is_err(), "a client with a certificate from another CA was served");
    // A valid certificate of a revoked agent.
    let err = raw_attempt(&endpoint, with(&revoked_cert, &revoked_key), "revoked-agent")
        .await
        .unwrap_err();
    ensure!(
        err.starts_with("Unauthenticated") && err.contains("revoked"),
        "revoked agent: {err}"
    );
    // The right certificate with a hello naming someone else.
    let err = raw_attempt(&endpoint, with(&agent_cert, &agent_key), "other-agent")
        .await
        .unwrap_err();
    ensure!(err.starts_with("PermissionDenied"), "impersonation: {err}");
    // The right certificate and agent id claiming another host, or another
    // cluster: one host's certificate does not speak for the fleet.
    let err = raw_hello(
        &endpoint,
        with(&agent_cert, &agent_key),
        wire::hello_as("tls-agent", "db-7", "prod"),
    )
    .await
    .unwrap_err();
    ensure!(
        err.starts_with("PermissionDenied") && err.contains("binds host name") && err.contains("\"db-7\""),
        "another host: {err}"
    );
    let err = raw_hello(
        &endpoint,
        with(&agent_cert, &agent_key),
        wire::hello_as("tls-agent", "tls-agent-host", "dev"),
    )
    .await
    .unwrap_err();
    ensure!(
        err.starts_with("PermissionDenied") && err.contains("binds cluster \"prod\""),
        "another cluster: {err}"
    );
    // And the right certificate again, raw, by its CN or its DNS name: served.
    for host in ["tls-agent", "tls-agent-host"] {
        raw_hello(
            &endpoint,
            with(&agent_cert, &agent_key),
            wire::hello_as("tls-agent", host, "prod"),
        )
        .await
        .map_err(|e| anyhow::anyhow!("good client as {host} refused: {e}"))?;
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(20), aggregator).await???;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
