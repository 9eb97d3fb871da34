//! Reads what the kernel tells about a process through `/proc`, from the host's
//! pid namespace. Contents are attacker-controlled (a process chooses its argv
//! and can rename its binary); they are kept as raw bytes and never interpreted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

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
    /// Contents of `/proc/PID/cgroup`.
    pub cgroup: String,
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
        cgroup,
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
    let mut args: Vec<Bytes> = raw.split(|b| *b == 0).map(Bytes::copy_from_slice).collect();
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
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec and the clock ids are constants.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` (eBPF timestamps are boot time).
pub fn boottime_to_unix_offset_ns() -> i64 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec and the clock ids are constants.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME)
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
    fn reads_own_process() {
        let me = read_process(Path::new("/proc"), std::process::id()).unwrap();
        assert_eq!(me.pid, std::process::id());
        assert!(me.ppid > 0);
        assert!(!me.argv.is_empty());
        assert!(me.exe.is_some());
        assert!(!me.cgroup.is_empty());
        assert!(read_process(Path::new("/proc"), u32::MAX - 1).is_err());
    }
}
