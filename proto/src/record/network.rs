//! Arrow schema of `glasshouse.network` records: one row per step in the life
//! of a TCP socket (listen, connect, accept, close, failed connect), already
//! resolved and attributed.
//!
//! The [`Attribution`] columns, then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `event_index` | uint32 | position in the agent batch (after its process events); with `agent_id`, `boot_id` and `batch_seq`, the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `kind` | utf8 | `listen`, `connect`, `accept`, `close` or `connect_failed` |
//! | `pid` | uint32 | process that owns the socket, host pid namespace |
//! | `family` | utf8 | `ipv4` or `ipv6` |
//! | `local_addr` | utf8 | local IP address, as [`std::net::IpAddr`] prints it (`10.0.0.2`, `fd00::1`) |
//! | `local_port` | uint16 | local TCP port |
//! | `remote_addr` | utf8, nullable | peer IP address; null for a listening socket |
//! | `remote_port` | uint16 | peer TCP port; 0 for a listening socket |
//! | `bytes_sent` | uint64 | close of a connection: bytes sent and acknowledged by the peer; 0 otherwise |
//! | `bytes_received` | uint64 | close of a connection: bytes received; 0 otherwise |
//! | `count` | uint32 | identical events collapsed into this row |
//! | `pre_existing` | bool | found open when the agent started (from `/proc`), not seen happening: no byte counts, and its close may not be reported |
//! | `remote_scope` | utf8 | where the peer is: `none` (a listening socket), `loopback`, `link_local`, `private` (RFC 1918, RFC 6598 shared space, RFC 4193 unique local: cluster and on-premises networks) or `public` (the internet); IPv4-mapped IPv6 addresses as IPv4; schema version 6, read as `none` from older batches |

use std::net::IpAddr;

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::text_enum! {
    /// What happened to the socket.
    pub enum Kind {
        /// A socket started listening.
        Listen = "listen",
        /// An outbound connection was established.
        Connect = "connect",
        /// An inbound connection was established on a listening socket.
        Accept = "accept",
        /// A connection (with its byte counts) or a listening socket was closed.
        Close = "close",
        /// An outbound connection attempt failed.
        ConnectFailed = "connect_failed",
    }
}

crate::text_enum! {
    /// The address family of a socket.
    pub enum Family {
        Ipv4 = "ipv4",
        Ipv6 = "ipv6",
    }
}

crate::text_enum! {
    /// Where a socket's peer is, seen from the host.
    pub enum Scope {
        /// No peer: a listening socket.
        None = "none",
        /// This host (also the unspecified address, which reaches it).
        Loopback = "loopback",
        /// The local link (169.254.0.0/16, fe80::/10).
        LinkLocal = "link_local",
        /// A private network: RFC 1918, the RFC 6598 shared space
        /// (100.64.0.0/10) and RFC 4193 unique local addresses (fc00::/7).
        Private = "private",
        /// Any other address: the internet.
        Public = "public",
    }
}

impl Scope {
    /// The scope of a peer at `ip`.
    pub fn of(ip: IpAddr) -> Scope {
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                let [a, b, ..] = v4.octets();
                if v4.is_loopback() || v4.is_unspecified() {
                    Scope::Loopback
                } else if v4.is_link_local() {
                    Scope::LinkLocal
                } else if v4.is_private() || (a == 100 && b & 0xc0 == 64) {
                    Scope::Private
                } else {
                    Scope::Public
                }
            }
            IpAddr::V6(v6) => {
                if v6.is_loopback() || v6.is_unspecified() {
                    Scope::Loopback
                } else if v6.is_unicast_link_local() {
                    Scope::LinkLocal
                } else if v6.segments()[0] & 0xfe00 == 0xfc00 {
                    Scope::Private
                } else {
                    Scope::Public
                }
            }
        }
    }
}

impl Family {
    pub const fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::Ipv4,
            IpAddr::V6(_) => Family::Ipv6,
        }
    }
}

