//! The live view: one line per new container, per process exec, per TCP
//! socket event, per write to a sensitive file and per resource sample of a
//! container, with every container-supplied field escaped ([`crate::escape`]):
//!
//! ```text
//! 2026-11-28T18:40:01.123Z  container 41ee3b278ccc web-1  image=…  workload=…  host=…
//! 2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  exec pid=7 uid=0 /bin/cat  cat /etc/hostname
//! 2026-11-28T18:40:02.001Z    41ee3b278ccc web-1  exec-in pid=9 uid=0 /bin/sh  sh
//! 2026-11-28T18:40:01.124Z    41ee3b278ccc web-1  connect pid=7 10.0.0.2:43122 -> 93.184.216.34:443
//! 2026-11-28T18:40:01.130Z    41ee3b278ccc web-1  close pid=7 10.0.0.2:43122 -> 93.184.216.34:443 sent 3000 recv 500
//! 2026-11-28T18:40:03.500Z    41ee3b278ccc web-1  write pid=7 /etc/passwd by /bin/busybox
//! 2026-11-28T18:40:03.600Z    41ee3b278ccc web-1  create pid=7 /tmp/x by /bin/busybox
//! 2026-11-28T18:40:03.700Z    41ee3b278ccc web-1  exec (drift) pid=8 uid=0 /tmp/x  /tmp/x
//! 2026-11-28T18:40:10.000Z    41ee3b278ccc web-1  resources mem=34.1MiB/512.0MiB pids=3/100
//! 2026-11-28T18:40:20.000Z    41ee3b278ccc web-1  resources mem=34.2MiB/512.0MiB pids=3/100 cpu=12.5% io=r1.2MiB/w0B net=rx10.0KiB/tx2.0KiB
//! 2026-11-28T18:40:01.123Z  gap 41ee3b278ccc web-1  rate_limited: 1234 events not reported between 18:40:01.123Z and 18:40:02.123Z
//! 2026-11-28T18:40:01.123Z  gap host node-7  queue_full: 80 events not reported between 18:40:01.123Z and 18:40:02.123Z
//! ```
//!
//! Processes already running when the agent started show as `running`, an
//! exec entered from outside the container (or under such a process) as
//! `exec-in`, an exec of a file that is not from the image (created or
//! modified since the container started) with `(drift)`, one whose standard
//! input or output is a socket with `(stdio socket)`; sockets already open
//! at the agent's start end with `(open at start)`. A resource line shows
//! memory and tasks (with their limits, if any) and, from the container's
//! previous sample, CPU use (100% is one core) and the block I/O and network
//! bytes of the interval. A gap (events the agent knows it did not report)
//! is a line of its own, like a new container, dated by the start of its
//! window: what the view shows of that container (of every container, for
//! `gap host`) during the window is incomplete. Syscall profiles are not
//! shown.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use glasshouse_proto::file;
use glasshouse_proto::gaps;
use glasshouse_proto::network::{self, Family};
use glasshouse_proto::process::{Kind, Row, Str};
use glasshouse_proto::resources::{self, Counters};

use crate::escape;

/// Containers remembered for "new container" lines; beyond this the set restarts.
const MAX_REMEMBERED: usize = 16_384;

/// Writes the live view to `out`.
#[derive(Debug)]
pub struct View<W> {
    out: W,
    seen: HashSet<Str>,
    /// The latest resource sample (time, counters) of each container.
    samples: HashMap<Str, (i64, Counters)>,
}

impl<W: Write> View<W> {
    pub fn new(out: W) -> View<W> {
        View {
            out,
            seen: HashSet::new(),
            samples: HashMap::new(),
        }
    }

    /// Writes the "container" line on the first sighting of container `id`;
    /// returns the (escaped) short id and name that start its event lines.
    fn sighting(
        &mut self,
        time_unix_ns: i64,
        id: &Str,
        name: Option<&str>,
        image: Option<&str>,
        workload: &str,
        host: &str,
    ) -> std::io::Result<(String, String)> {
        let short = escape::terminal(id.get(..12).unwrap_or(id));
        let name = escape::terminal(name.unwrap_or("?"));
        if !self.seen.contains(&**id) {
            if self.seen.len() >= MAX_REMEMBERED {
                self.seen.clear();
            }
            self.seen.insert(id.clone());
            writeln!(
                self.out,
                "{}  container {short} {name}  image={}  workload={}  host={}",
                timestamp(time_unix_ns),
                escape::terminal(image.unwrap_or("?")),
                escape::terminal(workload),
                escape::terminal(host),
            )?;
        }
        Ok((short, name))
    }

