//! Version comparison per ecosystem, as each package manager orders its own
//! versions: dpkg (Debian, Ubuntu), apk (Alpine), PEP 440 (PyPI) and SemVer
//! 2.0 (npm). A version that does not parse is an error naming it, never
//! silently "equal".

use std::cmp::Ordering;

/// Which ordering an ecosystem's versions follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Dpkg,
    Apk,
    Pep440,
    Semver,
    Rpm,
}

impl Scheme {
    /// The scheme of an OSV ecosystem (`Debian:12` → dpkg); `None` for one
    /// this build does not compare.
    pub fn of_ecosystem(ecosystem: &str) -> Option<Scheme> {
        match ecosystem.split(':').next().unwrap_or_default() {
            "Debian" | "Ubuntu" => Some(Scheme::Dpkg),
            "Alpine" => Some(Scheme::Apk),
            "PyPI" => Some(Scheme::Pep440),
            "npm" => Some(Scheme::Semver),
            "AlmaLinux" | "Rocky Linux" | "Red Hat" | "Fedora" | "openSUSE" | "SUSE" | "Mageia" | "openEuler" => {
                Some(Scheme::Rpm)
            }
            _ => None,
        }
    }

    /// Compares two versions of this scheme.
    pub fn compare(self, a: &str, b: &str) -> Result<Ordering, VersionError> {
        match self {
            Scheme::Dpkg => Ok(dpkg::parse(a)?.cmp(&dpkg::parse(b)?)),
            Scheme::Apk => Ok(apk::parse(a)?.cmp(&apk::parse(b)?)),
            Scheme::Pep440 => Ok(pep440::parse(a)?.cmp(&pep440::parse(b)?)),
            Scheme::Semver => Ok(semver::parse(a)?.cmp(&semver::parse(b)?)),
            Scheme::Rpm => Ok(rpm::parse(a)?.cmp(&rpm::parse(b)?)),
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Scheme::Dpkg => "dpkg",
            Scheme::Apk => "apk",
            Scheme::Pep440 => "PEP 440",
            Scheme::Semver => "SemVer",
            Scheme::Rpm => "rpm",
        }
    }
}

/// A version string that is not valid in its scheme.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {scheme} version {version:?}: {reason}")]
pub struct VersionError {
    pub scheme: &'static str,
    pub version: String,
    pub reason: &'static str,
}

fn invalid(scheme: Scheme, version: &str, reason: &'static str) -> VersionError {
    VersionError {
        scheme: scheme.name(),
        version: version.to_owned(),
        reason,
    }
}

/// dpkg: `[epoch:]upstream[-revision]`, compared as `dpkg --compare-versions`
/// does (`verrevcmp` of lib/dpkg/version.c): `~` sorts before everything,
/// even the end of the string; letters before other characters; digit runs
/// numerically.
pub mod dpkg {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Version {
        epoch: u64,
        upstream: String,
        revision: String,
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| invalid(Scheme::Dpkg, s, reason);
        let t = s.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        let (epoch, rest) = match t.split_once(':') {
            Some((e, rest)) => (e.parse::<u64>().map_err(|_| bad("epoch is not a number"))?, rest),
            None => (0, t),
        };
        let (upstream, revision) = match rest.rsplit_once('-') {
            Some((u, r)) => (u, r),
            None => (rest, ""),
        };
        if upstream.is_empty() {
            return Err(bad("empty upstream version"));
        }
        if !upstream.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(bad("upstream version must start with a digit"));
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || ".+~-:".contains(c);
        if !upstream.chars().all(ok) || !revision.chars().all(|c| c != ':' && c != '-' && ok(c)) {
            return Err(bad("invalid character"));
        }
        Ok(Version {
            epoch,
            upstream: upstream.to_owned(),
            revision: revision.to_owned(),
        })
    }

