//! Per-container resource counters from the cgroup files (v1 and v2) and the
//! container's network namespace (`/proc/PID/net/dev`). Missing files read as
//! 0: not every controller is enabled everywhere.

use std::fs;
use std::path::{Path, PathBuf};

/// One container's counters at one instant (see `ResourceSample` in
/// ingest.proto for units; cumulative ones are totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub cpu_usage_ns: u64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    pub pids: u64,
    pub pids_limit: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
}

/// Limits at or above this are "no limit" (v1 prints a huge page-aligned number).
const NO_LIMIT: u64 = 1 << 60;

/// Reads the counters of the cgroup(s) named in `cgroup_text` (the content of
/// `/proc/PID/cgroup`) under `root` (normally `/sys/fs/cgroup`), and the
/// network counters of `pid`'s namespace under `proc_root`.
pub fn read(root: &Path, cgroup_text: &str, proc_root: &Path, pid: u32) -> Counters {
    let mut c = Counters::default();
    let pure_v2 = root.join("cgroup.controllers").exists();
    for line in cgroup_text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if hierarchy == "0" && pure_v2 {
            read_v2(&root.join(rel), &mut c);
        } else if !controllers.is_empty() {
            for controller in controllers.split(',') {
                let dir = [root.join(controllers).join(rel), root.join(controller).join(rel)]
                    .into_iter()
                    .find(|d| d.exists());
                if let Some(dir) = dir {
                    read_v1(controller, &dir, &mut c);
                }
            }
        }
    }
    if let Ok(dev) = fs::read_to_string(proc_root.join(pid.to_string()).join("net/dev")) {
        add_net_dev(&dev, &mut c);
    }
    c
}

fn number(p: PathBuf) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn limit(p: PathBuf) -> u64 {
    number(p).filter(|v| *v < NO_LIMIT).unwrap_or(0)
}

fn read_v1(controller: &str, dir: &Path, c: &mut Counters) {
    match controller {
        "cpuacct" => c.cpu_usage_ns = number(dir.join("cpuacct.usage")).unwrap_or(0),
        "memory" => {
            c.memory_bytes = number(dir.join("memory.usage_in_bytes")).unwrap_or(0);
            c.memory_limit_bytes = limit(dir.join("memory.limit_in_bytes"));
        }
        "blkio" => {
            if let Ok(t) = fs::read_to_string(dir.join("blkio.throttle.io_service_bytes")) {
                for line in t.lines() {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    if let [_, op, v] = f.as_slice() {
                        let v: u64 = v.parse().unwrap_or(0);
                        match *op {
                            "Read" => c.io_read_bytes += v,
                            "Write" => c.io_write_bytes += v,
                            _ => {}
                        }
                    }
                }
            }
        }
        "pids" => {
            c.pids = number(dir.join("pids.current")).unwrap_or(0);
            c.pids_limit = number(dir.join("pids.max")).unwrap_or(0);
        }
        _ => {}
    }
}

fn read_v2(dir: &Path, c: &mut Counters) {
    if let Ok(t) = fs::read_to_string(dir.join("cpu.stat")) {
        for line in t.lines() {
            if let Some(v) = line.strip_prefix("usage_usec ") {
                c.cpu_usage_ns = v.trim().parse::<u64>().unwrap_or(0) * 1000;
            }
        }
    }
    c.memory_bytes = number(dir.join("memory.current")).unwrap_or(0);
    c.memory_limit_bytes = limit(dir.join("memory.max"));
    if let Ok(t) = fs::read_to_string(dir.join("io.stat")) {
        for field in t.split_whitespace() {
            if let Some(v) = field.strip_prefix("rbytes=") {
                c.io_read_bytes += v.parse().unwrap_or(0);
            } else if let Some(v) = field.strip_prefix("wbytes=") {
                c.io_write_bytes += v.parse().unwrap_or(0);
            }
        }
    }
    c.pids = number(dir.join("pids.current")).unwrap_or(0);
    c.pids_limit = number(dir.join("pids.max")).unwrap_or(0);
}

/// Adds every interface but loopback from a `/proc/net/dev` table.
fn add_net_dev(text: &str, c: &mut Counters) {
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        if f.len() >= 10 {
            c.net_rx_bytes += f[0];
            c.net_rx_packets += f[1];
            c.net_tx_bytes += f[8];
            c.net_tx_packets += f[9];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_files_and_net_dev() {
        let dir = std::env::temp_dir().join(format!("gh-resources-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let w = |p: &str, v: &str| {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, v).unwrap();
        };
        // v1, controllers mounted apart (cpu,cpuacct together).
        w("v1/cpu,cpuacct/c1/cpuacct.usage", "123456789\n");
        w("v1/memory/c1/memory.usage_in_bytes", "4096\n");
        w("v1/memory/c1/memory.limit_in_bytes", "9223372036854771712\n");
        w(
            "v1/blkio/c1/blkio.throttle.io_service_bytes",
            "8:0 Read 100\n8:0 Write 50\n8:16 Read 1\nTotal 151\n",
        );
        w("v1/pids/c1/pids.current", "3\n");
        w("v1/pids/c1/pids.max", "max\n");
        w(
            "proc/7/net/dev",
            "Inter-|   Receive |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes packets\n    lo: 999 9 0 0 0 0 0 0 999 9 0 0 0 0 0 0\n  eth0: 1000 10 0 0 0 0 0 0 2000 20 0 0 0 0 0 0\n",
        );
        let text = "5:cpu,cpuacct:/c1\n4:memory:/c1\n7:blkio:/c1\n8:pids:/c1\n1:name=systemd:/c1\n0::/\n";
        let c = read(&dir.join("v1"), text, &dir.join("proc"), 7);
        assert_eq!(
            c,
            Counters {
                cpu_usage_ns: 123_456_789,
                memory_bytes: 4096,
                memory_limit_bytes: 0,
                io_read_bytes: 101,
                io_write_bytes: 50,
                pids: 3,
                pids_limit: 0,
                net_rx_bytes: 1000,
                net_tx_bytes: 2000,
                net_rx_packets: 10,
                net_tx_packets: 20,
            }
        );
        // v2.
        w("v2/cgroup.controllers", "cpu memory io pids\n");
        w("v2/k/c2/cpu.stat", "usage_usec 250\nuser_usec 200\n");
        w("v2/k/c2/memory.current", "8192\n");
        w("v2/k/c2/memory.max", "1048576\n");
        w(
            "v2/k/c2/io.stat",
            "8:0 rbytes=10 wbytes=20 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n",
        );
        w("v2/k/c2/pids.current", "5\n");
        w("v2/k/c2/pids.max", "100\n");
        let c = read(&dir.join("v2"), "0::/k/c2\n", &dir.join("proc"), 8);
        assert_eq!(
            (
                c.cpu_usage_ns,
                c.memory_bytes,
                c.memory_limit_bytes,
                c.io_read_bytes,
                c.io_write_bytes,
                c.pids,
                c.pids_limit
            ),
            (250_000, 8192, 1_048_576, 11, 22, 5, 100)
        );
        assert_eq!(c.net_rx_bytes, 0, "no net/dev for pid 8");
        let _ = fs::remove_dir_all(&dir);
    }
}