    /// Shows one process row (exec rows and first sightings of containers).
    pub fn show(&mut self, row: &Row) -> std::io::Result<()> {
        let Some(id) = &row.attribution.container_id else {
            return Ok(());
        };
        let (short, name) = self.sighting(
            row.time_unix_ns,
            id,
            row.attribution.container_name.as_deref(),
            row.attribution.image.as_deref(),
            &row.attribution.workload_id,
            &row.attribution.host,
        )?;
        if matches!(row.kind, Kind::Exec | Kind::Running) {
            let what = match (row.kind, row.exec_in) {
                (Kind::Running, _) => "running",
                (_, true) => "exec-in",
                _ => "exec",
            };
            writeln!(
                self.out,
                "{}    {short} {name}  {what}{}{} pid={} uid={} {}  {}{}",
                timestamp(row.time_unix_ns),
                if row.drift { " (drift)" } else { "" },
                if row.stdio_socket { " (stdio socket)" } else { "" },
                row.pid,
                row.uid,
                escape::terminal(row.path.as_deref().unwrap_or("?")),
                if row.path.is_none() && row.argv.is_empty() {
                    "(exited before /proc could be read)".to_owned()
                } else {
                    escape::argv(&row.argv)
                },
                repeat(row.count),
            )?;
        }
        self.out.flush()
    }

    /// Shows one TCP socket row of a container (and its first sighting):
    /// `connect pid=7 10.0.0.2:43122 -> 93.184.216.34:443`, an accept with
    /// `<-`, a close with `sent N recv M`.
    pub fn show_network(&mut self, row: &network::Row) -> std::io::Result<()> {
        let Some(id) = &row.attribution.container_id else {
            return Ok(());
        };
        let (short, name) = self.sighting(
            row.time_unix_ns,
            id,
            row.attribution.container_name.as_deref(),
            row.attribution.image.as_deref(),
            &row.attribution.workload_id,
            &row.attribution.host,
        )?;
        let local = endpoint(row.family, &row.local_addr, row.local_port);
        let peer = match (&row.remote_addr, row.kind) {
            (None, _) => String::new(),
            (Some(remote), network::Kind::Accept) => format!(" <- {}", endpoint(row.family, remote, row.remote_port)),
            (Some(remote), _) => format!(" -> {}", endpoint(row.family, remote, row.remote_port)),
        };
        let bytes = if row.kind == network::Kind::Close && row.remote_addr.is_some() {
            format!(" sent {} recv {}", row.bytes_sent, row.bytes_received)
        } else {
            String::new()
        };
        writeln!(
            self.out,
            "{}    {short} {name}  {} pid={} {local}{peer}{bytes}{}{}",
            timestamp(row.time_unix_ns),
            row.kind.as_str(),
            row.pid,
            repeat(row.count),
            if row.pre_existing { " (open at start)" } else { "" },
        )?;
        self.out.flush()
    }

    /// Shows one sensitive-file row of a container (and its first sighting):
    /// `write pid=7 /etc/passwd by /bin/busybox`, or `create …`. The path and
    /// the executable come from inside the container: both are escaped.
    pub fn show_file(&mut self, row: &file::Row) -> std::io::Result<()> {
        let Some(id) = &row.attribution.container_id else {
            return Ok(());
        };
        let (short, name) = self.sighting(
            row.time_unix_ns,
            id,
            row.attribution.container_name.as_deref(),
            row.attribution.image.as_deref(),
            &row.attribution.workload_id,
            &row.attribution.host,
        )?;
        writeln!(
            self.out,
            "{}    {short} {name}  {} pid={} {} by {}{}",
            timestamp(row.time_unix_ns),
            row.kind.as_str(),
            row.pid,
            escape::terminal(&row.path),
            escape::terminal(row.exe.as_deref().unwrap_or("?")),
            repeat(row.count),
        )?;
        self.out.flush()
    }
}

