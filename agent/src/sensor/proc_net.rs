//! The netlink fallback's TCP sensor. Without eBPF the kernel sends no socket
//! events, so the pipeline reads each observed network namespace's
//! `/proc/PID/net/tcp` and `tcp6` every [`POLL_INTERVAL`] and reports what
//! changed: a new listening socket is a listen, a new established one a
//! connect — or an accept when its local port is one the namespace listens
//! or listened on —, and a socket that is gone (or past the connection's end)
//! a close.
//!
//! What polling cannot give, and the eBPF sensor does: connections that open
//! and close between two polls are not seen, times are those of the poll, and
//! byte counts are not known (reported as 0).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glasshouse_proto::v1::NetworkEventKind as Kind;

use super::NetworkRaw;
use crate::procfs::{TCP_ESTABLISHED, TCP_LISTEN, TcpSocket};
use crate::record::{Container, NetworkEvent};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// How often the socket tables are read.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Sockets remembered at most (beyond, new ones are not reported).
const MAX_SOCKETS: usize = 65_536;
/// Listening ports remembered per namespace at most.
const MAX_LISTENING: usize = 1024;
/// `CLOSE_WAIT`: the peer closed, this end has not yet — still open here.
const TCP_CLOSE_WAIT: u8 = 8;
/// States past the end of a connection: `TIME_WAIT` and `CLOSE`.
const TCP_TIME_WAIT: u8 = 6;
const TCP_CLOSE: u8 = 7;

/// A socket reported as open, remembered until it closes.
#[derive(Debug)]
struct Open {
    netns: u64,
    local: SocketAddr,
    remote: Option<SocketAddr>,
    pid: u32,
    container: Option<Arc<Container>>,
}

/// Who holds a socket: the pid and its container (`None`: a host process).
pub type Owner = (u32, Option<Arc<Container>>);

/// The open sockets of the last poll, by inode.
#[derive(Debug, Default)]
pub struct SocketPoll {
    open: FastMap<u64, Open>,
    /// Ports each namespace has been seen listening on: a server that stops
    /// listening once it accepted (`nc -l`) still accepted on its port.
    listened: FastMap<u64, Vec<u16>>,
}

impl SocketPoll {
    /// Remembers a socket reported some other way (at start, as pre-existing),
    /// so that only its close is reported.
    pub fn remember(&mut self, netns: u64, socket: &TcpSocket, kind: Kind, owner: Owner) {
        if socket.inode == 0 || self.open.len() >= MAX_SOCKETS {
            return;
        }
        self.open.insert(
            socket.inode,
            Open {
                netns,
                local: socket.local,
                remote: (kind != Kind::Listen).then_some(socket.remote),
                pid: owner.0,
                container: owner.1,
            },
        );
    }

