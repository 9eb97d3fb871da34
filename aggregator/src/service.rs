//! The `glasshouse.v1.Ingest` service: one task per agent stream. The first
//! frame must be a hello; each batch is resolved, submitted to the Kafka sink,
//! and acknowledged — in order — only once Kafka acknowledged all its rows.
//! Bad input ends that stream with a status naming the problem; every other
//! stream carries on.

use std::future::Future;
use std::pin::Pin;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use glasshouse_proto::v1::{self, agent_frame, aggregator_frame, ingest_server::Ingest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::decode::{DecodeError, Limits, StreamTables};
use crate::internal_events;
use crate::sink::{SinkError, SinkHandle};

/// Batches of one stream submitted but not yet acknowledged by Kafka; beyond
/// this the stream stops reading (backpressure to the agent).
const MAX_IN_FLIGHT: usize = 32;

/// Longest agent id, host name or cluster a hello may claim: a DNS name's
/// length, so that every host name is accepted.
pub const MAX_HELLO_FIELD: usize = 253;

/// Every way a stream can fail, classified once into a gRPC status.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("protocol: {0}")]
    Protocol(&'static str),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("aggregator shutting down")]
    ShuttingDown,
    /// The hello claims an agent, host or cluster its credential does not bind.
    #[error("{0}")]
    Impersonation(String),
    /// A frame that does not decode (bad protobuf, bad compression flag,
    /// truncated) or is over `max_message_bytes`: tonic's own status.
    #[error("malformed frame: {}", .0.message())]
    MalformedFrame(Status),
    /// The sink could not build this batch's rows.
    #[error("batch {sequence}: {source}")]
    Unbuildable {
        sequence: u64,
        #[source]
        source: SinkError,
    },
}

impl StreamError {
    /// User error (the agent sent something wrong) vs. transient (retry, maybe
    /// elsewhere) vs. internal.
    pub fn code(&self) -> Code {
        match self {
            StreamError::Protocol(_) | StreamError::Unbuildable { .. } => Code::InvalidArgument,
            StreamError::MalformedFrame(status) => match status.code() {
                Code::OutOfRange | Code::ResourceExhausted => Code::ResourceExhausted,
                _ => Code::InvalidArgument,
            },
            StreamError::Impersonation(_) => Code::PermissionDenied,
            StreamError::Decode(
                DecodeError::TooManyEvents { .. }
                | DecodeError::TooManyStrings { .. }
                | DecodeError::TooManyGaps { .. }
                | DecodeError::TooManyInventories { .. }
                | DecodeError::OverBatchBudget { .. }
                | DecodeError::OverStringBudget { .. },
            ) => Code::ResourceExhausted,
            StreamError::Decode(_) => Code::InvalidArgument,
            StreamError::Sink(SinkError::Delivery(_)) | StreamError::ShuttingDown => Code::Unavailable,
            StreamError::Sink(SinkError::Encode(_) | SinkError::Stopped | SinkError::Unbuildable(_)) => Code::Internal,
        }
    }

    /// The `reason` label of the refusals metric, for errors that refuse input.
    pub fn refusal_reason(&self) -> Option<&'static str> {
        Some(match self {
            StreamError::Protocol(_) => "protocol",
            StreamError::Impersonation(_) => "impersonation",
            StreamError::MalformedFrame(status) => match status.code() {
                Code::OutOfRange | Code::ResourceExhausted => "too_large",
                _ => "malformed",
            },
            StreamError::Unbuildable { .. } => "unbuildable",
            StreamError::Decode(
                DecodeError::TooManyEvents { .. }
                | DecodeError::TooManyStrings { .. }
                | DecodeError::TooManyGaps { .. }
                | DecodeError::TooManyInventories { .. },
            ) => "too_large",
            StreamError::Decode(DecodeError::OverBatchBudget { .. } | DecodeError::OverStringBudget { .. }) => {
                "over_budget"
            }
            StreamError::Decode(
                DecodeError::BadTimestamp { .. }
                | DecodeError::TimeSpan { .. }
                | DecodeError::BadSampleTimestamp { .. }
                | DecodeError::ReversedInterval { .. }
                | DecodeError::BadGapTimestamp { .. }
                | DecodeError::ReversedGap { .. },
            ) => "bad_timestamp",
            StreamError::Decode(
                DecodeError::UnknownString { .. }
                | DecodeError::UnknownContainerString { .. }
                | DecodeError::UnknownContainer { .. }
                | DecodeError::UnknownSampleContainer { .. }
                | DecodeError::UnknownGapContainer { .. },
            ) => "dangling_reference",
            StreamError::Decode(_) => "other",
            StreamError::Sink(_) | StreamError::ShuttingDown => return None,
        })
    }

    /// The status sent to the agent; a refused batch is named in the
    /// `glasshouse-refused-batch` metadata so the agent can drop it.
    pub fn to_status(&self) -> Status {
        let mut status = Status::new(self.code(), self.to_string());
        let refused = match self {
            StreamError::Decode(e) => e.sequence(),
            StreamError::Unbuildable { sequence, .. } => Some(*sequence),
            _ => None,
        };
        if let Some(sequence) = refused
            && let Ok(value) = sequence.to_string().parse()
        {
            status
                .metadata_mut()
                .insert(glasshouse_proto::metadata::REFUSED_BATCH, value);
        }
        status
    }
}

