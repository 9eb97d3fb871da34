//! Record types, the Kafka topic each is written to, and the headers every
//! Kafka message carries.

use std::fmt;
use std::str::FromStr;

/// Header naming the [`RecordType`] of a message.
pub const HEADER_RECORD_TYPE: &str = "glasshouse-record-type";
/// Header with the decimal [`crate::SCHEMA_VERSION`] the value was written with.
pub const HEADER_SCHEMA_VERSION: &str = "glasshouse-schema-version";
/// Header naming the process that produced the message (e.g. `aggregator/host-1`).
pub const HEADER_PRODUCER_ID: &str = "glasshouse-producer-id";

/// Topic of alerts (OCSF JSON), keyed by workload id.
pub const TOPIC_ALERTS: &str = "glasshouse.alerts";
/// Compacted topic of baseline snapshots, keyed by workload id.
pub const TOPIC_BASELINES: &str = "glasshouse.baselines";
/// Operator commands to the analyzers (lock, unlock, reset, import a
/// baseline), JSON keyed by workload id: the analyzer that owns the
/// workload's partition applies them.
pub const TOPIC_CONTROL: &str = "glasshouse.control";
/// Compacted topic of OSV advisories (JSON), keyed by advisory id: what
/// `glasshouse vulns import` publishes and every analyzer instance reads in
/// full, so all of them match against the same advisories.
pub const TOPIC_ADVISORIES: &str = "glasshouse.advisories";
/// Compacted topic of the current vulnerability findings (JSON, one per
/// container × package × advisory, keyed so), `open` or `resolved`.
pub const TOPIC_VULNERABILITIES: &str = "glasshouse.vulnerabilities";

/// The kinds of telemetry record, one Kafka topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordType {
    Process,
    Network,
    File,
    Syscalls,
    Resources,
    Gaps,
    Containers,
    Inventory,
}

impl RecordType {
    pub const ALL: [RecordType; 8] = [
        RecordType::Process,
        RecordType::Network,
        RecordType::File,
        RecordType::Syscalls,
        RecordType::Resources,
        RecordType::Gaps,
        RecordType::Containers,
        RecordType::Inventory,
    ];

    /// Name used in headers and logs.
    pub const fn name(self) -> &'static str {
        match self {
            RecordType::Process => "process",
            RecordType::Network => "network",
            RecordType::File => "file",
            RecordType::Syscalls => "syscalls",
            RecordType::Resources => "resources",
            RecordType::Gaps => "gaps",
            RecordType::Containers => "containers",
            RecordType::Inventory => "inventory",
        }
    }

    /// The Kafka topic records of this type are written to.
    pub const fn topic(self) -> &'static str {
        match self {
            RecordType::Process => "glasshouse.process",
            RecordType::Network => "glasshouse.network",
            RecordType::File => "glasshouse.file",
            RecordType::Syscalls => "glasshouse.syscalls",
            RecordType::Resources => "glasshouse.resources",
            RecordType::Gaps => "glasshouse.gaps",
            RecordType::Containers => "glasshouse.containers",
            RecordType::Inventory => "glasshouse.inventory",
        }
    }

    /// Whether the topic is log-compacted (latest value per key kept).
    pub const fn compacted(self) -> bool {
        matches!(self, RecordType::Containers)
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A record type name that is not one of [`RecordType::ALL`].
#[derive(Debug, thiserror::Error)]
#[error("unknown record type {name:?}")]
pub struct UnknownRecordType {
    pub name: String,
}

impl FromStr for RecordType {
    type Err = UnknownRecordType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RecordType::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownRecordType { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_topics_are_distinct() {
        let mut topics = std::collections::HashSet::new();
        for t in RecordType::ALL {
            assert_eq!(t.name().parse::<RecordType>().unwrap(), t);
            assert!(topics.insert(t.topic()), "duplicate topic {}", t.topic());
            assert_eq!(t.topic(), format!("glasshouse.{}", t.name()));
        }
        assert!("bogus".parse::<RecordType>().is_err());
        assert_eq!("gaps".parse::<RecordType>().unwrap().topic(), "glasshouse.gaps");
        assert!(!RecordType::Gaps.compacted());
    }
}
