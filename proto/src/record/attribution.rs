//! The columns every record starts with: who observed it and what it
//! belongs to.
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `agent_id` | utf8 | agent that observed the record |
//! | `boot_id` | uint64 | agent process start the record belongs to |
//! | `batch_seq` | uint64 | sequence of the agent batch that carried it |
//! | `host` | utf8 | host name of the agent |
//! | `container_id` | utf8, null for the host | full runtime container id |
//! | `container_name` | utf8, nullable | runtime name |
//! | `image` | utf8, nullable | image reference the container was started from |
//! | `image_id` | utf8, nullable | image id / digest |
//! | `workload_id` | utf8 | key baselines are learned under (`host:<host>` for the host); also the Kafka message key |
//! | `cluster` | utf8 | the cluster the agent's credential binds (`""`: none; its hello's `cluster`); schema version 5, read as `""` from older batches |

use super::column::Str;

crate::columns! {
    builder: Builder, reader: Reader;

    /// Who observed a record and what it belongs to: the agent and its
    /// batch, the host, and the container with its workload (or the host).
    #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
    pub struct Attribution {
        pub agent_id: Str,
        pub boot_id: u64,
        pub batch_seq: u64,
        pub host: Str,
        /// `None`: the host itself, not a container.
        pub container_id: Option<Str>,
        pub container_name: Option<Str>,
        pub image: Option<Str>,
        pub image_id: Option<Str>,
        pub workload_id: Str,
        /// The agent's cluster (`""`: none), as its credential binds it.
        pub cluster: Str = Str::default(),
    }
}

impl Attribution {
    /// The container id, empty for the host (for records that always name
    /// a container: syscalls, resources, inventory).
    pub fn container(&self) -> &str {
        self.container_id.as_deref().unwrap_or_default()
    }

    /// The attribution of a host record (no container) of `host`, seen by
    /// agent `agent_id`.
    pub fn host(agent_id: Str, host: Str) -> Attribution {
        Attribution {
            workload_id: format!("host:{host}").into(),
            agent_id,
            host,
            ..Attribution::default()
        }
    }

    /// A container of workload `localhost/glasshouse-test` on `host-a`, for
    /// tests and benchmarks.
    pub fn sample() -> Attribution {
        Attribution {
            agent_id: "host-a".into(),
            boot_id: 7,
            batch_seq: 3,
            host: "host-a".into(),
            container_id: Some("41ee3b278ccc".into()),
            container_name: Some("web-1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: Some("sha256:3c44".into()),
            workload_id: "localhost/glasshouse-test".into(),
            cluster: "prod".into(),
        }
    }
}