impl<W: Write> View<W> {
    /// Shows one resource sample (and the container's first sighting):
    /// `resources mem=34.1MiB/512.0MiB pids=3/100 cpu=12.5% io=r1.2MiB/w0B
    /// net=rx10.0KiB/tx2.0KiB`; the rates need the container's previous sample
    /// and are left out without one (or when a counter went down: the
    /// container restarted).
    pub fn show_resources(&mut self, row: &resources::Row) -> std::io::Result<()> {
        let Some(id) = &row.attribution.container_id else {
            return Ok(());
        };
        let (short, name) = self.sighting(
            row.time_unix_ns,
            id,
            row.attribution.container_name.as_deref(),
            row.attribution.image.as_deref(),
            &row.attribution.workload_id,
            &row.attribution.host,
        )?;
        let c = &row.counters;
        let limited = |value: String, limit: u64, unit: fn(u64) -> String| {
            if limit == 0 {
                value
            } else {
                format!("{value}/{}", unit(limit))
            }
        };
        let mut line = format!(
            "resources mem={} pids={}",
            limited(bytes(c.memory_bytes), c.memory_limit_bytes, bytes),
            limited(c.pids.to_string(), c.pids_limit, |n| n.to_string()),
        );
        let previous = self.samples.get(id).copied();
        let rates = previous.and_then(|(time, p)| {
            let interval = row.time_unix_ns.checked_sub(time).filter(|d| *d > 0)?;
            let cpu = c.cpu_usage_ns.checked_sub(p.cpu_usage_ns)?;
            let read = c.io_read_bytes.checked_sub(p.io_read_bytes)?;
            let written = c.io_write_bytes.checked_sub(p.io_write_bytes)?;
            let rx = c.net_rx_bytes.checked_sub(p.net_rx_bytes)?;
            let tx = c.net_tx_bytes.checked_sub(p.net_tx_bytes)?;
            // Display only: f64 precision is plenty for a percentage.
            let percent = cpu as f64 * 100.0 / interval as f64;
            Some(format!(
                " cpu={percent:.1}% io=r{}/w{} net=rx{}/tx{}",
                bytes(read),
                bytes(written),
                bytes(rx),
                bytes(tx)
            ))
        });
        line.push_str(rates.as_deref().unwrap_or(""));
        if previous.is_none_or(|(time, _)| time < row.time_unix_ns) {
            if self.samples.len() >= MAX_REMEMBERED && previous.is_none() {
                self.samples.clear();
            }
            self.samples.insert(id.clone(), (row.time_unix_ns, *c));
        }
        writeln!(self.out, "{}    {short} {name}  {line}", timestamp(row.time_unix_ns))?;
        self.out.flush()
    }

    /// Shows one gap (and, for a container, its first sighting): `gap
    /// 41ee3b278ccc web-1  rate_limited: 1234 events not reported between
    /// 18:40:01.123Z and 18:40:02.123Z`, `gap host NAME  …` for a gap of the
    /// whole host. Host and container names are escaped.
    pub fn show_gap(&mut self, row: &gaps::Row) -> std::io::Result<()> {
        let whom = match &row.attribution.container_id {
            Some(id) => {
                let (short, name) = self.sighting(
                    row.start_unix_ns,
                    id,
                    row.attribution.container_name.as_deref(),
                    row.attribution.image.as_deref(),
                    &row.attribution.workload_id,
                    &row.attribution.host,
                )?;
                format!("{short} {name}")
            }
            None => format!("host {}", escape::terminal(&row.attribution.host)),
        };
        writeln!(
            self.out,
            "{}  gap {whom}  {}: {} {} not reported between {} and {}",
            timestamp(row.start_unix_ns),
            row.reason.as_str(),
            row.dropped,
            if row.dropped == 1 { "event" } else { "events" },
            time_of_day(row.start_unix_ns, row.start_unix_ns),
            time_of_day(row.start_unix_ns, row.end_unix_ns),
        )?;
        self.out.flush()
    }
}

