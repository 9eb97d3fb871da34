//! The netlink process connector (`CONFIG_PROC_EVENTS`): the kernel multicasts a
//! message for every fork, exec and exit. It carries only pids, so on exec the
//! process is read from `/proc` at once, on this thread, before it can exit.
//! Needs root (CAP_NET_ADMIN).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ExecRaw, ExitRaw, ForkRaw, RawEvent, SensorStats, decode_wait_status};
use crate::procfs;

const NETLINK_CONNECTOR: libc::c_int = 11;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const NLMSG_HDRLEN: usize = 16;
const CN_MSG_LEN: usize = 20;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Receive buffer asked for: bursts of exec storms fit without overflow.
const RCVBUF_BYTES: libc::c_int = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("netlink proc connector unavailable (needs root and CONFIG_PROC_EVENTS): {op}: {source}")]
    Setup {
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A subscribed proc connector socket.
#[derive(Debug)]
pub struct ProcConnector {
    fd: OwnedFd,
}

fn check(op: &'static str, rc: libc::c_int) -> Result<libc::c_int, ConnectorError> {
    if rc < 0 {
        Err(ConnectorError::Setup {
            op,
            source: io::Error::last_os_error(),
        })
    } else {
        Ok(rc)
    }
}

impl ProcConnector {
    /// Opens the socket and subscribes to process events.
    pub fn open() -> Result<ProcConnector, ConnectorError> {
        // SAFETY: plain socket(2) call with constant arguments.
        let raw = check("socket", unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                NETLINK_CONNECTOR,
            )
        })?;
        // SAFETY: `raw` is a freshly created, valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let set = |opt: libc::c_int, value: *const libc::c_void, len: usize| {
            // SAFETY: `value` points to `len` readable bytes for the duration of the call.
            unsafe { libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, opt, value, len as libc::socklen_t) }
        };
        let size = RCVBUF_BYTES;
        if set(libc::SO_RCVBUFFORCE, (&raw const size).cast(), size_of_val(&size)) < 0 {
            // Without CAP_NET_ADMIN fall back to the capped variant.
            set(libc::SO_RCVBUF, (&raw const size).cast(), size_of_val(&size));
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 250_000,
        };
        check(
            "setsockopt(SO_RCVTIMEO)",
            set(libc::SO_RCVTIMEO, (&raw const timeout).cast(), size_of_val(&timeout)),
        )?;
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = CN_IDX_PROC;
        // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
        check("bind", unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&raw const addr).cast(),
                size_of_val(&addr) as libc::socklen_t,
            )
        })?;
        let msg = listen_message();
        // SAFETY: `msg` is a readable buffer of `msg.len()` bytes.
        check("send(listen)", unsafe {
            libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) as libc::c_int
        })?;
        Ok(ProcConnector { fd })
    }

    /// Reads events until `cancel`, reading `/proc` for every exec and handing
    /// events to `tx` without ever blocking (full queue: drop and count).
    pub fn run(
        self,
        proc_root: PathBuf,
        tx: mpsc::Sender<RawEvent>,
        stats: Arc<SensorStats>,
        cancel: CancellationToken,
    ) {
        raise_priority();
        let offset = procfs::monotonic_to_unix_offset_ns();
        let mut buf = vec![0u8; 64 * 1024];
        while !cancel.is_cancelled() {
            // SAFETY: `buf` is writable for `buf.len()` bytes.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN | libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        stats.kernel_overflows.add(1);
                        tracing::warn!("proc connector socket overflowed, kernel dropped events");
                        continue;
                    }
                    _ => {
                        tracing::error!(error = %err, "proc connector receive failed, sensor stops");
                        return;
                    }
                }
            }
            let len = usize::try_from(n).unwrap_or(0);
            for event in parse_datagram(&buf[..len]) {
                stats.events.add(1);
                let raw = match event {
                    Parsed::Exec { ts, pid } => {
                        let info = procfs::read_process(&proc_root, pid).ok();
                        if info.is_none() {
                            stats.exec_unreadable.add(1);
                        }
                        let parent_exe = info.as_ref().and_then(|i| procfs::exe_of(&proc_root, i.ppid));
                        RawEvent::Exec(ExecRaw {
                            time_unix_ns: mono_to_unix(ts, offset),
                            pid,
                            info,
                            parent_exe,
                        })
                    }
                    Parsed::Fork { ts, parent, child } => RawEvent::Fork(ForkRaw {
                        time_unix_ns: mono_to_unix(ts, offset),
                        parent_pid: parent,
                        child_pid: child,
                    }),
                    Parsed::Exit { ts, pid, status } => RawEvent::Exit(ExitRaw {
                        time_unix_ns: mono_to_unix(ts, offset),
                        pid,
                        code: decode_wait_status(status),
                    }),
                };
                if tx.try_send(raw).is_err() {
                    stats.queue_drops.add(1);
                }
            }
        }
    }
}

/// Runs this thread under `SCHED_FIFO` (lowest real-time priority) when
/// allowed: an exec'ing process can exit within a few hundred microseconds, and
/// its `/proc` entry with it, so the reader must wake before the other work on
/// a busy host. The thread only blocks on the socket and reads a few small
/// files per event; the kernel's real-time throttling (95 % by default) keeps
/// even an exec storm from starving the host.
fn raise_priority() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: plain syscall on the calling thread (0) with a valid param struct.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        tracing::debug!("sensor thread runs with SCHED_FIFO priority 1");
    } else {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "cannot raise the sensor thread's priority; short-lived execs may be missed under load"
        );
    }
}