crate::wire_enum!(Kind <=> NetworkEventKind { Listen, Connect, Accept, Close, ConnectFailed });

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One TCP socket event, resolved and attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        pub attribution: Attribution,
        pub event_index: u32,
        pub time_unix_ns: i64 => "time" as Time,
        pub kind: Kind,
        pub pid: u32,
        pub family: Family,
        /// Text form of the local IP address.
        pub local_addr: Str,
        pub local_port: u16,
        /// Text form of the peer IP address; `None` for a listening socket.
        pub remote_addr: Option<Str>,
        pub remote_port: u16,
        pub bytes_sent: u64,
        pub bytes_received: u64,
        pub count: u32,
        pub pre_existing: bool,
        /// Where the peer is ([`Scope::of`] its address).
        pub remote_scope: Scope = Scope::None,
    }
}

crate::record!(crate::record::RecordType::Network);

impl Row {
    /// A closed HTTPS connection of [`Attribution::sample`]'s container, for
    /// tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            event_index: 2,
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: Kind::Close,
            pid: 10,
            family: Family::Ipv4,
            local_addr: "10.0.0.2".into(),
            local_port: 43122,
            remote_addr: Some("93.184.216.34".into()),
            remote_port: 443,
            bytes_sent: 3000,
            bytes_received: 500,
            count: 1,
            pre_existing: false,
            remote_scope: Scope::Public,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use arrow_array::{Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};
    use std::sync::Arc;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
    }

    /// A host process listening on every IPv6 address.
    fn listen_row() -> Row {
        Row {
            attribution: Attribution::host("host-a".into(), "host-a".into()),
            kind: Kind::Listen,
            family: Family::Ipv6,
            local_addr: "::".into(),
            local_port: 8080,
            remote_addr: None,
            remote_port: 0,
            bytes_sent: 0,
            bytes_received: 0,
            event_index: 3,
            remote_scope: Scope::None,
            ..sample_row()
        }
    }

    #[test]
    fn peers_are_scoped_by_address() {
        let scope = |a: &str| Scope::of(a.parse().unwrap());
        for (addr, want) in [
            ("127.0.0.1", Scope::Loopback),
            ("::1", Scope::Loopback),
            ("0.0.0.0", Scope::Loopback),
            ("169.254.169.254", Scope::LinkLocal),
            ("fe80::1", Scope::LinkLocal),
            ("10.88.0.2", Scope::Private),
            ("172.16.0.1", Scope::Private),
            ("172.32.0.1", Scope::Public),
            ("192.168.1.1", Scope::Private),
            ("100.64.0.1", Scope::Private),
            ("100.128.0.1", Scope::Public),
            ("fd00::1", Scope::Private),
            ("::ffff:10.0.0.1", Scope::Private),
            ("::ffff:8.8.8.8", Scope::Public),
            ("93.184.216.34", Scope::Public),
            ("2001:db8::1", Scope::Public),
        ] {
            assert_eq!(scope(addr), want, "{addr}");
        }
        for s in Scope::ALL {
            assert_eq!(Scope::parse(s.as_str()), Some(*s));
        }
    }

    #[test]
    fn version_5_batches_are_read_without_remote_scope() {
        let r = sample_row();
        let older = Row {
            remote_scope: Scope::None,
            ..r.clone()
        };
        crate::record::testing::reads_without_last_column(&r, "remote_scope", &older);
    }

    #[test]
    fn kinds_and_families_round_trip_as_text() {
        for k in [
            Kind::Listen,
            Kind::Connect,
            Kind::Accept,
            Kind::Close,
            Kind::ConnectFailed,
        ] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for f in [Family::Ipv4, Family::Ipv6] {
            assert_eq!(Family::parse(f.as_str()), Some(f));
        }
        assert_eq!(Family::of("fd00::1".parse().unwrap()), Family::Ipv6);
        assert_eq!(Kind::parse("exec"), None);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let rows = vec![sample_row(), listen_row()];
        let back = crate::record::testing::round_trip(&rows);
        let remote = back.column_by_name("remote_addr").unwrap();
        assert_eq!(remote.null_count(), 1, "a listener has no peer");
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::process::Row::sample())).is_err());
    }
}
