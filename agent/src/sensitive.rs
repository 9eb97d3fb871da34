//! Sensitive paths: the prefixes under which a write by a container process
//! is reported (config `sensitive_paths`). A prefix matches whole path
//! components (`/etc` matches `/etc/passwd` and `/etc`, not `/etcetera`); a
//! `*` component matches any one component (`/home/*/.ssh`); a leading `~`
//! stands for every home directory (`/root` and `/home/*`).

/// The default prefixes: system configuration and binaries, root's and
/// users' SSH keys, cron spools.
pub fn defaults() -> Vec<String> {
    [
        "/etc",
        "/bin",
        "/sbin",
        "/usr",
        "/lib",
        "/lib32",
        "/lib64",
        "/boot",
        "/root",
        "~/.ssh",
        "/var/spool/cron",
    ]
    .map(String::from)
    .to_vec()
}

/// Compiled prefixes.
#[derive(Debug, Clone)]
pub struct SensitivePaths {
    prefixes: Vec<Vec<String>>,
}

impl SensitivePaths {
    pub fn new(prefixes: &[String]) -> SensitivePaths {
        let mut out = Vec::new();
        for p in prefixes {
            let parts: Vec<String> = p.split('/').filter(|c| !c.is_empty()).map(str::to_owned).collect();
            match parts.split_first() {
                Some((first, rest)) if first == "~" => {
                    for home in [&["root"][..], &["home", "*"][..]] {
                        out.push(
                            home.iter()
                                .map(|s| (*s).to_owned())
                                .chain(rest.iter().cloned())
                                .collect(),
                        );
                    }
                }
                _ => out.push(parts),
            }
        }
        SensitivePaths { prefixes: out }
    }

    /// Whether `path` (absolute, as bytes: it need not be UTF-8) is at or
    /// under one of the prefixes.
    pub fn matches(&self, path: &[u8]) -> bool {
        let parts: Vec<&[u8]> = path.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect();
        self.prefixes.iter().any(|prefix| {
            prefix.len() <= parts.len()
                && prefix
                    .iter()
                    .zip(&parts)
                    .all(|(want, got)| want == "*" || want.as_bytes() == *got)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_match_whole_components_with_wildcards_and_homes() {
        let s = SensitivePaths::new(&defaults());
        for yes in [
            "/etc/passwd",
            "/etc",
            "/usr/local/bin/x",
            "/root/.bashrc",
            "/root/.ssh/authorized_keys",
            "/home/alice/.ssh/authorized_keys",
            "/var/spool/cron/crontabs/root",
        ] {
            assert!(s.matches(yes.as_bytes()), "{yes}");
        }
        for no in [
            "/etcetera/x",
            "/tmp/x",
            "/home/alice/notes",
            "/var/log/app.log",
            "/",
            "/home/.ssh",
        ] {
            assert!(!s.matches(no.as_bytes()), "{no}");
        }
        assert!(s.matches(b"/etc/\xff\xfe"), "non-UTF-8 names still match their prefix");
        assert!(!SensitivePaths::new(&[]).matches(b"/etc/passwd"));
    }
}
