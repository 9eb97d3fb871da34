//! Operator commands on baselines, and how the `glasshouse` CLI reads them.
//!
//! A command is a JSON message on `glasshouse.control`, keyed by workload
//! id like the telemetry, so it lands on the partition of the analyzer that
//! owns the workload; that analyzer applies it ([`crate::engine::Engine::command`])
//! and the baseline's next snapshot on `glasshouse.baselines` carries the new
//! version, which is how the CLI learns the command took effect.
//!
//! ```json
//! {"command": "lock", "workload": "default/web/server", "by": "alice@ops-1", "at_ms": 1796000000000}
//! {"command": "import", "workload": "…", "baseline": { …snapshot… }, "at_ms": …}
//! ```
//!
//! Anyone who can write to the topic could send one, so a command must be
//! signed with the control key ([`crate::sign`], `control_key_file`) and be
//! at most [`MAX_AGE_MS`] old (a recorded command cannot be replayed later);
//! anything else is refused, logged and counted
//! (`glasshouse_analyzer_control_refused_total`). An analyzer without a
//! control key refuses every command.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use glasshouse_proto::record::TOPIC_CONTROL;
use glasshouse_runtime::kafka::Kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};

use crate::baseline::Baseline;
use crate::engine::Command;
use crate::sign::{self, Key};

/// How old (or how far in the future, for clock skew) a command may be.
pub const MAX_AGE_MS: u64 = 10 * 60 * 1000;

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
    /// When it was sent, ms since the epoch.
    #[serde(default)]
    pub at_ms: u64,
}

use crate::error::StoreError;
pub use crate::error::{Malformed, Refused, SendError};

/// A verified command: checks the signature of `payload` under message
/// `key`, then parses it and checks its age against `now_ms`.
pub fn verify(
    control_key: Option<&Key>,
    key: &[u8],
    payload: &[u8],
    signature: Option<&[u8]>,
    now_ms: u64,
) -> Result<(String, Command, String), Refused> {
    let control_key = control_key.ok_or(Refused::NoKey)?;
    control_key.verify(TOPIC_CONTROL, key, payload, signature)?;
    let at_ms = serde_json::from_slice::<ControlMessage>(payload).map_or(0, |m| m.at_ms);
    let (workload, command, by) = parse(payload)?;
    if workload.as_bytes() != key {
        return Err(Refused::KeyMismatch {
            key: String::from_utf8_lossy(key).into_owned(),
            workload,
        });
    }
    let age_ms = now_ms.abs_diff(at_ms);
    if age_ms > MAX_AGE_MS {
        return Err(Refused::Stale {
            at_ms,
            age_ms,
            max_ms: MAX_AGE_MS,
        });
    }
    Ok((workload, command, by))
}

/// Parses a control message into the workload and the command.
pub fn parse(payload: &[u8]) -> Result<(String, Command, String), Malformed> {
    if payload.len() > MAX_MESSAGE {
        return Err(Malformed::TooLarge {
            len: payload.len(),
            max: MAX_MESSAGE,
        });
    }
    let m: ControlMessage = serde_json::from_slice(payload).map_err(|e| Malformed::Json(e.to_string()))?;
    if m.workload.is_empty() {
        return Err(Malformed::NoWorkload);
    }
    let command = match (m.command.as_str(), m.baseline) {
        ("lock", None) => Command::Lock,
        ("unlock", None) => Command::Unlock,
        ("reset", None) => Command::Reset,
        ("import", Some(b)) => Command::Import(b),
        ("import", None) => return Err(Malformed::ImportWithoutBaseline),
        (other, _) => return Err(Malformed::UnknownCommand(other.to_owned())),
    };
    Ok((m.workload, command, m.by))
}

/// The latest snapshot of every workload on `glasshouse.baselines`.
pub fn read_baselines(
    kafka: &Kafka,
    key: Option<&Key>,
    timeout: Duration,
) -> Result<BTreeMap<String, Baseline>, StoreError> {
    crate::store::read_latest(&kafka.brokers, &kafka.properties, key, None, timeout)
}