impl<W: Write> View<W> {
    /// Shows one alert: `ALERT High 41ee3b278ccc web-1  rule.drift  Drift:
    /// /tmp/x was not in the image and was executed  [T1105] baseline v12
    /// stable`, with `(xN, update)` for the closing count of a recurring
    /// finding. The title, names and ids are escaped.
    pub fn show_alert(&mut self, alert: &crate::engine::Alert) -> std::io::Result<()> {
        let f = &alert.finding;
        let technique = f.technique.map_or(String::new(), |t| format!("  [{}]", t.uid));
        let count = if alert.count > 1 {
            format!(" (x{}, update)", alert.count)
        } else {
            String::new()
        };
        writeln!(
            self.out,
            "{}  ALERT {} {} {}  {}  {}{technique} baseline v{} {}{count}",
            timestamp(f.time_ns),
            f.severity.as_str(),
            escape::terminal(f.container.id.get(..12).unwrap_or(&f.container.id)),
            escape::terminal(f.container.name.as_deref().unwrap_or("?")),
            f.rule,
            escape::terminal(&f.title),
            f.baseline_version,
            f.baseline_state,
        )?;
        self.out.flush()
    }
}

/// `HH:MM:SS.mmmZ` from Unix nanoseconds when on the same day as `line_ns`
/// (the date the line starts with), the full [`timestamp`] otherwise.
fn time_of_day(line_ns: i64, unix_ns: i64) -> String {
    let (line, full) = (timestamp(line_ns), timestamp(unix_ns));
    match (line.split_once('T'), full.split_once('T')) {
        (Some((day, _)), Some((same, time))) if day == same => time.to_owned(),
        _ => full,
    }
}

/// `512B`, `1.5KiB`, `34.1MiB`, `2.0GiB`, `1.0TiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n}B");
    }
    // Display only: f64 precision is plenty for one decimal.
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

/// ` (xN)` for a row standing for N > 1 identical events.
fn repeat(count: u32) -> String {
    if count > 1 {
        format!(" (x{count})")
    } else {
        String::new()
    }
}

