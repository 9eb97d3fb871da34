//! The gRPC stream to the aggregator: connect (failing over between endpoints,
//! with backoff and a warning naming the address), send a hello, re-send every
//! unacknowledged batch, then stream new batches while acks come back.
//!
//! Backpressure: at most `max_unacked_batches` are in flight; beyond that the
//! client stops taking batches and the pipeline waits.
//!
//! Unacknowledged batches are kept in memory: they survive reconnects, not a
//! restart of the agent (the disk spool is a later step).

use std::collections::VecDeque;
use std::time::Duration;

use glasshouse_proto::service::Backoff;
use glasshouse_proto::v1::{self, agent_frame, aggregator_frame, ingest_client::IngestClient};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::encode::StreamEncoder;
use crate::pipeline::PendingBatch;

/// What the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub endpoints: Vec<String>,
    pub hello: v1::Hello,
    /// Bearer token presented with `hello.agent_id`.
    pub token: Option<String>,
    /// TLS settings for every endpoint.
    pub tls: Option<tonic::transport::ClientTlsConfig>,
    pub max_unacked: usize,
    pub max_strings: usize,
    pub drain_timeout: Duration,
}

/// How the client ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClientReport {
    pub batches_acked: u64,
    /// Batches still unacknowledged at exit (lost).
    pub batches_unacked: usize,
    pub events_unacked: usize,
    /// Batches the aggregator refused as malformed, dropped (and logged).
    pub batches_refused: u64,
    pub events_refused: u64,
}

enum SessionEnd {
    /// Input closed and everything acknowledged, or the drain deadline passed.
    Done,
    Failed(String),
}

/// Streams batches from `batches` until it closes and all are acknowledged, or
/// until the drain deadline after `cancel`.
pub async fn run(
    config: ClientConfig,
    mut batches: mpsc::Receiver<PendingBatch>,
    cancel: CancellationToken,
) -> ClientReport {
    let mut state = State {
        unacked: VecDeque::new(),
        input_closed: false,
        drain_deadline: None,
        drain_timeout: config.drain_timeout,
        acked: 0,
        refused_batches: 0,
        refused_events: 0,
    };
    let mut backoff = Backoff::default();
    // Agents spread over the endpoints by their id, and fail over in list order.
    let mut attempt = spread_start(&config.hello.agent_id, config.endpoints.len());
    loop {
        if state.finished() {
            break;
        }
        let endpoint = &config.endpoints[attempt % config.endpoints.len()];
        attempt += 1;
        let connected = tokio::select! {
            c = connect(endpoint, config.tls.as_ref()) => Some(c),
            () = state.wait_drain(&cancel) => None,
        };
        let end = match connected {
            None => SessionEnd::Done,
            Some(Err(error)) => {
                SessionEnd::Failed(format!("connect: {}", glasshouse_proto::service::error_chain(&error)))
            }
            Some(Ok(client)) => session(&config, client, &mut batches, &mut state, &cancel, &mut backoff).await,
        };
        match end {
            SessionEnd::Done => break,
            SessionEnd::Failed(error) => {
                if state.drain_expired() {
                    break;
                }
                let delay = backoff.next_delay();
                tracing::warn!(aggregator = %endpoint, %error, retry_in = ?delay, unacked = state.unacked.len(), "aggregator unreachable, retrying");
                let wake = Instant::now() + delay;
                loop {
                    // Keep taking batches while disconnected (they are sent on
                    // reconnect), so a closed input is noticed and shutdown
                    // does not wait for an aggregator it no longer needs.
                    let can_take = !state.input_closed && state.unacked.len() < config.max_unacked;
                    tokio::select! {
                        () = tokio::time::sleep_until(wake) => break,
                        () = state.wait_drain(&cancel) => break,
                        batch = batches.recv(), if can_take => match batch {
                            Some(batch) => state.unacked.push_back(batch),
                            None => state.input_closed = true,
                        },
                    }
                    if state.finished() {
                        break;
                    }
                }
            }
        }
    }
    let report = ClientReport {
        batches_acked: state.acked,
        batches_unacked: state.unacked.len(),
        events_unacked: state.unacked.iter().map(PendingBatch::len).sum(),
        batches_refused: state.refused_batches,
        events_refused: state.refused_events,
    };
    if report.batches_unacked > 0 {
        tracing::error!(
            batches = report.batches_unacked,
            events = report.events_unacked,
            "exiting with unacknowledged batches; they are lost"
        );
    }
    report
}

struct State {
    unacked: VecDeque<PendingBatch>,
    input_closed: bool,
    drain_deadline: Option<Instant>,
    drain_timeout: Duration,
    acked: u64,
    refused_batches: u64,
    refused_events: u64,
}

impl State {
    fn finished(&self) -> bool {
        (self.input_closed && self.unacked.is_empty()) || self.drain_expired()
    }

