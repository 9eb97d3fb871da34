//! Operator commands on baselines, and how the `glasshouse` CLI reads them.
//!
//! A command is a JSON message on `glasshouse.control`, keyed by workload
//! id like the telemetry, so it lands on the partition of the analyzer that
//! owns the workload; that analyzer applies it ([`crate::engine::Engine::command`])
//! and the baseline's next snapshot on `glasshouse.baselines` carries the new
//! version, which is how the CLI learns the command took effect.
//!
//! ```json
//! {"command": "lock", "workload": "default/web/server", "by": "alice@ops-1"}
//! {"command": "import", "workload": "…", "baseline": { …snapshot… }}
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use glasshouse_proto::record::TOPIC_CONTROL;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::engine::Command;

/// Longest control message accepted (an imported baseline included).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One operator command, as sent on the control topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlMessage {
    pub command: String,
    pub workload: String,
    /// Who asked (for the logs).
    #[serde(default)]
    pub by: String,
    /// The snapshot, for `import`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Box<Baseline>>,
}

/// Parses a control message into the workload and the command.
pub fn parse(payload: &[u8]) -> Result<(String, Command, String), String> {
    if payload.len() > MAX_MESSAGE {
        return Err(format!(
            "control message of {} bytes, over {MAX_MESSAGE}",
            payload.len()
        ));
    }
    let m: ControlMessage = serde_json::from_slice(payload).map_err(|e| format!("malformed control message: {e}"))?;
    if m.workload.is_empty() {
        return Err("control message without a workload".into());
    }
    let command = match (m.command.as_str(), m.baseline) {
        ("lock", None) => Command::Lock,
        ("unlock", None) => Command::Unlock,
        ("reset", None) => Command::Reset,
        ("import", Some(b)) => Command::Import(b),
        ("import", None) => return Err("import without a baseline".into()),
        (other, _) => {
            return Err(format!("unknown command {other:?} (lock, unlock, reset, import)"));
        }
    };
    Ok((m.workload, command, m.by))
}

/// The latest snapshot of every workload on `glasshouse.baselines`.
pub fn read_baselines(brokers: &str, timeout: Duration) -> Result<BTreeMap<String, Baseline>, String> {
    crate::store::read_latest(brokers, &BTreeMap::new(), None, timeout)
}

/// Sends a command and waits until a snapshot of the workload newer than
/// `after_version` shows it applied; returns that snapshot.
pub async fn send(
    brokers: &str,
    workload: &str,
    command: &str,
    baseline: Option<Baseline>,
    timeout: Duration,
) -> Result<Baseline, String> {
    let before = {
        let brokers = brokers.to_owned();
        tokio::task::spawn_blocking(move || read_baselines(&brokers, Duration::from_secs(10)))
            .await
            .map_err(|e| e.to_string())??
    };
    let after_version = before.get(workload).map_or(0, |b| b.version);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_else(|_| "?".into());
    let message = ControlMessage {
        command: command.to_owned(),
        workload: workload.to_owned(),
        by: format!("{user}@{}", host.trim()),
        baseline: baseline.map(Box::new),
    };
    let json = serde_json::to_vec(&message).map_err(|e| e.to_string())?;
    let producer: FutureProducer = crate::store::client(brokers, &[], &BTreeMap::new())
        .set("message.max.bytes", MAX_MESSAGE.to_string())
        .create()
        .map_err(|e| format!("kafka producer for {brokers}: {e}"))?;
    producer
        .send(
            FutureRecord::to(TOPIC_CONTROL).key(workload).payload(&json),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| format!("sending the command to {TOPIC_CONTROL}: {e}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        let now = {
            let brokers = brokers.to_owned();
            tokio::task::spawn_blocking(move || read_baselines(&brokers, Duration::from_secs(10)))
                .await
                .map_err(|e| e.to_string())??
        };
        if let Some(b) = now.get(workload)
            && b.version > after_version
            && b.history
                .iter()
                .any(|c| c.version > after_version && c.what.contains("by operator"))
        {
            return Ok(b.clone());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no analyzer applied the command within {timeout:?}: is one running, and does it own {workload:?}?"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_bad_ones_are_named() {
        let (w, c, by) = parse(br#"{"command":"lock","workload":"w","by":"a@b"}"#).unwrap();
        assert_eq!((w.as_str(), c, by.as_str()), ("w", Command::Lock, "a@b"));
        assert_eq!(
            parse(br#"{"command":"reset","workload":"w"}"#).unwrap().1,
            Command::Reset
        );
        let e = parse(br#"{"command":"explode","workload":"w"}"#).unwrap_err();
        assert!(e.contains("unknown command \"explode\""), "{e}");
        assert!(
            parse(br#"{"command":"import","workload":"w"}"#)
                .unwrap_err()
                .contains("without a baseline")
        );
        assert!(
            parse(br#"{"command":"lock","workload":""}"#)
                .unwrap_err()
                .contains("without a workload")
        );
        assert!(parse(b"\xff").unwrap_err().starts_with("malformed control message"));
        assert!(parse(br#"{"command":"lock","workload":"w","extra":1}"#).is_err());
        let b = Baseline::new("w", 0, 0);
        let m = ControlMessage {
            command: "import".into(),
            workload: "w".into(),
            by: String::new(),
            baseline: Some(Box::new(b.clone())),
        };
        let (_, c, _) = parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(c, Command::Import(Box::new(b)));
    }
}
