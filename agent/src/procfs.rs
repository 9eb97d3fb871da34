//! Reads what the kernel tells about a process through `/proc`, from the host's
//! pid namespace. Contents are attacker-controlled (a process chooses its argv
//! and can rename its binary); they are kept as raw bytes and never interpreted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Which cgroup a process is in, as it was learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// The text of `/proc/PID/cgroup`: one line per hierarchy.
    Proc(String),
    /// The path the eBPF sensor read in the kernel (`/a/b/c`), in the
    /// hierarchy it reads (the v2 one, else the v1 memory controller's).
    Kernel(String),
}

impl Default for Cgroup {
    fn default() -> Cgroup {
        Cgroup::Proc(String::new())
    }
}

impl Cgroup {
    /// The container the cgroup names, if any.
    pub fn container(&self) -> Option<crate::attribute::ContainerKey> {
        match self {
            Cgroup::Proc(text) => crate::attribute::from_proc_cgroup(text),
            Cgroup::Kernel(path) => crate::attribute::parse_cgroup_path(path),
        }
    }
}

/// A process as `/proc` shows it at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    pub exe: Option<Bytes>,
    pub argv: Vec<Bytes>,
    pub cwd: Option<Bytes>,
    /// The cgroup it is in.
    pub cgroup: Cgroup,
    /// Kernel id of the cgroup `cgroup` names (eBPF sensor only; 0 unknown).
    pub cgroup_id: u64,
    /// The executable lives in the container's writable layer: created or
    /// modified after the container started (eBPF sensor only).
    pub drift: bool,
    /// Its standard input or output is a socket (a network connection, or
    /// a local socket): with a shell, the shape of a reverse shell.
    pub stdio_socket: bool,
}

/// Longest argv kept, in bytes; a longer command line is cut (and the cut marked).
pub const MAX_ARGV_BYTES: usize = 64 * 1024;

/// Appended to an argv that was cut.
pub const TRUNCATED_MARK: &[u8] = b"...[truncated]";

/// Reads a process from `root` (normally `/proc`). Fails when it has exited.
pub fn read_process(root: &Path, pid: u32) -> io::Result<ProcessInfo> {
    let dir = root.join(pid.to_string());
    // Order matters when racing a short-lived process: the command line, the
    // executable and the working directory vanish as soon as it exits; status
    // and cgroup stay readable until its parent reaps it.
    let cmdline = fs::read(dir.join("cmdline"))?;
    let exe = read_link_bytes(&dir.join("exe"));
    let cwd = read_link_bytes(&dir.join("cwd"));
    let stdio_socket = [0, 1]
        .iter()
        .any(|fd| read_link_bytes(&dir.join("fd").join(fd.to_string())).is_some_and(|l| l.starts_with(b"socket:")));
    let status = fs::read_to_string(dir.join("status"))?;
    let cgroup = fs::read_to_string(dir.join("cgroup"))?;
    let (ppid, uid, gid) = parse_status(&status);
    Ok(ProcessInfo {
        pid,
        ppid,
        uid,
        gid,
        exe,
        argv: split_cmdline(&cmdline),
        cwd,
        cgroup: Cgroup::Proc(cgroup),
        cgroup_id: 0,
        drift: false,
        stdio_socket,
    })
}

/// The executable of `pid`, if it can still be read.
pub fn exe_of(root: &Path, pid: u32) -> Option<Bytes> {
    read_link_bytes(&root.join(pid.to_string()).join("exe"))
}

fn read_link_bytes(p: &Path) -> Option<Bytes> {
    use std::os::unix::ffi::OsStringExt;
    fs::read_link(p)
        .ok()
        .map(|t: PathBuf| Bytes::from(t.into_os_string().into_vec()))
}