    /// One poll: `tables` holds the sockets of every namespace observed now;
    /// `owner(netns, inode)` finds who holds a new socket (`None`: nobody
    /// observed, e.g. a host process sharing the namespace — not reported).
    /// Remembered sockets of a namespace not in `tables` are closed.
    pub fn round(
        &mut self,
        tables: &FastMap<u64, Vec<TcpSocket>>,
        mut owner: impl FnMut(u64, u64) -> Option<Owner>,
        now_unix_ns: i64,
    ) -> Vec<NetworkEvent> {
        let event = |kind: Kind, open: &Open| NetworkEvent {
            container: open.container.clone(),
            raw: NetworkRaw {
                time_unix_ns: now_unix_ns,
                pid: open.pid,
                kind,
                local: open.local,
                remote: open.remote,
                bytes_sent: 0,
                bytes_received: 0,
                cgroup_id: 0,
                pre_existing: false,
            },
        };
        let mut out = Vec::new();
        let mut still_open: FastMap<u64, ()> = FastMap::default();
        for (&netns, sockets) in tables {
            let listening = self.listened.entry(netns).or_default();
            for s in sockets.iter().filter(|s| s.state == TCP_LISTEN) {
                if !listening.contains(&s.local.port()) && listening.len() < MAX_LISTENING {
                    listening.push(s.local.port());
                }
            }
            let listening = listening.clone();
            for s in sockets {
                if s.inode == 0 || matches!(s.state, TCP_TIME_WAIT | TCP_CLOSE) {
                    continue;
                }
                if self.open.contains_key(&s.inode) {
                    still_open.insert(s.inode, ());
                    continue;
                }
                let kind = match s.state {
                    TCP_LISTEN => Kind::Listen,
                    TCP_ESTABLISHED | TCP_CLOSE_WAIT if listening.contains(&s.local.port()) => Kind::Accept,
                    TCP_ESTABLISHED | TCP_CLOSE_WAIT => Kind::Connect,
                    // Still connecting, or already closing: not (yet) a connection.
                    _ => continue,
                };
                if self.open.len() >= MAX_SOCKETS {
                    continue;
                }
                let Some(holder) = owner(netns, s.inode) else {
                    continue;
                };
                self.remember(netns, s, kind, holder);
                if let Some(open) = self.open.get(&s.inode) {
                    out.push(event(kind, open));
                    still_open.insert(s.inode, ());
                }
            }
        }
        let closed: Vec<u64> = self
            .open
            .iter()
            .filter(|(inode, o)| !still_open.contains_key(inode) || !tables.contains_key(&o.netns))
            .map(|(inode, _)| *inode)
            .collect();
        self.listened.retain(|ns, _| tables.contains_key(ns));
        for inode in closed {
            if let Some(open) = self.open.remove(&inode) {
                out.push(event(Kind::Close, &open));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::container;

    fn socket(local: &str, remote: &str, state: u8, inode: u64) -> TcpSocket {
        TcpSocket {
            local: local.parse().unwrap(),
            remote: remote.parse().unwrap(),
            state,
            inode,
        }
    }

    fn sorted(mut v: Vec<(Kind, u16, u16)>) -> Vec<(Kind, u16, u16)> {
        v.sort_by_key(|(kind, l, r)| (*kind as i32, *l, *r));
        v
    }

    fn kinds(events: &[NetworkEvent]) -> Vec<(Kind, u16, u16)> {
        sorted(
            events
                .iter()
                .map(|e| (e.raw.kind, e.raw.local.port(), e.raw.remote.map_or(0, |r| r.port())))
                .collect(),
        )
    }

    #[test]
    fn differences_between_polls_become_listen_accept_connect_and_close() {
        let c = container("c1");
        let mut poll = SocketPoll::default();
        let owner = |_, inode| Some((100 + u32::try_from(inode).unwrap(), Some(c.clone())));
        let mut tables = FastMap::default();
        tables.insert(
            7,
            vec![
                socket("0.0.0.0:8080", "0.0.0.0:0", TCP_LISTEN, 1),
                socket("10.0.0.2:8080", "10.0.0.3:40000", TCP_ESTABLISHED, 2),
                socket("10.0.0.2:41000", "10.0.0.9:443", TCP_ESTABLISHED, 3),
                socket("10.0.0.2:41001", "10.0.0.9:443", 2, 4), // SYN_SENT: not yet
                socket("10.0.0.2:41002", "10.0.0.9:443", TCP_TIME_WAIT, 0),
            ],
        );
        let first = poll.round(&tables, owner, 1);
        assert_eq!(
            kinds(&first),
            sorted(vec![
                (Kind::Connect, 41000, 443),
                (Kind::Accept, 8080, 40000),
                (Kind::Listen, 8080, 0)
            ])
        );
        assert!(first.iter().all(|e| e.raw.pid >= 101 && e.container.is_some()));
        // Same tables: nothing new. The connect finished connecting meanwhile.
        tables.get_mut(&7).unwrap()[3].state = TCP_ESTABLISHED;
        let second = poll.round(&tables, owner, 2);
        assert_eq!(kinds(&second), vec![(Kind::Connect, 41001, 443)]);
        // The accepted connection ends (TIME_WAIT keeps no inode): its close.
        tables.get_mut(&7).unwrap().remove(1);
        let third = poll.round(&tables, owner, 3);
        assert_eq!(kinds(&third), vec![(Kind::Close, 8080, 40000)]);
        assert_eq!(third[0].raw.pid, 102);
        // The namespace is gone: everything still open closes.
        let fourth = poll.round(&FastMap::default(), owner, 4);
        assert_eq!(fourth.len(), 3, "{fourth:?}");
        assert!(fourth.iter().all(|e| e.raw.kind == Kind::Close));
        assert!(poll.round(&FastMap::default(), owner, 5).is_empty());
    }

    #[test]
    fn a_connection_on_a_port_that_was_listened_on_is_an_accept() {
        let c = container("c1");
        let mut poll = SocketPoll::default();
        let owner = |_, inode| Some((u32::try_from(inode).unwrap(), Some(c.clone())));
        let mut tables = FastMap::default();
        tables.insert(7, vec![socket("0.0.0.0:8080", "0.0.0.0:0", TCP_LISTEN, 1)]);
        poll.round(&tables, owner, 1);
        // `nc -l` stops listening once it accepted.
        tables.insert(7, vec![socket("10.0.0.2:8080", "10.0.0.3:40000", TCP_ESTABLISHED, 2)]);
        let events = poll.round(&tables, owner, 2);
        assert_eq!(
            kinds(&events),
            sorted(vec![(Kind::Accept, 8080, 40000), (Kind::Close, 8080, 0)])
        );
    }

    #[test]
    fn sockets_without_an_observed_owner_and_remembered_ones_are_not_reported() {
        let c = container("c1");
        let mut poll = SocketPoll::default();
        let known = socket("0.0.0.0:22", "0.0.0.0:0", TCP_LISTEN, 9);
        poll.remember(7, &known, Kind::Listen, (5, Some(c)));
        let mut tables = FastMap::default();
        tables.insert(
            7,
            vec![known, socket("10.0.0.2:5000", "10.0.0.3:80", TCP_ESTABLISHED, 10)],
        );
        assert!(poll.round(&tables, |_, _| None, 1).is_empty());
        tables.get_mut(&7).unwrap().remove(0);
        let closed = poll.round(&tables, |_, _| None, 2);
        assert_eq!(kinds(&closed), vec![(Kind::Close, 22, 0)]);
        assert_eq!(closed[0].raw.remote, None);
    }
}
