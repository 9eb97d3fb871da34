//! Arrow schema of `glasshouse.file` records: one row per file under a
//! sensitive path opened for writing (or created) by a process, already
//! resolved and attributed.
//!
//! The [`Attribution`] columns, then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `event_index` | uint32 | position in the agent batch (after its process and network events); with `agent_id`, `boot_id` and `batch_seq`, the stable event id |
//! | `time` | timestamp(ns, UTC) | when the kernel reported the event |
//! | `kind` | utf8 | `write` (an existing file opened for writing or truncation) or `create` (the open created it) |
//! | `pid` | uint32 | writing process (thread group id), host pid namespace |
//! | `path` | utf8 | the file's absolute path as the container sees it, resolved by the kernel (no symlinks, no relative parts) |
//! | `exe` | utf8, nullable | executable of the writing process |
//! | `flags` | uint32 | the `open(2)` flags (`O_WRONLY`, `O_RDWR`, `O_CREAT`, `O_TRUNC`, `O_APPEND`, …) |
//! | `count` | uint32 | identical events collapsed into this row |
//! | `generated_name` | bool | the file's name looks machine-generated, not chosen ([`generated_name`]: `mktemp`'s `tmp.XXXXXXXXXX`, `sed -i`'s `sedXXXXXX`, a UUID or a long hex string): the write of a temporary file (often renamed over the real one next), not a name to learn or show as stable; schema version 7, read as false from older batches |
//!
//! Paths that are not valid UTF-8 are converted lossily (U+FFFD).

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

crate::text_enum! {
    /// What the process did to the file.
    pub enum Kind {
        /// An existing file was opened for writing (or truncation).
        Write = "write",
        /// The open created the file.
        Create = "create",
    }
}

crate::wire_enum!(Kind <=> FileEventKind { Write, Create });

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One write-open of a sensitive file, resolved and attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        pub attribution: Attribution,
        pub event_index: u32,
        pub time_unix_ns: i64 => "time" as Time,
        pub kind: Kind,
        pub pid: u32,
        /// Absolute path of the file, as the container sees it.
        pub path: Str,
        /// Executable of the writing process, when known.
        pub exe: Option<Str>,
        /// The `open(2)` flags.
        pub flags: u32,
        pub count: u32,
        /// The name looks machine-generated ([`generated_name`] of `path`).
        pub generated_name: bool = false,
    }
}

/// Whether the last component of `path` looks machine-generated rather
/// than chosen: `mktemp`'s default `tmp.` followed by at least six random
/// characters, `sed -i`'s `sed` followed by exactly six, a UUID, or at least
/// 16 hexadecimal digits (optionally followed by an extension). Random
/// parts must mix at least two of lower case, upper case and digits, so
/// words (`sedatives`, `tmp.backup`) are not taken for them; a random
/// six-character part is all one class about once in a hundred, and such a
/// name is reported as chosen.
pub fn generated_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let random = |part: &str, min: usize| {
        let classes = [
            part.bytes().any(|b| b.is_ascii_lowercase()),
            part.bytes().any(|b| b.is_ascii_uppercase()),
            part.bytes().any(|b| b.is_ascii_digit()),
        ];
        part.len() >= min
            && part.bytes().all(|b| b.is_ascii_alphanumeric())
            && classes.iter().filter(|c| **c).count() >= 2
    };
    let stem = name.split_once('.').map_or(name, |(stem, _)| stem);
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let uuid = {
        let parts: Vec<&str> = stem.split('-').collect();
        parts.len() == 5 && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| hex(p, n))
    };
    name.strip_prefix("tmp.").is_some_and(|r| random(r, 6))
        || name.strip_prefix("sed").is_some_and(|r| r.len() == 6 && random(r, 6))
        || uuid
        || (stem.len() >= 16 && stem.bytes().all(|b| b.is_ascii_hexdigit()))
}

crate::record!(crate::record::RecordType::File);

impl Row {
    /// `/etc/passwd` truncated by busybox in [`Attribution::sample`]'s
    /// container, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            event_index: 4,
            time_unix_ns: 1_700_000_000_000_000_000,
            kind: Kind::Write,
            pid: 10,
            path: "/etc/passwd".into(),
            exe: Some("/bin/busybox".into()),
            // O_WRONLY | O_TRUNC
            flags: 0o1001,
            count: 1,
            generated_name: false,
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

    /// A host process creating a file, executable unknown, collapsed.
    fn create_row() -> Row {
        Row {
            attribution: Attribution::host("host-a".into(), "host-a".into()),
            kind: Kind::Create,
            path: "/root/.ssh/authorized_keys".into(),
            exe: None,
            // O_WRONLY | O_CREAT | O_EXCL
            flags: 0o301,
            count: 3,
            event_index: 5,
            ..sample_row()
        }
    }

    #[test]
    fn generated_names_are_told_from_chosen_ones() {
        for (path, want) in [
            ("/tmp/tmp.Xk3b9QzT1a", true),
            ("/etc/sedAb12Cd", true),
            ("/etc/sedX9k2Lm", true),
            ("/var/run/3f2b8c1e-9d4a-4e7f-b1c2-0a9d8e7f6b5c.sock", true),
            ("/root/.cache/0123456789abcdef0123", true),
            ("/etc/passwd", false),
            ("/etc/sedatives", false),
            ("/etc/sed", false),
            ("/etc/sedAb12Cd9", false),
            ("/tmp/tmp.backup", false),
            ("/tmp/tmp.Ab1", false),
            ("/tmp/dropper", false),
            ("/etc/cron.d/\u{fffd}job", false),
            ("/srv/app/deadbeef", false),
            ("/etc/ssh/ssh_host_ed25519_key", false),
            ("tmp.Qw3rty", true),
        ] {
            assert_eq!(generated_name(path), want, "{path}");
        }
    }

    #[test]
    fn version_6_batches_are_read_without_generated_name() {
        let r = Row {
            generated_name: true,
            ..sample_row()
        };
        crate::record::testing::reads_without_last_column(&r, "generated_name", &sample_row());
    }

    #[test]
    fn kinds_round_trip_as_text() {
        for k in [Kind::Write, Kind::Create] {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("read"), None);
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let rows = vec![sample_row(), create_row()];
        let back = crate::record::testing::round_trip(&rows);
        let exe = back.column_by_name("exe").unwrap();
        assert_eq!(exe.null_count(), 1, "the host row's executable is unknown");
        assert_eq!(back.column_by_name("path").unwrap().null_count(), 0);
    }

    #[test]
    fn approx_bytes_grows_with_the_strings() {
        let short = sample_row();
        let long = Row {
            path: "/etc/".repeat(100).into(),
            ..sample_row()
        };
        assert_eq!(long.approx_bytes() - short.approx_bytes(), 500 - "/etc/passwd".len());
        assert!(short.approx_bytes() > 100, "{}", short.approx_bytes());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::network::Row::sample())).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::process::Row::sample())).is_err());
    }

    #[test]
    fn unknown_kinds_are_refused() {
        let mut b = Builder::default();
        b.append(&sample_row());
        let batch = b.finish();
        let mut columns = batch.columns().to_vec();
        columns[batch.schema().index_of("kind").unwrap()] = Arc::new(arrow_array::StringArray::from(vec!["read"]));
        let forged = RecordBatch::try_new(schema(), columns).unwrap();
        let err = read_rows(&forged).unwrap_err().to_string();
        assert!(err.contains("unknown kind \"read\""), "{err}");
    }
}
