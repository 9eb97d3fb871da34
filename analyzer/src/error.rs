//! Why a step of the analysis failed, as types: each error says what failed
//! with its cause as `source`, and its [`Kind`] says whether trying again can
//! help, so the consume loop decides by type, not by reading a message.

use rdkafka::error::KafkaError;

/// Whether a failed step can succeed when tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The broker is away or slow: the same step later can succeed (a
    /// checkpoint is retried at the next interval, its offsets held back).
    Retryable,
    /// The input or the setup is wrong: trying again fails the same way.
    Fatal,
}

/// Writing or reading the analyzer's state on Kafka (baseline snapshots,
/// alerts).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("kafka producer for {brokers}")]
    Producer {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("metadata of {topic}")]
    Metadata {
        topic: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("topic {0} has no partitions")]
    NoPartitions(&'static str),
    #[error("enqueueing the baseline of {workload}")]
    Enqueue {
        workload: String,
        #[source]
        source: KafkaError,
    },
    #[error("writing a baseline")]
    Write(#[source] KafkaError),
    #[error("writing a baseline: the producer is gone")]
    ProducerGone,
    #[error("kafka consumer for {brokers}")]
    Consumer {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("watermarks of {topic}/{partition}")]
    Watermarks {
        topic: &'static str,
        partition: i32,
        #[source]
        source: KafkaError,
    },
    #[error("assigning the partitions of {topic}")]
    Assign {
        topic: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("reading {topic}")]
    Read {
        topic: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("reading {topic}: not at its end after {timeout:?}")]
    NotAtEnd {
        topic: &'static str,
        timeout: std::time::Duration,
    },
    #[error("flushing the producer")]
    Flush(#[source] KafkaError),
    #[error("a blocking task of the store failed")]
    Task(#[source] tokio::task::JoinError),
}

impl StoreError {
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::Producer { .. }
            | StoreError::Consumer { .. }
            | StoreError::NoPartitions(_)
            | StoreError::Task(_) => Kind::Fatal,
            StoreError::Metadata { .. }
            | StoreError::Enqueue { .. }
            | StoreError::Write(_)
            | StoreError::ProducerGone
            | StoreError::Watermarks { .. }
            | StoreError::Assign { .. }
            | StoreError::Read { .. }
            | StoreError::NotAtEnd { .. }
            | StoreError::Flush(_) => Kind::Retryable,
        }
    }
}

/// Why an operator command was refused before it was applied (see
/// `control::verify`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refused {
    #[error("no control_key_file configured: operator commands are refused")]
    NoKey,
    #[error("{0}")]
    Signature(#[from] crate::sign::Unverified),
    #[error("sent at {at_ms} ms, {age_ms} ms from now: over {max_ms} ms (replayed, or a skewed clock)")]
    Stale { at_ms: u64, age_ms: u64, max_ms: u64 },
    #[error("message key {key:?} is not the workload {workload:?}")]
    KeyMismatch { key: String, workload: String },
    #[error("{0}")]
    Malformed(#[from] Malformed),
}

/// Why a telemetry message is skipped (logged and counted; see `consume`).
#[derive(Debug, thiserror::Error)]
pub enum Skipped {
    #[error("unexpected record type")]
    UnexpectedType,
    #[error("malformed schema version header {0:?}")]
    VersionHeader(String),
    #[error("empty message")]
    Empty,
    #[error(transparent)]
    Decode(#[from] glasshouse_proto::ipc::DecodeError),
    #[error("record type {0} is not consumed")]
    NotConsumed(glasshouse_proto::record::RecordType),
    #[error("{source} (written with schema version {version}, this analyzer reads {current})")]
    OtherVersion {
        version: u32,
        current: u32,
        source: arrow_schema::ArrowError,
    },
    #[error(transparent)]
    Rows(arrow_schema::ArrowError),
}

/// Why a control message is not a command.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Malformed {
    #[error("control message of {len} bytes, over {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed control message: {0}")]
    Json(String),
    #[error("control message without a workload")]
    NoWorkload,
    #[error("import without a baseline")]
    ImportWithoutBaseline,
    #[error("unknown command {0:?} (lock, unlock, reset, import)")]
    UnknownCommand(String),
}

/// Why `glasshouse baselines lock|unlock|reset|import` did not see its
/// command applied.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("reading the baselines")]
    Read(#[from] StoreError),
    #[error("a blocking task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("encoding the command")]
    Encode(#[from] serde_json::Error),
    #[error("kafka producer for {brokers}")]
    Producer {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    #[error("sending the command to {topic}")]
    Send {
        topic: &'static str,
        #[source]
        source: KafkaError,
    },
    #[error("no analyzer applied the command within {timeout:?}: is one running, and does it own {workload:?}?")]
    NotApplied {
        timeout: std::time::Duration,
        workload: String,
    },
}

/// Why an operator command was not applied.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum CommandError {
    #[error("refused ({refused}) for workload {workload}")]
    Refused { refused: Refused, workload: String },
    #[error("snapshot is of workload {snapshot:?}, not {workload:?}")]
    WrongWorkload { snapshot: String, workload: String },
    #[error("commands are not consumed here")]
    NotConsumed,
}

impl CommandError {
    /// A command is one message: applying it again fails the same way.
    pub fn kind(&self) -> Kind {
        Kind::Fatal
    }
}

/// Why state could not be made durable (offsets are then held back).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0} alerts not delivered")]
    AlertsPending(usize),
    #[error("encoding a baseline snapshot")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CheckpointError {
    pub fn kind(&self) -> Kind {
        match self {
            CheckpointError::AlertsPending(_) => Kind::Retryable,
            CheckpointError::Encode(_) => Kind::Fatal,
            CheckpointError::Store(e) => e.kind(),
        }
    }
}

/// Why the vulnerability task could not go on.
#[derive(Debug, thiserror::Error)]
pub enum VulnsError {
    #[error("kafka client for {brokers}")]
    Client {
        brokers: String,
        #[source]
        source: KafkaError,
    },
    /// `what`: "metadata of", "assign", "subscribing to", "reading".
    #[error("{what} {topic}")]
    Topic {
        what: &'static str,
        topic: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic {topic} has no partitions at {brokers}")]
    NoPartitions { topic: String, brokers: String },
    #[error("reading {topic}: not at its end after {timeout:?}")]
    NotAtEnd {
        topic: String,
        timeout: std::time::Duration,
    },
    #[error("a blocking task of the vulnerability task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl VulnsError {
    pub fn kind(&self) -> Kind {
        match self {
            VulnsError::Client { .. } | VulnsError::NoPartitions { .. } | VulnsError::Task(_) => Kind::Fatal,
            VulnsError::Topic { .. } | VulnsError::NotAtEnd { .. } => Kind::Retryable,
        }
    }
}

/// Why an HTTP exchange of the CLI (`GET`) or of the webhook output
/// (`POST`) failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("sending the request")]
    Send(#[source] std::io::Error),
    #[error("reading the answer")]
    Read(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("malformed HTTP answer")]
    Malformed,
    /// The status line, escaped for a terminal.
    #[error("answer {0}")]
    Status(String),
}

impl HttpError {
    /// A refused or silent server may answer later; an answer that is not
    /// 2xx/200 (other than 5xx) will not change by asking again.
    pub fn kind(&self) -> Kind {
        match self {
            HttpError::Status(line) if !line.split_whitespace().nth(1).is_some_and(|c| c.starts_with('5')) => {
                Kind::Fatal
            }
            _ => Kind::Retryable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_cause() {
        assert_eq!(CheckpointError::AlertsPending(3).kind(), Kind::Retryable);
        assert_eq!(CheckpointError::Store(StoreError::ProducerGone).kind(), Kind::Retryable);
        assert_eq!(
            CheckpointError::Store(StoreError::NoPartitions("glasshouse.baselines")).kind(),
            Kind::Fatal
        );
        assert_eq!(CommandError::NotConsumed.kind(), Kind::Fatal);
        // The cause stays reachable as the source.
        let e = CheckpointError::from(StoreError::Write(KafkaError::Canceled));
        assert!(std::error::Error::source(&e).is_some());
    }
}