/// Sends a command signed with `key` and waits until a snapshot of the
/// workload newer than the current one shows it applied; returns that snapshot.
pub async fn send(
    kafka: &Kafka,
    key: &Key,
    workload: &str,
    command: &str,
    baseline: Option<Baseline>,
    timeout: Duration,
) -> Result<Baseline, SendError> {
    let before = {
        let kafka = kafka.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || read_baselines(&kafka, Some(&key), Duration::from_secs(10))).await??
    };
    let after_version = before.get(workload).map_or(0, |b| b.version);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let user = std::env::var("USER").unwrap_or_else(|_| "?".into());
    let message = ControlMessage {
        command: command.to_owned(),
        workload: workload.to_owned(),
        by: format!("{user}@{}", host.trim()),
        baseline: baseline.map(Box::new),
        at_ms: crate::clock::system_ns() as u64 / 1_000_000,
    };
    let json = serde_json::to_vec(&message)?;
    let signature = key.sign(TOPIC_CONTROL, workload.as_bytes(), &json);
    let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: sign::HEADER,
        value: Some(&signature),
    });
    let producer: FutureProducer = kafka
        .client(&[])
        .set("message.max.bytes", MAX_MESSAGE.to_string())
        .create()
        .map_err(|source| SendError::Producer {
            brokers: kafka.to_string(),
            source,
        })?;
    producer
        .send(
            FutureRecord::to(TOPIC_CONTROL)
                .key(workload)
                .payload(&json)
                .headers(headers),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(source, _)| SendError::Send {
            topic: TOPIC_CONTROL,
            source,
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        let now = {
            let kafka = kafka.clone();
            let key = key.clone();
            tokio::task::spawn_blocking(move || read_baselines(&kafka, Some(&key), Duration::from_secs(10))).await??
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
            return Err(SendError::NotApplied {
                timeout,
                workload: workload.to_owned(),
            });
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
        assert_eq!(e, Malformed::UnknownCommand("explode".into()));
        assert!(e.to_string().contains("unknown command \"explode\""), "{e}");
        assert_eq!(
            parse(br#"{"command":"import","workload":"w"}"#).unwrap_err(),
            Malformed::ImportWithoutBaseline
        );
        assert_eq!(
            parse(br#"{"command":"lock","workload":""}"#).unwrap_err(),
            Malformed::NoWorkload
        );
        assert!(
            parse(b"\xff")
                .unwrap_err()
                .to_string()
                .starts_with("malformed control message")
        );
        assert!(matches!(
            parse(&vec![b' '; MAX_MESSAGE + 1]).unwrap_err(),
            Malformed::TooLarge { len, .. } if len == MAX_MESSAGE + 1
        ));
        assert!(parse(br#"{"command":"lock","workload":"w","extra":1}"#).is_err());
        let b = Baseline::new("w", 0, 0);
        let m = ControlMessage {
            command: "import".into(),
            workload: "w".into(),
            by: String::new(),
            baseline: Some(Box::new(b.clone())),
            at_ms: 0,
        };
        let (_, c, _) = parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(c, Command::Import(Box::new(b)));
    }

    #[test]
    fn only_fresh_commands_signed_with_the_key_apply() {
        let key = Key::new(&[1; 32]);
        let now = 1_796_000_000_000;
        let lock = |by: &str, at_ms: u64| {
            format!(r#"{{"command":"lock","workload":"w","by":"{by}","at_ms":{at_ms}}}"#).into_bytes()
        };
        let good = lock("alice@ops", now - 1000);
        let sig = key.sign(TOPIC_CONTROL, b"w", &good);
        let (w, c, by) = verify(Some(&key), b"w", &good, Some(sig.as_bytes()), now).unwrap();
        assert_eq!((w.as_str(), c, by.as_str()), ("w", Command::Lock, "alice@ops"));
        // No key configured: refused, signed or not.
        assert_eq!(
            verify(None, b"w", &good, Some(sig.as_bytes()), now),
            Err(Refused::NoKey)
        );
        // Unsigned, or a spoofed operator under the old signature.
        assert_eq!(
            verify(Some(&key), b"w", &good, None, now),
            Err(Refused::Signature(sign::Unverified::Unsigned))
        );
        let spoofed = lock("root@ops", now - 1000);
        assert_eq!(
            verify(Some(&key), b"w", &spoofed, Some(sig.as_bytes()), now),
            Err(Refused::Signature(sign::Unverified::Forged))
        );
        // Signed by another key.
        let forged = Key::new(&[2; 32]).sign(TOPIC_CONTROL, b"w", &spoofed);
        assert_eq!(
            verify(Some(&key), b"w", &spoofed, Some(forged.as_bytes()), now),
            Err(Refused::Signature(sign::Unverified::Forged))
        );
        // Replayed later; sent under another workload's key.
        let old = lock("alice@ops", now - MAX_AGE_MS - 1);
        let old_sig = key.sign(TOPIC_CONTROL, b"w", &old);
        assert!(matches!(
            verify(Some(&key), b"w", &old, Some(old_sig.as_bytes()), now),
            Err(Refused::Stale { .. })
        ));
        let at_bound = lock("alice@ops", now - MAX_AGE_MS);
        let bound_sig = key.sign(TOPIC_CONTROL, b"w", &at_bound);
        assert!(verify(Some(&key), b"w", &at_bound, Some(bound_sig.as_bytes()), now).is_ok());
        let other = key.sign(TOPIC_CONTROL, b"v", &good);
        assert!(matches!(
            verify(Some(&key), b"v", &good, Some(other.as_bytes()), now),
            Err(Refused::KeyMismatch { .. })
        ));
    }
}