#[derive(Debug)]
pub struct IngestService {
    pub aggregator_id: String,
    pub limits: Limits,
    pub sink: SinkHandle,
    pub shutdown: CancellationToken,
    /// `None`: no token authentication.
    pub tokens: Option<crate::auth::Tokens>,
    /// Refuse clients that present neither a certificate nor a token.
    pub require_authentication: bool,
    /// Agent ids refused whatever their credentials.
    pub revoked: Vec<String>,
}

type AckStream = ReceiverStream<Result<v1::AggregatorFrame, Status>>;

#[tonic::async_trait]
impl Ingest for IngestService {
    type StreamStream = AckStream;

    async fn stream(&self, request: Request<Streaming<v1::AgentFrame>>) -> Result<Response<AckStream>, Status> {
        let peer = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let from_certificate = request.peer_certs().and_then(|certs| {
            certs
                .first()
                .and_then(|c| crate::auth::identity_of_certificate(c.as_ref()))
        });
        let authenticated = match (from_certificate, &self.tokens) {
            (Some(agent), _) => Some(agent),
            (None, Some(tokens)) => match tokens.authenticate(request.metadata()) {
                Ok(agent) => Some(agent),
                Err(status) => {
                    tracing::warn!(%peer, reason = status.message(), "refused unauthenticated client");
                    internal_events::refused("unauthenticated");
                    return Err(status);
                }
            },
            (None, None) if self.require_authentication => {
                internal_events::refused("unauthenticated");
                return Err(Status::unauthenticated(
                    "a client certificate or bearer token is required",
                ));
            }
            (None, None) => None,
        };
        if let Some(agent) = authenticated.as_ref().map(|i| &i.agent)
            && self.revoked.iter().any(|r| r == agent)
        {
            tracing::warn!(%peer, %agent, "refused revoked agent");
            internal_events::refused("unauthenticated");
            return Err(Status::unauthenticated(format!("agent {agent:?} is revoked")));
        }
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(MAX_IN_FLIGHT + 2);
        let session = Session {
            aggregator_id: self.aggregator_id.clone(),
            limits: self.limits,
            sink: self.sink.clone(),
            shutdown: self.shutdown.clone(),
            authenticated,
            tx,
        };
        tokio::spawn(
            session
                .run(inbound)
                .instrument(tracing::info_span!("agent-stream", %peer)),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Session {
    aggregator_id: String,
    limits: Limits,
    sink: SinkHandle,
    shutdown: CancellationToken,
    authenticated: Option<crate::auth::Identity>,
    tx: mpsc::Sender<Result<v1::AggregatorFrame, Status>>,
}

type Pending = Pin<Box<dyn Future<Output = (u64, Result<(), SinkError>)> + Send>>;

impl Session {
    async fn run(self, inbound: Streaming<v1::AgentFrame>) {
        let tx = self.tx.clone();
        internal_events::STREAMS.inc();
        let served = self.serve(inbound).await;
        internal_events::STREAMS.dec();
        if let Err(error) = served {
            if let Some(reason) = error.refusal_reason() {
                internal_events::refused(reason);
            }
            match error.code() {
                Code::InvalidArgument | Code::ResourceExhausted | Code::PermissionDenied => {
                    tracing::warn!(%error, "refused agent input");
                }
                _ => tracing::info!(%error, "agent stream ended"),
            }
            // Ignored error: the agent is already gone.
            let _ = tx.send(Err(error.to_status())).await;
        }
    }

    async fn serve(&self, mut inbound: Streaming<v1::AgentFrame>) -> Result<(), StreamError> {
        let hello = match inbound.message().await {
            Ok(Some(v1::AgentFrame {
                frame: Some(agent_frame::Frame::Hello(hello)),
            })) => hello,
            Ok(Some(_)) => return Err(StreamError::Protocol("first frame must be a hello")),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Internal | Code::OutOfRange | Code::ResourceExhausted
                ) =>
            {
                return Err(StreamError::MalformedFrame(status));
            }
            Ok(None) | Err(_) => return Ok(()),
        };
        if hello.agent_id.is_empty() {
            return Err(StreamError::Protocol("hello without agent_id"));
        }
        // Checked before they reach a log line, an error message or a row.
        if [&hello.agent_id, &hello.hostname, &hello.cluster]
            .iter()
            .any(|f| f.len() > MAX_HELLO_FIELD)
        {
            return Err(StreamError::Protocol(
                "hello agent_id, hostname or cluster longer than 253 bytes",
            ));
        }
        if let Some(mismatch) = self.authenticated.as_ref().and_then(|i| i.mismatch(&hello)) {
            return Err(StreamError::Impersonation(mismatch));
        }
        tracing::info!(
            agent = %hello.agent_id,
            host = %hello.hostname,
            cluster = %hello.cluster,
            mode = %hello.sensor_mode,
            "agent connected"
        );
        let mut tables = StreamTables::new(&hello, self.limits);
        self.send(aggregator_frame::Frame::Welcome(v1::Welcome {
            aggregator_id: self.aggregator_id.clone(),
            max_batch_events: self.limits.max_batch_events,
            max_strings: self.limits.max_strings,
            max_batch_bytes: u64::try_from(self.limits.max_batch_bytes).unwrap_or(u64::MAX),
            max_string_bytes: u64::try_from(self.limits.max_string_bytes).unwrap_or(u64::MAX),
        }))
        .await;

        let mut pending: FuturesOrdered<Pending> = FuturesOrdered::new();
        let mut input_open = true;
        loop {
            if !input_open && pending.is_empty() {
                tracing::info!(agent = %hello.agent_id, "agent stream closed");
                return Ok(());
            }
            tokio::select! {
                frame = inbound.message(), if input_open && pending.len() < MAX_IN_FLIGHT => match frame {
                    Ok(Some(v1::AgentFrame { frame: Some(agent_frame::Frame::Batch(batch)) })) => {
                        let sequence = batch.sequence;
                        let rows = tables.resolve(batch)?;
                        internal_events::batch_accepted(rows.len());
                        if rows.is_empty() {
                            pending.push_back(Box::pin(async move { (sequence, Ok(())) }));
                        } else {
                            let waiting = std::time::Instant::now();
                            let completion = self.sink.submit(rows).await?;
                            internal_events::waited_for_sink(waiting.elapsed());
                            pending.push_back(Box::pin(async move {
                                (sequence, completion.await.unwrap_or(Err(SinkError::Stopped)))
                            }));
                        }
                    }
                    Ok(Some(_)) => return Err(StreamError::Protocol("only batches may follow the hello")),
                    Ok(None) => input_open = false,
                    // tonic's decoder: a frame that does not decode or is
                    // too large. Anything else is the agent going away.
                    Err(status) if matches!(status.code(), Code::Internal | Code::OutOfRange | Code::ResourceExhausted) => {
                        return Err(StreamError::MalformedFrame(status));
                    }
                    Err(status) => {
                        tracing::info!(agent = %hello.agent_id, %status, "agent stream broke");
                        return Ok(());
                    }
                },
                Some((sequence, result)) = pending.next(), if !pending.is_empty() => {
                    match result {
                        Err(source @ SinkError::Unbuildable(_)) => return Err(StreamError::Unbuildable { sequence, source }),
                        other => other?,
                    }
                    self.send(aggregator_frame::Frame::Ack(v1::Ack { sequence })).await;
                }
                () = self.shutdown.cancelled(), if input_open => {
                    // Stop reading; acknowledge what is in flight, then tell the
                    // agent to go elsewhere.
                    while let Some((sequence, result)) = pending.next().await {
                        result?;
                        self.send(aggregator_frame::Frame::Ack(v1::Ack { sequence })).await;
                    }
                    return Err(StreamError::ShuttingDown);
                }
            }
        }
    }

    async fn send(&self, frame: aggregator_frame::Frame) {
        // Ignored error: the agent hung up; it re-sends what was not acknowledged.
        let _ = self.tx.send(Ok(v1::AggregatorFrame { frame: Some(frame) })).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::SampleKind;

    #[test]
    fn sample_refusals_are_invalid_input_naming_the_batch() {
        let sample = SampleKind::ResourceSample;
        let cases = [
            (
                DecodeError::SampleWithoutContainer {
                    sequence: 4,
                    sample,
                    index: 0,
                },
                "other",
            ),
            (
                DecodeError::UnknownSampleContainer {
                    sequence: 4,
                    sample,
                    index: 1,
                    container_ref: 9,
                },
                "dangling_reference",
            ),
            (
                DecodeError::BadSampleTimestamp {
                    sequence: 4,
                    sample: SampleKind::SyscallProfile,
                    index: 0,
                },
                "bad_timestamp",
            ),
            (
                DecodeError::ReversedInterval {
                    sequence: 4,
                    index: 0,
                    start_unix_ns: 2,
                    end_unix_ns: 1,
                },
                "bad_timestamp",
            ),
            (
                DecodeError::ProfileLengthMismatch {
                    sequence: 4,
                    index: 0,
                    numbers: 3,
                    counts: 2,
                },
                "other",
            ),
        ];
        for (decode, reason) in cases {
            let error = StreamError::Decode(decode);
            assert_eq!(error.code(), Code::InvalidArgument, "{error}");
            assert_refused_batch_4(&error, reason);
        }
    }

    #[test]
    fn gap_refusals_name_the_batch_too_many_gaps_is_too_large() {
        let cases = [
            (
                DecodeError::UnknownGapReason {
                    sequence: 4,
                    index: 0,
                    reason: 0,
                },
                Code::InvalidArgument,
                "other",
            ),
            (
                DecodeError::UnknownGapContainer {
                    sequence: 4,
                    index: 1,
                    container_ref: 9,
                },
                Code::InvalidArgument,
                "dangling_reference",
            ),
            (
                DecodeError::BadGapTimestamp { sequence: 4, index: 0 },
                Code::InvalidArgument,
                "bad_timestamp",
            ),
            (
                DecodeError::ReversedGap {
                    sequence: 4,
                    index: 0,
                    start_unix_ns: 2,
                    end_unix_ns: 1,
                },
                Code::InvalidArgument,
                "bad_timestamp",
            ),
            (
                DecodeError::EmptyGap { sequence: 4, index: 0 },
                Code::InvalidArgument,
                "other",
            ),
            (
                DecodeError::TooManyGaps {
                    sequence: 4,
                    gaps: 101,
                    max: 100,
                },
                Code::ResourceExhausted,
                "too_large",
            ),
        ];
        for (decode, code, reason) in cases {
            let error = StreamError::Decode(decode);
            assert_eq!(error.code(), code, "{error}");
            assert_refused_batch_4(&error, reason);
        }
    }

    /// The error counts under `reason` and its status names batch 4, in the
    /// metadata and at the start of the message.
    fn assert_refused_batch_4(error: &StreamError, reason: &str) {
        assert_eq!(error.refusal_reason(), Some(reason), "{error}");
        let status = error.to_status();
        assert_eq!(
            status
                .metadata()
                .get(glasshouse_proto::metadata::REFUSED_BATCH)
                .and_then(|v| v.to_str().ok()),
            Some("4"),
            "{error}"
        );
        let message = status.message();
        assert!(
            message.starts_with("batch 4, ") || message.starts_with("batch 4 has "),
            "{message}"
        );
    }
}