/// Splits a NUL-separated command line, capped at [`MAX_ARGV_BYTES`].
pub fn split_cmdline(raw: &[u8]) -> Vec<Bytes> {
    let (raw, cut) = if raw.len() > MAX_ARGV_BYTES {
        (&raw[..MAX_ARGV_BYTES], true)
    } else {
        (raw, false)
    };
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    // One copy of the whole command line; the arguments are slices of it.
    let all = Bytes::copy_from_slice(raw);
    let mut start = 0;
    let mut args: Vec<Bytes> = raw
        .split(|b| *b == 0)
        .map(|arg| {
            let slice = all.slice(start..start + arg.len());
            start += arg.len() + 1;
            slice
        })
        .collect();
    if cut {
        args.push(Bytes::from_static(TRUNCATED_MARK));
    }
    args
}

/// `(ppid, real uid, real gid)` from `/proc/PID/status`.
fn parse_status(status: &str) -> (u32, u32, u32) {
    let mut out = (0, 0, 0);
    for line in status.lines() {
        let first = |rest: &str| rest.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0);
        if let Some(rest) = line.strip_prefix("PPid:") {
            out.0 = first(rest);
        } else if let Some(rest) = line.strip_prefix("Uid:") {
            out.1 = first(rest);
        } else if let Some(rest) = line.strip_prefix("Gid:") {
            out.2 = first(rest);
        }
    }
    out
}

/// One line of `/proc/PID/net/tcp` or `tcp6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSocket {
    pub local: std::net::SocketAddr,
    pub remote: std::net::SocketAddr,
    /// Kernel TCP state (1 established, 10 listen, ...).
    pub state: u8,
    pub inode: u64,
}

pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_LISTEN: u8 = 10;

/// The TCP sockets (IPv4 and IPv6) of the network namespace `pid` is in.
pub fn tcp_sockets(root: &Path, pid: u32) -> io::Result<Vec<TcpSocket>> {
    let dir = root.join(pid.to_string()).join("net");
    let mut out = parse_tcp_table(&fs::read_to_string(dir.join("tcp"))?);
    // IPv6 may be disabled: then there is no tcp6 table.
    if let Ok(t) = fs::read_to_string(dir.join("tcp6")) {
        out.extend(parse_tcp_table(&t));
    }
    Ok(out)
}

