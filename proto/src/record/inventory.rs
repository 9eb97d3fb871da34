//! Arrow schema of `glasshouse.inventory` records: one row per inventory,
//! the installed packages of one container as the agent read them from the
//! container's root filesystem. A row replaces every earlier inventory of
//! its container. Attributed like every record (keyed by workload id); `agent_id`, `boot_id`, `batch_seq` and `container_id` identify a row.
//!
//! The [`Attribution`] columns (`container_id` never null), then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `image_digest` | utf8, nullable | manifest digest of the image the container runs (`sha256:…`), from the runtime |
//! | `time` | timestamp(ns, UTC) | when the databases were read |
//! | `distro` | utf8, nullable | distribution of the root filesystem (`Debian:12`, `Alpine:v3.19`) |
//! | `packages` | list<struct<ecosystem, name, version, source_name (nullable), location>> | installed packages: OSV ecosystem, name, version, source package, database file inside the container |
//! | `errors` | list<utf8> | databases that could not be read (e.g. a symbolic link refused): the inventory is incomplete |
//!
//! Every string but the agent's own comes from inside a container: it is
//! attacker-controlled and must be escaped by whatever shows it.

pub use super::Attribution;
pub use super::column::Str;
use super::column::{StrList, StructList, Time};

crate::columns! {
    builder: PackageBuilder, reader: PackageReader;

    /// One installed package.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Package {
        /// OSV ecosystem: `Debian:12`, `Alpine:v3.19`, `PyPI`, `npm`.
        pub ecosystem: Str,
        pub name: Str,
        pub version: Str,
        /// Source package (dpkg `Source:`, apk origin), when not the name.
        pub source_name: Option<Str>,
        /// Database file inside the container.
        pub location: Str,
    }
}

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One container's inventory, attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        /// Always names a container.
        pub attribution: Attribution,
        pub image_digest: Option<Str>,
        pub time_unix_ns: i64 => "time" as Time,
        pub distro: Option<Str>,
        pub packages: Vec<Package> as StructList<Package>,
        pub errors: Vec<Str> as StrList<false>,
    }
}

crate::record!(crate::record::RecordType::Inventory);

impl Row {
    /// Two packages (one with a hostile name) in [`Attribution::sample`]'s
    /// container, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution {
                image: Some("localhost/app:1".into()),
                workload_id: "localhost/app".into(),
                ..Attribution::sample()
            },
            image_digest: Some("sha256:9f86".into()),
            time_unix_ns: 1_700_000_000_000_000_000,
            distro: Some("Debian:12".into()),
            packages: vec![
                Package {
                    ecosystem: "Debian:12".into(),
                    name: "libssl3".into(),
                    version: "3.0.11-1~deb12u1".into(),
                    source_name: Some("openssl".into()),
                    location: "/var/lib/dpkg/status".into(),
                },
                Package {
                    ecosystem: "PyPI".into(),
                    name: "requests\n\u{1b}[31m".into(),
                    version: "2.28.1".into(),
                    source_name: None,
                    location: "/usr/lib/python3/dist-packages/requests-2.28.1.dist-info/METADATA".into(),
                },
            ],
            errors: vec![],
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_row() -> Row {
        Row::sample()
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let refused = Row {
            attribution: Attribution {
                container_id: Some("99".into()),
                ..sample_row().attribution
            },
            image_digest: None,
            distro: None,
            packages: vec![],
            errors: vec!["/var/lib/dpkg/status: a symbolic link (to \"/etc/shadow\"), refused".into()],
            ..sample_row()
        };
        let rows = vec![sample_row(), refused, sample_row()];
        crate::record::testing::round_trip(&rows);
        // An empty batch too.
        assert!(read_rows(&Builder::default().finish()).unwrap().is_empty());
    }

    #[test]
    fn foreign_schemas_are_refused() {
        assert!(read_rows(&crate::record::testing::batch_of(&crate::gaps::Row::sample())).is_err());
        let mut b = Builder::default();
        b.append(&sample_row());
        assert!(crate::gaps::read_rows(&b.finish()).is_err());
    }
}