    fn order(c: Option<u8>) -> i32 {
        match c {
            None => 0,
            Some(b'~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => i32::from(c),
            Some(c) => i32::from(c) + 256,
        }
    }

    /// `verrevcmp`.
    pub(super) fn verrevcmp(a: &str, b: &str) -> Ordering {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            // Non-digit prefix, character by character.
            while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
                let ac = order(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
                let bc = order(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
                if ac != bc {
                    return ac.cmp(&bc);
                }
                if i < a.len() && !a[i].is_ascii_digit() {
                    i += 1;
                }
                if j < b.len() && !b[j].is_ascii_digit() {
                    j += 1;
                }
            }
            while a.get(i) == Some(&b'0') {
                i += 1;
            }
            while b.get(j) == Some(&b'0') {
                j += 1;
            }
            let (si, sj) = (i, j);
            while i < a.len() && a[i].is_ascii_digit() {
                i += 1;
            }
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            // Without leading zeros: the longer run is the larger number.
            let ord = (i - si).cmp(&(j - sj)).then_with(|| a[si..i].cmp(&b[sj..j]));
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    }

    impl Ord for Version {
        fn cmp(&self, other: &Self) -> Ordering {
            self.epoch
                .cmp(&other.epoch)
                .then_with(|| verrevcmp(&self.upstream, &other.upstream))
                .then_with(|| verrevcmp(&self.revision, &other.revision))
        }
    }
    impl PartialOrd for Version {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
}

/// apk (Alpine): `N(.N)*[letter](_suffix[N])*[~hash][-rN]`, as apk-tools'
/// `apk_version_compare`: pre-release suffixes `_alpha` < `_beta` < `_pre` <
/// `_rc` sort before the bare version, post-release `_cvs` < `_svn` < `_git`
/// < `_hg` < `_p` after it; `-rN` is the package revision.
pub mod apk {
    use super::*;

    const SUFFIXES: [&str; 9] = ["alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg"];
    /// Rank of "no suffix".
    const NONE: u8 = 4;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Version {
        numbers: Vec<u64>,
        letter: u8,
        /// (rank, number); compared with a missing one as "none".
        suffixes: Vec<(u8, u64)>,
        revision: u64,
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| invalid(Scheme::Apk, s, reason);
        let t = s.trim();
        let (body, revision) = match t.rsplit_once("-r") {
            Some((b, r)) => (b, r.parse::<u64>().map_err(|_| bad("revision -rN is not a number"))?),
            None => (t, 0),
        };
        // The commit hash (`~abcdef`) does not order.
        let body = body.split_once('~').map_or(body, |(b, _)| b);
        let (head, suffix_text) = match body.split_once('_') {
            Some((h, s)) => (h, Some(s)),
            None => (body, None),
        };
        let (digits, letter) = match head.as_bytes().last() {
            Some(c) if c.is_ascii_lowercase() => (&head[..head.len() - 1], *c),
            _ => (head, 0),
        };
        if digits.is_empty() {
            return Err(bad("no version number"));
        }
        let numbers = digits
            .split('.')
            .map(|n| n.parse::<u64>().map_err(|_| bad("not a dotted number")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut suffixes = Vec::new();
        if let Some(text) = suffix_text {
            for part in text.split('_') {
                let split = part.find(|c: char| c.is_ascii_digit()).unwrap_or(part.len());
                let (name, number) = part.split_at(split);
                let rank = if name == "p" {
                    9
                } else {
                    SUFFIXES
                        .iter()
                        .position(|s| !s.is_empty() && *s == name)
                        .ok_or_else(|| bad("unknown suffix"))? as u8
                };
                let number = if number.is_empty() {
                    0
                } else {
                    number.parse().map_err(|_| bad("suffix number is not a number"))?
                };
                suffixes.push((rank, number));
            }
        }
        // "No suffix" sorts between the pre- and post-release ones: end the
        // list with it so a longer list compares against it.
        suffixes.push((NONE, 0));
        Ok(Version {
            numbers,
            letter,
            suffixes,
            revision,
        })
    }
}

/// PEP 440 (PyPI): `[N!]N(.N)*[{a|b|rc}N][.postN][.devN][+local]`, with the
/// normalisations of the specification (case, `alpha`/`beta`/`c`/`pre`/
/// `preview`, separators, implicit numbers, `1.0-1` as a post-release), and
/// the order of `packaging.version`: `1.0.dev0 < 1.0a1.dev0 < 1.0a1 <
/// 1.0a1.post1 < 1.0 < 1.0+local < 1.0.post1.dev0 < 1.0.post1`.
pub mod pep440 {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Pre {
        /// A dev release of the final version sorts before its pre-releases;
        /// `Release(kind, n)` is a pre-release (a=0, b=1, rc=2).
        DevOnly,
        Release(u8, u64),
        Final,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum LocalPart {
        // Strings sort before numbers.
        Text(String),
        Number(u64),
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Version {
        epoch: u64,
        release: Vec<u64>,
        pre: Pre,
        /// `None` (no post-release) sorts first.
        post: Option<u64>,
        /// `None` (not a dev release) must sort last: stored inverted.
        dev: DevKey,
        /// `None` (no local label) sorts first.
        local: Option<Vec<LocalPart>>,
    }

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum DevKey {
        Dev(u64),
        NotDev,
    }

    fn number(s: &str, i: &mut usize) -> Option<u64> {
        let b = s.as_bytes();
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        (start < *i).then(|| s[start..*i].parse().ok()).flatten()
    }

    fn skip_sep(s: &str, i: &mut usize) -> bool {
        if matches!(s.as_bytes().get(*i), Some(b'.' | b'-' | b'_')) {
            *i += 1;
            true
        } else {
            false
        }
    }

    fn word<'a>(s: &'a str, i: &mut usize, words: &[&'a str]) -> Option<&'a str> {
        // Longest first: `preview` before `pre`, `rc` before `c`.
        let mut sorted: Vec<&str> = words.to_vec();
        sorted.sort_by_key(|w| std::cmp::Reverse(w.len()));
        let found = sorted.into_iter().find(|w| s[*i..].starts_with(w))?;
        *i += found.len();
        Some(found)
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| invalid(Scheme::Pep440, s, reason);
        let lower = s.trim().to_ascii_lowercase();
        let (public, local) = match lower.split_once('+') {
            Some((p, l)) => (p, Some(l)),
            None => (lower.as_str(), None),
        };
        let v = public.strip_prefix('v').unwrap_or(public);
        let mut i = 0;
        let first = number(v, &mut i).ok_or_else(|| bad("must start with a number"))?;
        let (epoch, mut release) = if v.as_bytes().get(i) == Some(&b'!') {
            i += 1;
            (
                first,
                vec![number(v, &mut i).ok_or_else(|| bad("no release after the epoch"))?],
            )
        } else {
            (0, vec![first])
        };
        while v.as_bytes().get(i) == Some(&b'.') && v.as_bytes().get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            release.push(number(v, &mut i).ok_or_else(|| bad("bad release segment"))?);
        }
        let mut pre = None;
        let mut post = None;
        let mut dev = None;
        // Pre-release.
        let mark = i;
        skip_sep(v, &mut i);
        if let Some(w) = word(v, &mut i, &["a", "alpha", "b", "beta", "rc", "c", "pre", "preview"]) {
            let kind = match w {
                "a" | "alpha" => 0,
                "b" | "beta" => 1,
                _ => 2,
            };
            skip_sep(v, &mut i);
            pre = Some((kind, number(v, &mut i).unwrap_or(0)));
        } else {
            i = mark;
        }
        // Post-release: `.postN`, `-rN`, `revN` or an implicit `-N`.
        let mark = i;
        let sep = skip_sep(v, &mut i);
        if word(v, &mut i, &["post", "rev", "r"]).is_some() {
            skip_sep(v, &mut i);
            post = Some(number(v, &mut i).unwrap_or(0));
        } else if sep && v.as_bytes()[mark] == b'-' && v.as_bytes().get(i).is_some_and(u8::is_ascii_digit) {
            post = number(v, &mut i);
        } else {
            i = mark;
        }
        // Dev release.
        let mark = i;
        skip_sep(v, &mut i);
        if word(v, &mut i, &["dev"]).is_some() {
            skip_sep(v, &mut i);
            dev = Some(number(v, &mut i).unwrap_or(0));
        } else {
            i = mark;
        }
        if i != v.len() {
            return Err(bad("unexpected text"));
        }
        let local = match local {
            None => None,
            Some(l) => {
                if l.is_empty() {
                    return Err(bad("empty local version"));
                }
                let mut parts = Vec::new();
                for p in l.split(['.', '-', '_']) {
                    if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric()) {
                        return Err(bad("bad local version segment"));
                    }
                    parts.push(match p.parse::<u64>() {
                        Ok(n) => LocalPart::Number(n),
                        Err(_) => LocalPart::Text(p.to_owned()),
                    });
                }
                Some(parts)
            }
        };
        while release.len() > 1 && release.last() == Some(&0) {
            release.pop();
        }
        let pre = match (pre, post, dev) {
            (Some((k, n)), _, _) => Pre::Release(k, n),
            (None, None, Some(_)) => Pre::DevOnly,
            _ => Pre::Final,
        };
        Ok(Version {
            epoch,
            release,
            pre,
            post,
            dev: dev.map_or(DevKey::NotDev, DevKey::Dev),
            local,
        })
    }
}

/// SemVer 2.0 (npm): `MAJOR.MINOR.PATCH[-prerelease][+build]`; a leading
/// `v` or `=` is accepted as npm does; build metadata does not order.
pub mod semver {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
    enum Ident {
        // Numeric identifiers sort before alphanumeric ones.
        Number(u64),
        Text(String),
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Version {
        core: [u64; 3],
        pre: Vec<Ident>,
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| invalid(Scheme::Semver, s, reason);
        let t = s.trim().trim_start_matches(['v', '=']);
        let t = t.split_once('+').map_or(t, |(v, _)| v);
        let (core, pre) = match t.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (t, None),
        };
        let nums: Vec<&str> = core.split('.').collect();
        if nums.len() != 3 {
            return Err(bad("needs MAJOR.MINOR.PATCH"));
        }
        let mut c = [0u64; 3];
        for (slot, n) in c.iter_mut().zip(nums) {
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0')) {
                return Err(bad("bad number"));
            }
            *slot = n.parse().map_err(|_| bad("number too large"))?;
        }
        let pre = match pre {
            None => Vec::new(),
            Some(p) => p
                .split('.')
                .map(|id| {
                    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                        Err(bad("bad prerelease identifier"))
                    } else if id.bytes().all(|b| b.is_ascii_digit()) {
                        id.parse().map(Ident::Number).map_err(|_| bad("number too large"))
                    } else {
                        Ok(Ident::Text(id.to_owned()))
                    }
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Version { core: c, pre })
    }

    impl Ord for Version {
        fn cmp(&self, other: &Self) -> Ordering {
            self.core
                .cmp(&other.core)
                .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                    (true, true) => Ordering::Equal,
                    // A prerelease sorts before its release.
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => self.pre.cmp(&other.pre),
                })
        }
    }
    impl PartialOrd for Version {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
}

/// rpm: `[epoch:]version[-release]`, compared as `rpmvercmp` (rpmio/rpmvercmp.c):
/// alphanumeric segments, separators ignored, numeric segments numerically
/// and newer than alphabetic ones, `~` before everything (even the end),
/// `^` after the end but before anything else.
pub mod rpm {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Version {
        epoch: u64,
        version: String,
        release: String,
    }

    pub fn parse(s: &str) -> Result<Version, VersionError> {
        let bad = |reason| invalid(Scheme::Rpm, s, reason);
        let t = s.trim();
        let (epoch, rest) = match t.split_once(':') {
            Some((e, r)) => (e.parse().map_err(|_| bad("epoch is not a number"))?, r),
            None => (0, t),
        };
        let (version, release) = rest.rsplit_once('-').unwrap_or((rest, ""));
        if version.is_empty() || !rest.chars().all(|c| c.is_ascii_alphanumeric() || "._+~^-".contains(c)) {
            return Err(bad("empty or invalid character"));
        }
        Ok(Version {
            epoch,
            version: version.to_owned(),
            release: release.to_owned(),
        })
    }

    pub(super) fn rpmvercmp(a: &str, b: &str) -> Ordering {
        if a == b {
            return Ordering::Equal;
        }
        let (a, b) = (a.as_bytes(), b.as_bytes());
        let (mut i, mut j) = (0, 0);
        let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
        loop {
            while i < a.len() && sep(a[i]) {
                i += 1;
            }
            while j < b.len() && sep(b[j]) {
                j += 1;
            }
            // Tilde: before everything, even the end.
            match (a.get(i) == Some(&b'~'), b.get(j) == Some(&b'~')) {
                (true, true) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (true, false) => return Ordering::Less,
                (false, true) => return Ordering::Greater,
                _ => {}
            }
            // Caret: after the end, before anything else.
            match (a.get(i) == Some(&b'^'), b.get(j) == Some(&b'^')) {
                (true, true) => {
                    i += 1;
                    j += 1;
                    continue;
                }
                (true, false) => {
                    return if j >= b.len() {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    };
                }
                (false, true) => {
                    return if i >= a.len() {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    };
                }
                _ => {}
            }
            if i >= a.len() || j >= b.len() {
                break;
            }
            let numeric = a[i].is_ascii_digit();
            let take = |s: &[u8], mut k: usize| {
                let start = k;
                while k < s.len()
                    && if numeric {
                        s[k].is_ascii_digit()
                    } else {
                        s[k].is_ascii_alphabetic()
                    }
                {
                    k += 1;
                }
                (start, k)
            };
            let (sa, ea) = take(a, i);
            let (sb, eb) = take(b, j);
            if sb == eb {
                // Different segment kinds: numeric is newer.
                return if numeric { Ordering::Greater } else { Ordering::Less };
            }
            let (mut x, mut y) = (&a[sa..ea], &b[sb..eb]);
            let ord = if numeric {
                while x.first() == Some(&b'0') {
                    x = &x[1..];
                }
                while y.first() == Some(&b'0') {
                    y = &y[1..];
                }
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            } else {
                x.cmp(y)
            };
            if ord != Ordering::Equal {
                return ord;
            }
            i = ea;
            j = eb;
        }
        // The one with segments left is newer.
        match (i >= a.len(), j >= b.len()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        }
    }

    impl Ord for Version {
        fn cmp(&self, other: &Self) -> Ordering {
            self.epoch
                .cmp(&other.epoch)
                .then_with(|| rpmvercmp(&self.version, &other.version))
                .then_with(|| {
                    // A missing release compares equal to any (rpm's rule for
                    // a version-only requirement).
                    if self.release.is_empty() || other.release.is_empty() {
                        Ordering::Equal
                    } else {
                        rpmvercmp(&self.release, &other.release)
                    }
                })
        }
    }
    impl PartialOrd for Version {
        fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
            Some(self.cmp(other))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::{Equal, Greater, Less};

    /// Every list is strictly increasing; checks every pair both ways.
    fn increasing(scheme: Scheme, versions: &[&str]) {
        for (i, a) in versions.iter().enumerate() {
            for (j, b) in versions.iter().enumerate() {
                let got = scheme.compare(a, b).unwrap_or_else(|e| panic!("{e}"));
                assert_eq!(got, i.cmp(&j), "{} {a} vs {b}", scheme.name());
            }
        }
    }

    #[test]
    fn dpkg_order() {
        increasing(
            Scheme::Dpkg,
            &[
                "0.9",
                "1.0~~",
                "1.0~~a",
                "1.0~rc1",
                "1.0",
                "1.0-0.1",
                "1.0-1",
                "1.0-1+b1",
                "1.0-1.1",
                "1.0a",
                "1.0+dfsg",
                "1.0.1",
                "1.2",
                "1.10",
                "3.0.11-1~deb12u2",
                "3.0.11-1",
                "3.0.15-1~deb12u1",
                "1:0.1",
                "2:0.0",
            ],
        );
        // Leading zeros do not count; an explicit epoch 0 is no epoch.
        assert_eq!(Scheme::Dpkg.compare("1.002", "1.2").unwrap(), Equal);
        assert_eq!(Scheme::Dpkg.compare("0:1.2-3", "1.2-3").unwrap(), Equal);
        // The revision is after the last hyphen.
        assert_eq!(Scheme::Dpkg.compare("1.2-3-4", "1.2-3-5").unwrap(), Less);
        for bad in ["", "a1.0", "x:1.0", "1.0 beta", ":1"] {
            let e = Scheme::Dpkg.compare(bad, "1.0").unwrap_err();
            assert!(e.to_string().starts_with("invalid dpkg version"), "{e}");
        }
    }

    #[test]
    fn apk_order() {
        increasing(
            Scheme::Apk,
            &[
                "1.0",
                "1.2_alpha",
                "1.2_alpha1",
                "1.2_alpha2",
                "1.2_beta1",
                "1.2_pre1",
                "1.2_rc1",
                "1.2_rc2",
                "1.2",
                "1.2-r1",
                "1.2-r10",
                "1.2_cvs1",
                "1.2_git20240101",
                "1.2_p1",
                "1.2_p1-r1",
                "1.2a",
                "1.2b",
                "1.2.1_rc1",
                "1.2.1",
                "1.10",
                "3.1.4-r5",
                "3.1.4-r6",
            ],
        );
        assert_eq!(Scheme::Apk.compare("1.2-r0", "1.2").unwrap(), Equal);
        assert_eq!(Scheme::Apk.compare("1.2~abc123-r0", "1.2").unwrap(), Equal);
        assert_eq!(Scheme::Apk.compare("1.2_rc1_p1", "1.2_rc1").unwrap(), Greater);
        for bad in ["", "r1", "1.2_bogus", "1.2-rX", "1..2"] {
            assert!(Scheme::Apk.compare(bad, "1.0").is_err(), "{bad}");
        }
    }

    #[test]
    fn pep440_order() {
        increasing(
            Scheme::Pep440,
            &[
                "0.9",
                "1.0.dev0",
                "1.0.dev1",
                "1.0a1.dev0",
                "1.0a1",
                "1.0a1.post1.dev0",
                "1.0a1.post1",
                "1.0a2",
                "1.0b1",
                "1.0rc1",
                "1.0",
                "1.0+abc",
                "1.0+abc.5",
                "1.0+5",
                "1.0+5.abc",
                "1.0.post1.dev0",
                "1.0.post1",
                "1.0.1",
                "1.1.dev1",
                "1.10",
                "1!0.1",
            ],
        );
        // Normalisations of the specification.
        for (a, b) in [
            ("1.0", "1.0.0"),
            ("1.0ALPHA1", "1.0a1"),
            ("1.0-beta.2", "1.0b2"),
            ("1.0c1", "1.0rc1"),
            ("1.0pre1", "1.0rc1"),
            ("1.0preview1", "1.0rc1"),
            ("1.0a", "1.0a0"),
            ("1.0-1", "1.0.post1"),
            ("1.0rev2", "1.0.post2"),
            ("1.0_post", "1.0.post0"),
            ("1.0-dev", "1.0.dev0"),
            ("v2.1", "2.1"),
            ("0!1.0", "1.0"),
        ] {
            assert_eq!(Scheme::Pep440.compare(a, b).unwrap(), Equal, "{a} == {b}");
        }
        for bad in ["", "abc", "1.0+", "1.0+a b", "1.0-foo", "1.0.x"] {
            assert!(Scheme::Pep440.compare(bad, "1.0").is_err(), "{bad}");
        }
    }

    #[test]
    fn semver_order() {
        // The example of the SemVer 2.0 specification, section 11.
        increasing(
            Scheme::Semver,
            &[
                "1.0.0-alpha",
                "1.0.0-alpha.1",
                "1.0.0-alpha.beta",
                "1.0.0-beta",
                "1.0.0-beta.2",
                "1.0.0-beta.11",
                "1.0.0-rc.1",
                "1.0.0",
                "1.0.1",
                "1.1.0",
                "2.0.0",
                "10.0.0",
            ],
        );
        assert_eq!(Scheme::Semver.compare("1.0.0+build.5", "1.0.0").unwrap(), Equal);
        assert_eq!(Scheme::Semver.compare("v1.2.3", "=1.2.3").unwrap(), Equal);
        for bad in ["", "1.0", "1.0.0.0", "01.0.0", "1.0.0-", "1.0.0-a..b", "x.y.z"] {
            assert!(Scheme::Semver.compare(bad, "1.0.0").is_err(), "{bad}");
        }
    }

    #[test]
    fn rpm_order() {
        increasing(
            Scheme::Rpm,
            &[
                "1.0~rc1-1",
                "1.0-1",
                "1.0^git1-1",
                "1.0a-1",
                "1.0.1-1",
                "1.1-1",
                "1.10-1",
                "3.0.7-24.el9",
                "3.0.7-25.el9",
                "3.0.7-25.el9_2",
                "1:0.1-1",
            ],
        );
        // rpmvercmp's own cases (tests/rpmvercmp.at).
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1a", "2.0.1", Greater),
            ("5.5p1", "5.5p2", Less),
            ("5.5p10", "5.5p1", Greater),
            ("10xyz", "10.1xyz", Less),
            ("xyz10", "xyz10.1", Less),
            ("xyz.4", "8", Less),
            ("5.5p1", "5.6p1", Less),
            ("6.0.rc1", "6.0", Greater),
            ("10b2", "10a1", Greater),
            ("1.0aa", "1.0a", Greater),
            ("10.0001", "10.1", Equal),
            ("1.0~rc1", "1.0~rc1", Equal),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0~rc1~git123", "1.0~rc1", Less),
            ("1.0^", "1.0", Greater),
            ("1.0^git1", "1.0^git2", Less),
            ("1.0^git1", "1.01", Less),
            ("1.0^20160101", "1.0.1", Less),
            ("1.0~rc1^git1", "1.0~rc1", Greater),
        ] {
            assert_eq!(rpm::rpmvercmp(a, b), o, "{a} vs {b}");
            assert_eq!(rpm::rpmvercmp(b, a), o.reverse(), "{b} vs {a}");
        }
        assert_eq!(Scheme::Rpm.compare("1:3.0.7", "1:3.0.7-24.el9").unwrap(), Equal);
        assert!(Scheme::Rpm.compare("x:1", "1").is_err());
        assert_eq!(Scheme::of_ecosystem("AlmaLinux:9"), Some(Scheme::Rpm));
    }

    #[test]
    fn ecosystems_pick_their_scheme() {
        assert_eq!(Scheme::of_ecosystem("Debian:12"), Some(Scheme::Dpkg));
        assert_eq!(Scheme::of_ecosystem("Debian"), Some(Scheme::Dpkg));
        assert_eq!(Scheme::of_ecosystem("Ubuntu:22.04:LTS"), Some(Scheme::Dpkg));
        assert_eq!(Scheme::of_ecosystem("Alpine:v3.19"), Some(Scheme::Apk));
        assert_eq!(Scheme::of_ecosystem("PyPI"), Some(Scheme::Pep440));
        assert_eq!(Scheme::of_ecosystem("npm"), Some(Scheme::Semver));
        assert_eq!(Scheme::of_ecosystem("crates.io"), None);
    }
}