    fn drain_expired(&self) -> bool {
        self.drain_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Resolves when the drain deadline passes; the deadline starts when
    /// `cancel` fires.
    async fn wait_drain(&mut self, cancel: &CancellationToken) {
        if self.drain_deadline.is_none() {
            cancel.cancelled().await;
            self.start_drain();
        }
        if let Some(deadline) = self.drain_deadline {
            tokio::time::sleep_until(deadline).await;
        }
    }

    fn start_drain(&mut self) {
        self.drain_deadline
            .get_or_insert_with(|| Instant::now() + self.drain_timeout);
    }

    /// A batch the aggregator refused as malformed would be refused again on
    /// every reconnect and block everything behind it: drop it, loudly.
    fn drop_refused(&mut self, status: &tonic::Status) {
        let refused = status
            .metadata()
            .get(glasshouse_proto::metadata::REFUSED_BATCH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let Some(sequence) = refused else { return };
        if let Some(pos) = self.unacked.iter().position(|b| b.sequence == sequence) {
            let batch = self.unacked.remove(pos);
            let events = batch.as_ref().map_or(0, PendingBatch::len);
            self.refused_batches += 1;
            self.refused_events += events as u64;
            tracing::error!(
                sequence,
                events,
                reason = status.message(),
                "aggregator refused a batch as malformed; dropped it"
            );
        }
    }

    fn ack(&mut self, sequence: u64) {
        if let Some(pos) = self.unacked.iter().position(|b| b.sequence == sequence) {
            self.unacked.remove(pos);
            self.acked += 1;
        } else {
            tracing::debug!(sequence, "ack for a batch not in flight");
        }
    }
}

async fn session(
    config: &ClientConfig,
    mut client: IngestClient<tonic::transport::Channel>,
    batches: &mut mpsc::Receiver<PendingBatch>,
    state: &mut State,
    cancel: &CancellationToken,
    backoff: &mut Backoff,
) -> SessionEnd {
    let (tx, rx) = mpsc::channel::<v1::AgentFrame>(64);
    let frame = |f| v1::AgentFrame { frame: Some(f) };
    if tx
        .send(frame(agent_frame::Frame::Hello(config.hello.clone())))
        .await
        .is_err()
    {
        return SessionEnd::Failed("stream closed before hello".into());
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = &config.token {
        let values = (
            tonic::metadata::MetadataValue::try_from(config.hello.agent_id.as_str()),
            tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")),
        );
        let (Ok(agent), Ok(bearer)) = values else {
            return SessionEnd::Failed("agent id or token is not a valid header value".into());
        };
        request
            .metadata_mut()
            .insert(glasshouse_proto::metadata::AGENT_ID, agent);
        request.metadata_mut().insert("authorization", bearer);
    }
    let mut inbound = match client.stream(request).await {
        Ok(response) => response.into_inner(),
        Err(status) => return SessionEnd::Failed(format!("{}: {}", status.code(), status.message())),
    };
    let mut encoder = StreamEncoder::new(config.max_strings);
    for batch in &state.unacked {
        if tx
            .send(frame(agent_frame::Frame::Batch(encoder.encode(batch))))
            .await
            .is_err()
        {
            return SessionEnd::Failed("stream closed while re-sending".into());
        }
    }
    if !state.unacked.is_empty() {
        tracing::info!(batches = state.unacked.len(), "re-sent unacknowledged batches");
    }
    let mut tx = Some(tx);
    loop {
        if state.input_closed && state.unacked.is_empty() {
            // Closing our side ends the stream cleanly.
            drop(tx.take());
            return SessionEnd::Done;
        }
        let can_take = !state.input_closed && state.unacked.len() < config.max_unacked;
        tokio::select! {
            message = inbound.message() => match message {
                Ok(Some(v1::AggregatorFrame { frame: Some(aggregator_frame::Frame::Ack(ack)) })) => {
                    backoff.reset();
                    state.ack(ack.sequence);
                }
                Ok(Some(v1::AggregatorFrame { frame: Some(aggregator_frame::Frame::Welcome(w)) })) => {
                    backoff.reset();
                    tracing::info!(aggregator = %w.aggregator_id, "connected to aggregator");
                }
                Ok(Some(_)) => {}
                Ok(None) => return SessionEnd::Failed("aggregator closed the stream".into()),
                Err(status) => {
                    state.drop_refused(&status);
                    return SessionEnd::Failed(format!("{}: {}", status.code(), status.message()));
                }
            },
            batch = batches.recv(), if can_take => match batch {
                Some(batch) => {
                    let wire = encoder.encode(&batch);
                    state.unacked.push_back(batch);
                    let Some(sender) = &tx else { continue };
                    if sender.send(frame(agent_frame::Frame::Batch(wire))).await.is_err() {
                        return SessionEnd::Failed("stream closed while sending".into());
                    }
                }
                None => state.input_closed = true,
            },
            () = cancel.cancelled(), if state.drain_deadline.is_none() => state.start_drain(),
            () = sleep_until(state.drain_deadline), if state.drain_deadline.is_some() => {
                return SessionEnd::Done;
            }
        }
    }
}

async fn connect(
    endpoint: &str,
    tls: Option<&tonic::transport::ClientTlsConfig>,
) -> Result<IngestClient<tonic::transport::Channel>, tonic::transport::Error> {
    let mut e = tonic::transport::Endpoint::from_shared(endpoint.to_owned())?;
    if let Some(tls) = tls {
        e = e.tls_config(tls.clone())?;
    }
    Ok(IngestClient::new(e.connect().await?))
}

/// A stable start index in `0..n` derived from the agent id (FNV-1a).
fn spread_start(agent_id: &str, n: usize) -> usize {
    let hash = agent_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    usize::try_from(hash % n.max(1) as u64).unwrap_or(0)
}

async fn sleep_until(deadline: Option<Instant>) {
    if let Some(d) = deadline {
        tokio::time::sleep_until(d).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agents_spread_over_endpoints_stably() {
        let mut used = [0usize; 3];
        for i in 0..300 {
            let id = format!("host-{i}");
            let start = spread_start(&id, 3);
            assert_eq!(start, spread_start(&id, 3), "stable");
            used[start] += 1;
        }
        assert!(used.iter().all(|&n| n > 60), "uneven spread {used:?}");
        assert_eq!(spread_start("x", 1), 0);
    }
}
