//! The live view: one line per new container and per process exec, with every
//! container-supplied field escaped ([`crate::escape`]).

use std::collections::HashSet;
use std::io::Write;

use glasshouse_proto::process::{Kind, Row};

use crate::escape;

/// Containers remembered for "new container" lines; beyond this the set restarts.
const MAX_REMEMBERED: usize = 16_384;

/// Writes the live view to `out`.
#[derive(Debug)]
pub struct View<W> {
    out: W,
    seen: HashSet<glasshouse_proto::process::Str>,
}

impl<W: Write> View<W> {
    pub fn new(out: W) -> View<W> {
        View {
            out,
            seen: HashSet::new(),
        }
    }

    /// Shows one row (exec rows and first sightings of containers).
    pub fn show(&mut self, row: &Row) -> std::io::Result<()> {
        let Some(id) = &row.container_id else {
            return Ok(());
        };
        let short = &id[..id.len().min(12)];
        let name = escape::terminal(row.container_name.as_deref().unwrap_or("?"));
        if !self.seen.contains(&**id) {
            if self.seen.len() >= MAX_REMEMBERED {
                self.seen.clear();
            }
            self.seen.insert(id.clone());
            writeln!(
                self.out,
                "{}  container {short} {name}  image={}  workload={}  host={}",
                timestamp(row.time_unix_ns),
                escape::terminal(row.image.as_deref().unwrap_or("?")),
                escape::terminal(&row.workload_id),
                escape::terminal(&row.host),
            )?;
        }
        if row.kind == Kind::Exec {
            let repeat = if row.count > 1 {
                format!(" (x{})", row.count)
            } else {
                String::new()
            };
            writeln!(
                self.out,
                "{}    {short} {name}  exec pid={} uid={} {}  {}{repeat}",
                timestamp(row.time_unix_ns),
                row.pid,
                row.uid,
                escape::terminal(row.path.as_deref().unwrap_or("?")),
                if row.path.is_none() && row.argv.is_empty() {
                    "(exited before /proc could be read)".to_owned()
                } else {
                    escape::argv(&row.argv)
                },
            )?;
        }
        self.out.flush()
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

    fn row() -> Row {
        Row {
            agent_id: "a".into(),
            boot_id: 1,
            batch_seq: 1,
            event_index: 0,
            time_unix_ns: 1_795_891_201_123_000_000,
            host: "h".into(),
            container_id: Some("41ee3b278ccc524b".into()),
            container_name: Some("web\n1".into()),
            image: Some("localhost/glasshouse-test:latest".into()),
            image_id: None,
            workload_id: "localhost/glasshouse-test".into(),
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
        }
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
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].contains("container 41ee3b278ccc web\\n1  image=localhost/glasshouse-test:latest"));
        assert!(
            lines[1].ends_with("exec pid=7 uid=0 /bin/busybox  cat /etc/hostname"),
            "{}",
            lines[1]
        );
    }
}