/// `10.0.0.2:443` or `[fd00::1]:443`; the address is escaped all the same,
/// it came over Kafka.
fn endpoint(family: Family, addr: &str, port: u16) -> String {
    let addr = escape::terminal(addr);
    match family {
        Family::Ipv4 => format!("{addr}:{port}"),
        Family::Ipv6 => format!("[{addr}]:{port}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` from Unix nanoseconds.
pub fn timestamp(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let millis = unix_ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use glasshouse_proto::record::Attribution;

    /// The test container, named `name` (often hostile).
    fn web(name: &str) -> Attribution {
        Attribution {
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            host: "h".into(),
            container_id: Some("41ee3b278ccc524b".into()),
            container_name: Some(name.into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            workload_id: "localhost/glasshouse-test".into(),
            ..Default::default()
        }
    }

    fn row() -> Row {
        Row {
            attribution: web("web\n1"),
            event_index: 0,
            time_unix_ns: 1_795_891_201_123_000_000,
            kind: Kind::Exec,
            pid: 7,
            ppid: 1,
            uid: 0,
            gid: 0,
            path: Some("/bin/busybox".into()),
            argv: vec!["cat".into(), "/etc/hostname".into()],
            cwd: None,
            parent_exe: None,
            exit_code: None,
            count: 1,
            exec_in: false,
            drift: false,
            stdio_socket: false,
        }
    }

    fn network_row(kind: network::Kind) -> network::Row {
        network::Row {
            // Hostile: tries to end the line, forge another, and clear the screen.
            attribution: web("web\n2026-11-28T18:40:01.123Z    fake exec\u{1b}[2J\u{202e}"),
            event_index: 1,
            time_unix_ns: 1_795_891_201_123_000_000,
            kind,
            pid: 7,
            family: Family::Ipv4,
            local_addr: "10.0.0.2".into(),
            local_port: 43122,
            remote_addr: Some("93.184.216.34".into()),
            remote_port: 443,
            bytes_sent: 3000,
            bytes_received: 500,
            count: 1,
            ..Default::default()
        }
    }

    #[test]
    fn network_rows_one_escaped_line_each() {
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        v.show_network(&network_row(network::Kind::Connect)).unwrap();
        v.show_network(&network_row(network::Kind::Close)).unwrap();
        let mut accept = network_row(network::Kind::Accept);
        accept.family = Family::Ipv6;
        accept.local_addr = "fd00::3".into();
        accept.local_port = 8080;
        accept.remote_addr = Some("fd00::2".into());
        accept.remote_port = 50000;
        accept.count = 3;
        v.show_network(&accept).unwrap();
        let mut listen = network_row(network::Kind::Listen);
        listen.remote_addr = None;
        listen.remote_port = 0;
        listen.pre_existing = true;
        v.show_network(&listen).unwrap();
        let mut host = network_row(network::Kind::Connect);
        host.attribution.container_id = None;
        v.show_network(&host).unwrap();

        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 5, "one container line, four events, no host rows: {text}");
        let name = "web\\n2026-11-28T18:40:01.123Z    fake exec\\u{1b}[2J\\u{202e}";
        assert!(
            lines[0].starts_with(&format!(
                "2026-11-28T18:40:01.123Z  container 41ee3b278ccc {name}  image="
            )),
            "{}",
            lines[0]
        );
        let prefix = format!("2026-11-28T18:40:01.123Z    41ee3b278ccc {name}  ");
        let events: Vec<_> = lines[1..]
            .iter()
            .map(|l| l.strip_prefix(&prefix).unwrap_or_else(|| panic!("{l}")))
            .collect();
        assert_eq!(
            events,
            vec![
                "connect pid=7 10.0.0.2:43122 -> 93.184.216.34:443",
                "close pid=7 10.0.0.2:43122 -> 93.184.216.34:443 sent 3000 recv 500",
                "accept pid=7 [fd00::3]:8080 <- [fd00::2]:50000 (x3)",
                "listen pid=7 10.0.0.2:43122 (open at start)",
            ]
        );
        assert!(!text.contains('\u{1b}') && !text.contains('\u{202e}'), "{text:?}");
    }

    fn file_row(kind: file::Kind, path: &str) -> file::Row {
        file::Row {
            attribution: web("web-1"),
            event_index: 2,
            time_unix_ns: 1_795_891_201_123_000_000,
            kind,
            pid: 7,
            path: path.into(),
            ..file::Row::sample()
        }
    }

    #[test]
    fn file_rows_one_escaped_line_each() {
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        v.show_file(&file_row(file::Kind::Write, "/etc/passwd")).unwrap();
        // Hostile names: a file and an executable whose names try to end the
        // line, forge another, clear the screen and reverse the text.
        let mut create = file_row(
            file::Kind::Create,
            "/etc/cron.d/x\n2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  exec pid=1\u{1b}[2J\u{202e}dwssap",
        );
        create.exe = Some("/tmp/\u{1b}]0;owned\u{7}evil\u{2066}".into());
        create.count = 2;
        v.show_file(&create).unwrap();
        let mut unknown_exe = file_row(file::Kind::Write, "/root/.ssh/authorized_keys");
        unknown_exe.exe = None;
        v.show_file(&unknown_exe).unwrap();
        let mut host = file_row(file::Kind::Write, "/etc/shadow");
        host.attribution.container_id = None;
        v.show_file(&host).unwrap();

        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4, "one container line, three events, no host rows: {text}");
        assert!(
            lines[0].contains("  container 41ee3b278ccc web-1  image="),
            "{}",
            lines[0]
        );
        let prefix = "2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  ";
        let events: Vec<_> = lines[1..]
            .iter()
            .map(|l| l.strip_prefix(prefix).unwrap_or_else(|| panic!("{l}")))
            .collect();
        assert_eq!(
            events,
            vec![
                "write pid=7 /etc/passwd by /bin/busybox",
                "create pid=7 /etc/cron.d/x\\n2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  exec pid=1\\u{1b}[2J\\u{202e}dwssap \
                 by /tmp/\\u{1b}]0;owned\\u{7}evil\\u{2066} (x2)",
                "write pid=7 /root/.ssh/authorized_keys by ?",
            ]
        );
        for bad in ['\u{1b}', '\u{7}', '\u{202e}', '\u{2066}'] {
            assert!(!text.contains(bad), "{bad:?} in {text:?}");
        }
    }

    fn resource_row(time_unix_ns: i64, counters: Counters) -> resources::Row {
        resources::Row {
            attribution: web("web-1\u{1b}[2J"),
            time_unix_ns,
            counters,
        }
    }

    #[test]
    fn resource_samples_one_line_each_with_rates_from_the_previous_one() {
        const MIB: u64 = 1024 * 1024;
        const T: i64 = 1_795_891_210_000_000_000;
        const SECOND: i64 = 1_000_000_000;
        let first = Counters {
            cpu_usage_ns: 5_000_000_000,
            memory_bytes: 34 * MIB + MIB / 10,
            memory_limit_bytes: 512 * MIB,
            io_read_bytes: 10 * MIB,
            io_write_bytes: 4096,
            pids: 3,
            pids_limit: 100,
            net_rx_bytes: 1000,
            net_tx_bytes: 500,
            net_rx_packets: 10,
            net_tx_packets: 5,
        };
        // 10 s later: 1.25 s of CPU (12.5% of one core), 1.2 MiB read,
        // nothing written, 10 KiB in, 2 KiB out.
        let second = Counters {
            cpu_usage_ns: 6_250_000_000,
            io_read_bytes: 10 * MIB + MIB * 12 / 10,
            net_rx_bytes: 1000 + 10 * 1024,
            net_tx_bytes: 500 + 2048,
            ..first
        };
        // No limits; the container restarted (counters went down).
        let restarted = Counters {
            cpu_usage_ns: 1_000,
            memory_limit_bytes: 0,
            pids_limit: 0,
            memory_bytes: 900,
            ..Counters::default()
        };
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        v.show_resources(&resource_row(T, first)).unwrap();
        v.show_resources(&resource_row(T + 10 * SECOND, second)).unwrap();
        // A re-sent (duplicate) sample: no interval, no rates.
        v.show_resources(&resource_row(T + 10 * SECOND, second)).unwrap();
        v.show_resources(&resource_row(T + 20 * SECOND, restarted)).unwrap();
        v.show_resources(&resource_row(T + 30 * SECOND, restarted)).unwrap();

        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(
            lines[0].starts_with("2026-11-28T18:40:10.000Z  container 41ee3b278ccc web-1\\u{1b}[2J  image="),
            "{}",
            lines[0]
        );
        let events: Vec<_> = lines[1..]
            .iter()
            .map(|l| {
                l.split_once("41ee3b278ccc web-1\\u{1b}[2J  ")
                    .unwrap_or_else(|| panic!("{l}"))
                    .1
            })
            .collect();
        assert_eq!(
            events,
            [
                "resources mem=34.1MiB/512.0MiB pids=3/100",
                "resources mem=34.1MiB/512.0MiB pids=3/100 cpu=12.5% io=r1.2MiB/w0B net=rx10.0KiB/tx2.0KiB",
                "resources mem=34.1MiB/512.0MiB pids=3/100",
                "resources mem=900B pids=0",
                "resources mem=900B pids=0 cpu=0.0% io=r0B/w0B net=rx0B/tx0B",
            ]
        );
        assert!(!text.contains('\u{1b}'), "{text:?}");
    }

    fn gap_row(container: bool, reason: gaps::Reason, dropped: u64) -> gaps::Row {
        gaps::Row {
            attribution: Attribution {
                agent_id: "a".into(),
                boot_id: 1,
                batch_seq: 1,
                // Hostile: a host name that tries to end the line and forge another.
                host: "node-7\n2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  exec\u{1b}[2J".into(),
                container_id: container.then(|| "41ee3b278ccc524b".into()),
                container_name: container.then(|| "web-1\u{202e}".into()),
                image: container.then(|| "localhost/glasshouse-test:latest".into()),
                workload_id: if container {
                    "localhost/glasshouse-test"
                } else {
                    "host:node-7"
                }
                .into(),
                ..Default::default()
            },
            start_unix_ns: 1_795_891_201_123_000_000,
            end_unix_ns: 1_795_891_202_123_000_000,
            reason,
            dropped,
        }
    }

    #[test]
    fn gaps_one_escaped_line_each_host_gaps_named_host() {
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        v.show_gap(&gap_row(true, gaps::Reason::RateLimited, 1234)).unwrap();
        v.show_gap(&gap_row(true, gaps::Reason::KernelBufferFull, 1)).unwrap();
        // A window into the next day names the day of its end.
        let mut host = gap_row(false, gaps::Reason::QueueFull, 80);
        host.end_unix_ns += 86_400_000_000_000;
        v.show_gap(&host).unwrap();

        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 4, "one container line, three gaps: {text}");
        assert!(
            lines[0].starts_with("2026-11-28T18:40:01.123Z  container 41ee3b278ccc web-1\\u{202e}  image="),
            "{}",
            lines[0]
        );
        assert_eq!(
            lines[1..],
            [
                "2026-11-28T18:40:01.123Z  gap 41ee3b278ccc web-1\\u{202e}  rate_limited: 1234 events not reported \
                 between 18:40:01.123Z and 18:40:02.123Z",
                "2026-11-28T18:40:01.123Z  gap 41ee3b278ccc web-1\\u{202e}  kernel_buffer_full: 1 event not reported \
                 between 18:40:01.123Z and 18:40:02.123Z",
                "2026-11-28T18:40:01.123Z  gap host node-7\\n2026-11-28T18:40:01.123Z    41ee3b278ccc web-1  \
                 exec\\u{1b}[2J  queue_full: 80 events not reported between 18:40:01.123Z and 2026-11-29T18:40:02.123Z",
            ]
        );
        for bad in ['\u{1b}', '\u{202e}'] {
            assert!(!text.contains(bad), "{bad:?} in {text:?}");
        }
    }

    #[test]
    fn byte_counts_are_short() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0GiB");
        assert_eq!(bytes(u64::MAX), "16777216.0TiB");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_891_201_123_000_000), "2026-11-28T18:40:01.123Z");
        assert_eq!(timestamp(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn new_container_then_execs_one_line_each() {
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        v.show(&row()).unwrap();
        v.show(&row()).unwrap();
        v.show(&Row { exec_in: true, ..row() }).unwrap();
        v.show(&Row {
            kind: Kind::Running,
            ..row()
        })
        .unwrap();
        // Forks and exits are not shown.
        v.show(&Row {
            kind: Kind::Fork,
            ..row()
        })
        .unwrap();
        v.show(&Row {
            drift: true,
            stdio_socket: false,
            path: Some("/tmp/x".into()),
            argv: vec!["/tmp/x".into()],
            ..row()
        })
        .unwrap();
        v.show(&Row {
            drift: true,
            stdio_socket: false,
            exec_in: true,
            ..row()
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 7, "{text}");
        assert!(
            lines[5].ends_with("  exec (drift) pid=7 uid=0 /tmp/x  /tmp/x"),
            "{}",
            lines[5]
        );
        assert!(
            lines[6].ends_with("  exec-in (drift) pid=7 uid=0 /bin/busybox  cat /etc/hostname"),
            "{}",
            lines[6]
        );
        assert!(!lines[1].contains("drift"), "{}", lines[1]);
        assert!(
            lines[3].ends_with("exec-in pid=7 uid=0 /bin/busybox  cat /etc/hostname"),
            "{}",
            lines[3]
        );
        assert!(
            lines[4].ends_with("running pid=7 uid=0 /bin/busybox  cat /etc/hostname"),
            "{}",
            lines[4]
        );
        assert!(lines[0].contains("container 41ee3b278ccc web\\n1  image=localhost/glasshouse-test:latest"));
        assert!(
            lines[1].ends_with("exec pid=7 uid=0 /bin/busybox  cat /etc/hostname"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn long_container_strings_are_cut_at_the_bound() {
        let mut out = Vec::new();
        let mut v = View::new(&mut out);
        let at = "n".repeat(escape::MAX_FIELD);
        v.show(&Row {
            attribution: Attribution {
                container_name: Some(at.as_str().into()),
                ..row().attribution
            },
            path: Some(format!("/{}", "p".repeat(4 << 20)).into()),
            argv: vec!["x".into(), "A".repeat(8 << 20).into()],
            ..row()
        })
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        // A name of exactly the bound is whole; the path and argv are cut.
        assert!(lines[0].contains(&format!(" {at}  image=")), "{}", &lines[0][..80]);
        assert!(!lines[0].contains("truncated"));
        assert!(lines[1].len() < 3 * escape::MAX_FIELD + 200, "{}", lines[1].len());
        assert!(lines[1].contains(&format!("…[truncated {} bytes]  x ", (4 << 20) + 1 - escape::MAX_FIELD)));
        assert!(lines[1].ends_with(&format!("…[truncated {} bytes]", (8 << 20) + 2 - escape::MAX_FIELD)));
    }
}