/// Parses a `/proc/net/tcp{,6}` table; lines that do not parse are skipped.
/// An IPv6 socket talking IPv4 (v4-mapped `::ffff:a.b.c.d` at both ends) is
/// shown as IPv4, as the eBPF sensor shows it.
pub fn parse_tcp_table(text: &str) -> Vec<TcpSocket> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (mut local, mut remote) = (parse_hex_endpoint(f.get(1)?)?, parse_hex_endpoint(f.get(2)?)?);
            if local.ip().to_canonical().is_ipv4() && remote.ip().to_canonical().is_ipv4() {
                local.set_ip(local.ip().to_canonical());
                remote.set_ip(remote.ip().to_canonical());
            }
            Some(TcpSocket {
                local,
                remote,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// `0100007F:1F90` → 127.0.0.1:8080. The kernel prints each 32-bit word of the
/// address as a host-order number, so each word's bytes are reversed here
/// (little-endian hosts).
fn parse_hex_endpoint(s: &str) -> Option<std::net::SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let mut bytes = Vec::with_capacity(16);
    for w in &words {
        bytes.extend_from_slice(&w.to_le_bytes());
    }
    let ip = match (addr.len(), bytes.len()) {
        (8, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        (32, 16) => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(std::net::SocketAddr::new(ip, port))
}

/// Inodes of the sockets `pid` has open (its `fd/` links `socket:[N]`).
pub fn socket_inodes(root: &Path, pid: u32) -> Vec<u64> {
    let Ok(dir) = fs::read_dir(root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter_map(|t| t.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// Inode number of the network namespace `pid` is in.
pub fn net_namespace(root: &Path, pid: u32) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(root.join(pid.to_string()).join("ns/net"))?.ino())
}

/// Every pid under `root`, in ascending order.
pub fn pids(root: &Path) -> io::Result<Vec<u32>> {
    let mut out: Vec<u32> = fs::read_dir(root)?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// This host's name (from the kernel), or `localhost`.
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Offset to add to a `CLOCK_MONOTONIC` nanosecond reading (what the proc
/// connector reports) to get Unix time in nanoseconds.
pub fn monotonic_to_unix_offset_ns() -> i64 {
    clock_to_unix_offset_ns(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` (eBPF timestamps are boot time).
pub fn boottime_to_unix_offset_ns() -> i64 {
    clock_to_unix_offset_ns(libc::CLOCK_BOOTTIME)
}

/// `CLOCK_REALTIME - clock`, in nanoseconds.
fn clock_to_unix_offset_ns(clock: libc::clockid_t) -> i64 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec and the clock ids are constants.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    read(libc::CLOCK_REALTIME) - read(clock)
}

/// Current Unix time in nanoseconds.
pub fn now_unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_with_a_socket_on_stdin_is_flagged() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut on_socket = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .unwrap();
        let mut plain = std::process::Command::new("sleep")
            .arg("5")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let flagged = read_process(Path::new("/proc"), on_socket.id()).unwrap().stdio_socket;
        let unflagged = read_process(Path::new("/proc"), plain.id()).unwrap().stdio_socket;
        for c in [&mut on_socket, &mut plain] {
            // Ignored: cleanup only.
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(ours);
        assert!(flagged && !unflagged);
    }

    #[test]
    fn cmdline_split() {
        assert_eq!(
            split_cmdline(b"cat\0/etc/hostname\0"),
            vec![Bytes::from("cat"), Bytes::from("/etc/hostname")]
        );
        assert_eq!(split_cmdline(b""), Vec::<Bytes>::new());
        assert_eq!(
            split_cmdline(b"a\0\0b\0"),
            vec![Bytes::from("a"), Bytes::new(), Bytes::from("b")]
        );
        let long = vec![b'x'; MAX_ARGV_BYTES + 10];
        let args = split_cmdline(&long);
        assert_eq!(args.len(), 2);
        assert_eq!(args[0].len(), MAX_ARGV_BYTES);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tcat\nPPid:\t42\nUid:\t1000\t1000\t1000\t1000\nGid:\t7\t7\t7\t7\n";
        assert_eq!(parse_status(s), (42, 1000, 7));
    }

    #[test]
    fn tcp_tables_parse_both_families() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0\n   1: 0200580A:A028 0300580A:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 777 1\ngarbage line\n";
        let t = parse_tcp_table(v4);
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(t[0].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((t[0].state, t[0].inode), (TCP_LISTEN, 12345));
        assert_eq!(t[1].local, "10.88.0.2:41000".parse().unwrap());
        assert_eq!(t[1].remote, "10.88.0.3:8080".parse().unwrap());
        assert_eq!(t[1].state, TCP_ESTABLISHED);
        let v6 = "header\n   0: 00000000000000000000000001000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1\n   1: 0000000000000000FFFF00000200580A:A028 0000000000000000FFFF00000300580A:1F90 01 00000000:00000000 00:00000000 00000000     0        0 98 1\n";
        let t = parse_tcp_table(v6);
        assert_eq!(t[0].local, "[::1]:443".parse().unwrap());
        assert_eq!(t[0].remote, "[::]:0".parse().unwrap());
        // v4-mapped at both ends: shown as IPv4.
        assert_eq!(t[1].local, "10.88.0.2:41000".parse().unwrap());
        assert_eq!(t[1].remote, "10.88.0.3:8080".parse().unwrap());
    }

    #[test]
    fn reads_own_sockets() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let me = std::process::id();
        let table = tcp_sockets(Path::new("/proc"), me).unwrap();
        let ours = table
            .iter()
            .find(|s| s.local.port() == port && s.state == TCP_LISTEN)
            .unwrap();
        assert!(socket_inodes(Path::new("/proc"), me).contains(&ours.inode));
        assert!(net_namespace(Path::new("/proc"), me).unwrap() > 0);
        assert!(pids(Path::new("/proc")).unwrap().contains(&me));
    }

    #[test]
    fn reads_own_process() {
        let me = read_process(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.ppid > 0);
        assert!(!me.argv.is_empty());
        assert!(me.exe.is_some());
        assert!(matches!(&me.cgroup, Cgroup::Proc(text) if !text.is_empty()));
        assert!(read_process(Path::new("/proc"), u32::MAX - 1).is_err());
    }
}