fn mono_to_unix(ts: u64, offset: i64) -> i64 {
    i64::try_from(ts).unwrap_or(i64::MAX).saturating_add(offset)
}

/// `nlmsghdr` + `cn_msg` + `PROC_CN_MCAST_LISTEN`.
fn listen_message() -> Vec<u8> {
    let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // pid
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes()); // seq
    m.extend_from_slice(&0u32.to_ne_bytes()); // ack
    m.extend_from_slice(&4u16.to_ne_bytes()); // len
    m.extend_from_slice(&0u16.to_ne_bytes()); // flags
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

/// A decoded `struct proc_event` of interest.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Exec { ts: u64, pid: u32 },
    Fork { ts: u64, parent: u32, child: u32 },
    Exit { ts: u64, pid: u32, status: u32 },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at + 8)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_ne_bytes(a))
}

/// Parses every netlink message in a datagram; truncated or foreign messages
/// are skipped. Thread events (pid ≠ tgid) are ignored: processes only.
fn parse_datagram(mut b: &[u8]) -> Vec<Parsed> {
    let mut out = Vec::new();
    while let Some(len) = u32_at(b, 0).map(|l| l as usize) {
        if len < NLMSG_HDRLEN || len > b.len() {
            break;
        }
        let msg = &b[..len];
        if let Some(p) = parse_message(msg) {
            out.push(p);
        }
        let aligned = (len + 3) & !3;
        b = b.get(aligned..).unwrap_or_default();
    }
    out
}

fn parse_message(msg: &[u8]) -> Option<Parsed> {
    let cn = NLMSG_HDRLEN;
    if u32_at(msg, cn)? != CN_IDX_PROC || u32_at(msg, cn + 4)? != CN_VAL_PROC {
        return None;
    }
    let ev = cn + CN_MSG_LEN;
    let what = u32_at(msg, ev)?;
    let ts = u64_at(msg, ev + 8)?;
    let data = ev + 16;
    match what {
        PROC_EVENT_EXEC => {
            let (pid, tgid) = (u32_at(msg, data)?, u32_at(msg, data + 4)?);
            (pid == tgid).then_some(Parsed::Exec { ts, pid: tgid })
        }
        PROC_EVENT_FORK => {
            let parent_tgid = u32_at(msg, data + 4)?;
            let (child_pid, child_tgid) = (u32_at(msg, data + 8)?, u32_at(msg, data + 12)?);
            (child_pid == child_tgid).then_some(Parsed::Fork {
                ts,
                parent: parent_tgid,
                child: child_tgid,
            })
        }
        PROC_EVENT_EXIT => {
            let (pid, tgid) = (u32_at(msg, data)?, u32_at(msg, data + 4)?);
            let status = u32_at(msg, data + 8)?;
            (pid == tgid).then_some(Parsed::Exit { ts, pid: tgid, status })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, ts: u64, data: &[u32]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + CN_MSG_LEN + 16 + data.len() * 4;
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&[0u8; 12]);
        m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        m.extend_from_slice(&[0u8; 12]);
        m.extend_from_slice(&what.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&ts.to_ne_bytes());
        for d in data {
            m.extend_from_slice(&d.to_ne_bytes());
        }
        m
    }

    #[test]
    fn parses_exec_fork_exit_and_skips_threads() {
        let mut dgram = message(PROC_EVENT_EXEC, 5, &[10, 10]);
        dgram.extend(message(PROC_EVENT_FORK, 6, &[10, 10, 11, 11]));
        dgram.extend(message(PROC_EVENT_FORK, 7, &[10, 10, 12, 10])); // a thread
        dgram.extend(message(PROC_EVENT_EXIT, 8, &[11, 11, 256, 17]));
        dgram.extend(message(0x4, 9, &[1, 1, 0, 0])); // uid change: ignored
        assert_eq!(
            parse_datagram(&dgram),
            vec![
                Parsed::Exec { ts: 5, pid: 10 },
                Parsed::Fork {
                    ts: 6,
                    parent: 10,
                    child: 11
                },
                Parsed::Exit {
                    ts: 8,
                    pid: 11,
                    status: 256
                },
            ]
        );
    }

    #[test]
    fn truncated_input_is_skipped_without_panic() {
        let m = message(PROC_EVENT_EXEC, 5, &[10, 10]);
        for cut in 0..m.len() {
            let _ = parse_datagram(&m[..cut]);
        }
        assert!(parse_datagram(&[0xff; 3]).is_empty());
    }

    #[test]
    fn wait_status() {
        assert_eq!(decode_wait_status(0), 0);
        assert_eq!(decode_wait_status(1 << 8), 1);
        assert_eq!(decode_wait_status(9), -9);
    }

    #[test]
    fn listen_message_layout() {
        let m = listen_message();
        assert_eq!(m.len(), 40);
        assert_eq!(u32_at(&m, 0), Some(40));
        assert_eq!(u32_at(&m, 36), Some(PROC_CN_MCAST_LISTEN));
    }
}
