//! Installed packages of each running container, read from the host
//! through the container's root filesystem ([`crate::rootfs`]: nothing
//! outside the root can be named, a database that is a link is refused).
//!
//! Sources: Debian/Ubuntu `var/lib/dpkg/status` (packages whose status is
//! `installed`, with their source package), Alpine `lib/apk/db/installed`
//! (with the origin package), Python `*.dist-info/METADATA` and
//! `*.egg-info/PKG-INFO` under the interpreters' `site-packages` and
//! `dist-packages`, npm `package-lock.json` at configured paths and the
//! `package.json` of global `node_modules`, rpm 4.16+ `rpmdb.sqlite`
//! (through [`crate::sqlite`]; BerkeleyDB and NDB rpm databases are not
//! read). The distribution (`/etc/os-release`) names the OSV ecosystem:
//! `Debian:12`, `Alpine:v3.19`, `AlmaLinux:9`.
//!
//! When: a container is scanned when first seen, when a file event writes
//! under a package database, and when its databases' fingerprint (device,
//! inode, size and mtime of each database file and site directory) changed
//! at a periodic check; an unchanged inventory is sent again every
//! `resend` (so analyzers that restarted learn it back). Replicas of one
//! image share their lower layers, so the same fingerprint with the same
//! image id reuses the parsed result (bounded cache): parsing happens once
//! per image layer set.
//!
//! ```text
//!  pipeline tick ──targets (container, pid)──▶ inventory task ──spawn_blocking: fingerprint, parse──┐
//!        ▲                                          │ runtime API: image digest (cached per image id) │
//!        └───────────── Inventory records ◀─────────┴─────────────────────────────────────────────────┘
//! ```

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::record::{Container, Inventory, InventoryRecord, Package};
use crate::rootfs::{RootFs, RootFsError};
use crate::runtime::RuntimeClient;

/// Largest package database read (a big dpkg status is a few MiB).
const MAX_DB_BYTES: u64 = 64 * 1024 * 1024;
/// Largest metadata file of one Python package or npm manifest.
const MAX_META_BYTES: u64 = 1024 * 1024;
/// Most entries listed in one directory.
const MAX_DIR_ENTRIES: usize = 20_000;
/// Most packages reported for one container (the aggregator's limit).
use glasshouse_proto::limits::MAX_INVENTORY_PACKAGES as MAX_PACKAGES;
/// Most errors reported for one container.
const MAX_ERRORS: usize = 32;
/// Inventories kept per (image id, fingerprint).
const MAX_CACHED_IMAGES: usize = 256;
/// Containers tracked; beyond this the oldest state is forgotten.
const MAX_TRACKED: usize = 8192;

const DPKG_STATUS: &str = "/var/lib/dpkg/status";
/// rpm 4.16+ (Fedora 33+, RHEL 9 and rebuilds); older BerkeleyDB and NDB
/// databases are not read.
const RPM_SQLITE: &str = "/var/lib/rpm/rpmdb.sqlite";
const APK_INSTALLED: &str = "/lib/apk/db/installed";

/// Where to look and how often.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often each container's databases are checked for changes.
    pub interval: Duration,
    /// An unchanged inventory is sent again this often.
    pub resend: Duration,
    /// npm lockfiles read when present.
    pub npm_lockfiles: Vec<PathBuf>,
    pub proc_root: PathBuf,
}

/// A container to check: its metadata, a live pid in it, and whether a
/// write to a package database was seen since the last check.
#[derive(Debug, Clone)]
pub struct Target {
    pub container: Arc<Container>,
    pub pid: u32,
    pub dirty: bool,
}

/// Whether a written path is a package database (a rescan is due).
pub fn is_package_db(path: &[u8]) -> bool {
    path.starts_with(b"/var/lib/dpkg/")
        || path.starts_with(b"/lib/apk/db/")
        || (path.windows(10).any(|w| w == b"-packages/") && (path.ends_with(b"METADATA") || path.ends_with(b"RECORD")))
        || path.ends_with(b"package-lock.json")
}

/// The distribution of a root filesystem as an OSV ecosystem prefix.
pub fn distro(fs: &RootFs) -> Option<String> {
    let text = fs
        .read(Path::new("/etc/os-release"), MAX_META_BYTES)
        .or_else(|_| fs.read(Path::new("/usr/lib/os-release"), MAX_META_BYTES))
        .ok()
        .map(|(b, _)| String::from_utf8_lossy(&b).into_owned());
    let field = |text: &str, key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_owned())
    };
    if let Some(text) = &text {
        let id = field(text, "ID").unwrap_or_default();
        let version = field(text, "VERSION_ID").unwrap_or_default();
        match id.as_str() {
            "debian" if !version.is_empty() => return Some(format!("Debian:{}", version.split('.').next()?)),
            "ubuntu" if !version.is_empty() => return Some(format!("Ubuntu:{version}")),
            "almalinux" | "rocky" | "rhel" | "centos" | "fedora" | "opensuse-leap" | "sles" if !version.is_empty() => {
                let major = version.split('.').next()?;
                let name = match id.as_str() {
                    "almalinux" => "AlmaLinux",
                    "rocky" => "Rocky Linux",
                    "rhel" | "centos" => "Red Hat",
                    "fedora" => "Fedora",
                    "opensuse-leap" => "openSUSE",
                    _ => "SUSE",
                };
                return Some(format!("{name}:{major}"));
            }
            "alpine" if !version.is_empty() => {
                let mut parts = version.split('.');
                return Some(format!("Alpine:v{}.{}", parts.next()?, parts.next()?));
            }
            _ => {}
        }
    }
    if let Ok((b, _)) = fs.read(Path::new("/etc/alpine-release"), 1024) {
        let v = String::from_utf8_lossy(&b);
        let mut parts = v.trim().split('.');
        return Some(format!("Alpine:v{}.{}", parts.next()?, parts.next()?));
    }
    if let Ok((b, _)) = fs.read(Path::new("/etc/debian_version"), 1024) {
        let v = String::from_utf8_lossy(&b);
        let major = v.trim().split('.').next()?.to_owned();
        if major.chars().all(|c| c.is_ascii_digit()) && !major.is_empty() {
            return Some(format!("Debian:{major}"));
        }
    }
    None
}

/// Packages of a dpkg `status` file: those whose status is `installed`.
pub fn parse_dpkg(text: &str, ecosystem: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut status, mut source) = (None, None, None, None);
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            match k {
                "Package" => name = Some(v),
                "Version" => version = Some(v),
                "Status" => status = Some(v),
                // `Source: openssl (3.0.11-1)`: the name, without the version.
                "Source" => source = v.split_whitespace().next(),
                _ => {}
            }
        }
        let installed = status.is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"));
        if let (Some(n), Some(v), true) = (name, version, installed) {
            out.push(Package {
                ecosystem: ecosystem.to_owned(),
                name: n.to_owned(),
                version: v.to_owned(),
                source_name: source.filter(|s| *s != n).map(str::to_owned),
                location: DPKG_STATUS.to_owned(),
            });
        }
    }
    out
}

/// Packages of an apk `installed` database (`P:` name, `V:` version, `o:` origin).
pub fn parse_apk(text: &str, ecosystem: &str) -> Vec<Package> {
    let mut out = Vec::new();
    for para in text.split("\n\n") {
        let (mut name, mut version, mut origin) = (None, None, None);
        for line in para.lines() {
            match line.split_at_checked(2) {
                Some(("P:", v)) => name = Some(v.trim()),
                Some(("V:", v)) => version = Some(v.trim()),
                Some(("o:", v)) => origin = Some(v.trim()),
                _ => {}
            }
        }
        if let (Some(n), Some(v)) = (name, version)
            && !n.is_empty()
            && !v.is_empty()
        {
            out.push(Package {
                ecosystem: ecosystem.to_owned(),
                name: n.to_owned(),
                version: v.to_owned(),
                source_name: origin.filter(|o| *o != n && !o.is_empty()).map(str::to_owned),
                location: APK_INSTALLED.to_owned(),
            });
        }
    }
    out
}

/// Packages of an rpm sqlite database (`Packages` table of header blobs):
/// name, `[epoch:]version-release`, and the source package from
/// `SOURCERPM`.
pub fn parse_rpm_sqlite(bytes: &[u8], ecosystem: &str) -> Result<Vec<Package>, String> {
    let rows = crate::sqlite::table_rows(bytes, "Packages").map_err(|e| format!("{RPM_SQLITE}: {e}"))?;
    let mut out = Vec::new();
    for (_, values) in rows {
        let Some(crate::sqlite::Value::Blob(blob)) = values.get(1) else {
            continue;
        };
        if let Some(p) = rpm_header(blob, ecosystem) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Name, version and source package of an rpm header blob (as stored in
/// the database: big-endian index count and data length, 16-byte index
/// entries, the data store); `None` when malformed.
pub fn rpm_header(blob: &[u8], ecosystem: &str) -> Option<Package> {
    const NAME: u32 = 1000;
    const VERSION: u32 = 1001;
    const RELEASE: u32 = 1002;
    const EPOCH: u32 = 1003;
    const SOURCERPM: u32 = 1044;
    let word = |pos: usize| {
        blob.get(pos..pos + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (il, dl) = (word(0)? as usize, word(4)? as usize);
    let data_start = 8usize.checked_add(il.checked_mul(16)?)?;
    let data = blob.get(data_start..data_start.checked_add(dl)?)?;
    let (mut name, mut version, mut release, mut epoch, mut source) = (None, None, None, None, None);
    for i in 0..il {
        let e = 8 + 16 * i;
        let (tag, kind, offset) = (word(e)?, word(e + 4)?, word(e + 8)? as usize);
        let string = || {
            let s = data.get(offset..)?;
            let end = s.iter().position(|b| *b == 0)?;
            Some(String::from_utf8_lossy(&s[..end]).into_owned())
        };
        match (tag, kind) {
            (NAME, 6) => name = string(),
            (VERSION, 6) => version = string(),
            (RELEASE, 6) => release = string(),
            (SOURCERPM, 6) => source = string(),
            (EPOCH, 4) => {
                epoch = data
                    .get(offset..offset + 4)
                    .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => {}
        }
    }
    let (name, version, release) = (name?, version?, release?);
    // `openssl-3.0.7-24.el9.src.rpm` → `openssl`.
    let source_name = source
        .as_deref()
        .and_then(|s| s.strip_suffix(".src.rpm").or_else(|| s.strip_suffix(".nosrc.rpm")))
        .and_then(|s| s.rsplitn(3, '-').nth(2))
        .filter(|s| !s.is_empty() && *s != name)
        .map(str::to_owned);
    let version = match epoch {
        Some(e) if e > 0 => format!("{e}:{version}-{release}"),
        _ => format!("{version}-{release}"),
    };
    Some(Package {
        ecosystem: ecosystem.to_owned(),
        name,
        version,
        source_name,
        location: RPM_SQLITE.to_owned(),
    })
}

/// `Name` and `Version` of Python core metadata (RFC 822 headers).
pub fn parse_python_metadata(text: &str) -> Option<(String, String)> {
    let (mut name, mut version) = (None, None);
    for line in text.lines() {
        if line.is_empty() {
            break;
        }
        if let Some(v) = line.strip_prefix("Name:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("Version:") {
            version = Some(v.trim().to_owned());
        }
    }
    Some((name.filter(|n| !n.is_empty())?, version.filter(|v| !v.is_empty())?))
}

/// Packages of an npm `package-lock.json` (lockfile versions 1, 2 and 3).
pub fn parse_npm_lock(json: &[u8], location: &str) -> Result<Vec<Package>, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("{location}: not JSON: {e}"))?;
    let mut out = Vec::new();
    let mut push = |name: &str, version: &str| {
        if !name.is_empty() && !version.is_empty() {
            out.push(Package {
                ecosystem: "npm".into(),
                name: name.to_owned(),
                version: version.to_owned(),
                source_name: None,
                location: location.to_owned(),
            });
        }
    };
    if let Some(packages) = v.get("packages").and_then(|p| p.as_object()) {
        for (path, p) in packages {
            // "" is the project itself; links have no version of their own.
            let Some(i) = path.rfind("node_modules/") else { continue };
            let name = &path[i + "node_modules/".len()..];
            if let Some(version) = p.get("version").and_then(|v| v.as_str()) {
                push(name, version);
            }
        }
    } else if let Some(deps) = v.get("dependencies").and_then(|d| d.as_object()) {
        let mut stack: Vec<&serde_json::Map<String, serde_json::Value>> = vec![deps];
        while let Some(deps) = stack.pop() {
            for (name, d) in deps {
                if let Some(version) = d.get("version").and_then(|v| v.as_str()) {
                    push(name, version);
                }
                if let Some(nested) = d.get("dependencies").and_then(|d| d.as_object()) {
                    stack.push(nested);
                }
            }
        }
    } else {
        return Err(format!("{location}: neither packages nor dependencies"));
    }
    Ok(out)
}

/// Paths whose state decides whether a rescan is needed.
fn watched(fs: &RootFs, settings: &Settings) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [DPKG_STATUS, APK_INSTALLED, RPM_SQLITE, "/etc/os-release"]
        .iter()
        .map(PathBuf::from)
        .collect();
    paths.extend(python_site_dirs(fs));
    paths.extend(settings.npm_lockfiles.iter().cloned());
    paths.extend(["/usr/lib/node_modules", "/usr/local/lib/node_modules"].map(PathBuf::from));
    paths
}

/// A hash of what the watched paths are now.
pub fn fingerprint(fs: &RootFs, settings: &Settings) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in watched(fs, settings) {
        p.hash(&mut h);
        match fs.stat(&p) {
            Ok(s) => s.hash(&mut h),
            Err(e) => e.is_not_found().hash(&mut h),
        }
    }
    h.finish()
}

fn python_site_dirs(fs: &RootFs) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/usr/lib/python3/dist-packages")];
    for base in ["/usr/lib", "/usr/local/lib"] {
        let Ok(names) = fs.read_dir(Path::new(base), MAX_DIR_ENTRIES) else {
            continue;
        };
        for n in names {
            let n = crate::rootfs::lossy(&n);
            if n.starts_with("python3") && !n.contains('/') {
                for sub in ["site-packages", "dist-packages"] {
                    let p = Path::new(base).join(&n).join(sub);
                    if fs.stat(&p).is_ok() {
                        out.push(p);
                    }
                }
            }
        }
    }
    out.retain(|p| fs.stat(p).is_ok());
    out
}

/// Reads every package database of a root filesystem.
pub fn scan(fs: &RootFs, settings: &Settings) -> Inventory {
    let mut inv = Inventory {
        distro: distro(fs),
        ..Inventory::default()
    };
    let error = |inv: &mut Inventory, e: String| {
        if inv.errors.len() < MAX_ERRORS {
            inv.errors.push(e);
        }
    };
    let eco = |base: &str| match &inv.distro {
        Some(d) if d.starts_with(base) => d.clone(),
        _ => base.to_owned(),
    };
    let (dpkg_eco, apk_eco) = (eco("Debian"), eco("Alpine"));
    let dpkg_eco = if inv.distro.as_deref().is_some_and(|d| d.starts_with("Ubuntu")) {
        inv.distro.clone().unwrap_or(dpkg_eco)
    } else {
        dpkg_eco
    };
    match fs.read(Path::new(DPKG_STATUS), MAX_DB_BYTES) {
        Ok((b, _)) => inv.packages.extend(parse_dpkg(&String::from_utf8_lossy(&b), &dpkg_eco)),
        Err(e) if e.is_not_found() => {}
        Err(e) => error(&mut inv, e.to_string()),
    }
    match fs.read(Path::new(APK_INSTALLED), MAX_DB_BYTES) {
        Ok((b, _)) => inv.packages.extend(parse_apk(&String::from_utf8_lossy(&b), &apk_eco)),
        Err(e) if e.is_not_found() => {}
        Err(e) => error(&mut inv, e.to_string()),
    }
    match fs.read(Path::new(RPM_SQLITE), MAX_DB_BYTES) {
        Ok((b, _)) => {
            let eco = match &inv.distro {
                Some(d) if !d.starts_with("Debian") && !d.starts_with("Ubuntu") && !d.starts_with("Alpine") => {
                    d.clone()
                }
                _ => "RPM".to_owned(),
            };
            match parse_rpm_sqlite(&b, &eco) {
                Ok(p) => inv.packages.extend(p),
                Err(e) => error(&mut inv, e),
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => error(&mut inv, e.to_string()),
    }
    for dir in python_site_dirs(fs) {
        let names = match fs.read_dir(&dir, MAX_DIR_ENTRIES) {
            Ok(n) => n,
            Err(e) => {
                error(&mut inv, e.to_string());
                continue;
            }
        };
        for n in names {
            let n = crate::rootfs::lossy(&n);
            let meta = if n.ends_with(".dist-info") {
                dir.join(&n).join("METADATA")
            } else if n.ends_with(".egg-info") {
                dir.join(&n).join("PKG-INFO")
            } else {
                continue;
            };
            match fs.read(&meta, MAX_META_BYTES) {
                Ok((b, _)) => {
                    if let Some((name, version)) = parse_python_metadata(&String::from_utf8_lossy(&b)) {
                        inv.packages.push(Package {
                            ecosystem: "PyPI".into(),
                            name,
                            version,
                            source_name: None,
                            location: meta.display().to_string(),
                        });
                    }
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => error(&mut inv, e.to_string()),
            }
        }
    }
    for lock in &settings.npm_lockfiles {
        match fs.read(lock, MAX_DB_BYTES) {
            Ok((b, _)) => match parse_npm_lock(&b, &lock.display().to_string()) {
                Ok(p) => inv.packages.extend(p),
                Err(e) => error(&mut inv, e),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => error(&mut inv, e.to_string()),
        }
    }
    for base in ["/usr/lib/node_modules", "/usr/local/lib/node_modules"] {
        let Ok(names) = fs.read_dir(Path::new(base), MAX_DIR_ENTRIES) else {
            continue;
        };
        for n in names {
            let manifest = Path::new(base).join(crate::rootfs::lossy(&n)).join("package.json");
            if let Ok((b, _)) = fs.read(&manifest, MAX_META_BYTES)
                && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b)
                && let (Some(name), Some(version)) = (v["name"].as_str(), v["version"].as_str())
            {
                inv.packages.push(Package {
                    ecosystem: "npm".into(),
                    name: name.to_owned(),
                    version: version.to_owned(),
                    source_name: None,
                    location: manifest.display().to_string(),
                });
            }
        }
    }
    // Strings leave the agent as protobuf `string`s (valid UTF-8, bounded).
    inv.packages.retain(|p| p.name.len() <= 1024 && p.version.len() <= 1024);
    if inv.packages.len() > MAX_PACKAGES {
        inv.packages.truncate(MAX_PACKAGES);
        error(
            &mut inv,
            format!("more than {MAX_PACKAGES} packages, the rest not reported"),
        );
    }
    inv
}

/// Per-container state of the scanner.
#[derive(Debug)]
struct Tracked {
    fingerprint: u64,
    sent_at: Instant,
    checked_at: Instant,
}

/// Decides which containers to (re)scan and caches results per image.
#[derive(Debug)]
pub struct Scanner {
    settings: Settings,
    runtime: RuntimeClient,
    tracked: HashMap<String, Tracked>,
    by_image: HashMap<(String, u64), Arc<Inventory>>,
    digests: HashMap<String, Option<String>>,
}

impl Scanner {
    pub fn new(settings: Settings, runtime: RuntimeClient) -> Scanner {
        Scanner {
            settings,
            runtime,
            tracked: HashMap::new(),
            by_image: HashMap::new(),
            digests: HashMap::new(),
        }
    }

    /// Checks the targets; returns the inventories to send.
    pub async fn check(&mut self, targets: Vec<Target>) -> Vec<InventoryRecord> {
        let live: std::collections::HashSet<&str> = targets.iter().map(|t| t.container.key.id.as_str()).collect();
        self.tracked.retain(|id, _| live.contains(id.as_str()));
        let mut out = Vec::new();
        for t in targets {
            let id = t.container.key.id.clone();
            let due = match self.tracked.get(&id) {
                None => true,
                Some(s) => {
                    t.dirty
                        || s.checked_at.elapsed() >= self.settings.interval
                        || s.sent_at.elapsed() >= self.settings.resend
                }
            };
            if !due {
                continue;
            }
            let digest = self.digest(&t.container).await;
            let settings = self.settings.clone();
            let image_id = t.container.meta.image_id.clone();
            let cached: Vec<((String, u64), Arc<Inventory>)> = image_id
                .as_ref()
                .map(|img| {
                    self.by_image
                        .iter()
                        .filter(|((i, _), _)| i == img)
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let pid = t.pid;
            let started = Instant::now();
            // File reads block: off the async runtime.
            let result = tokio::task::spawn_blocking(move || -> Result<(u64, Arc<Inventory>, bool), RootFsError> {
                let fs = RootFs::of_process(&settings.proc_root, pid)?;
                let fp = fingerprint(&fs, &settings);
                if let Some((_, inv)) = cached.into_iter().find(|((_, f), _)| *f == fp) {
                    return Ok((fp, inv, true));
                }
                Ok((fp, Arc::new(scan(&fs, &settings)), false))
            })
            .await;
            let (fp, inventory, from_cache) = match result {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    // The process exited meanwhile: the next tick picks another.
                    tracing::debug!(container = %id, error = %e, "inventory: root not readable");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "inventory scan failed");
                    continue;
                }
            };
            let now = Instant::now();
            let unchanged = self.tracked.get(&id).is_some_and(|s| s.fingerprint == fp);
            let resend = self
                .tracked
                .get(&id)
                .is_none_or(|s| s.sent_at.elapsed() >= self.settings.resend);
            if let Some(img) = &image_id
                && !from_cache
            {
                if self.by_image.len() >= MAX_CACHED_IMAGES {
                    self.by_image.clear();
                }
                self.by_image.insert((img.clone(), fp), inventory.clone());
            }
            if self.tracked.len() >= MAX_TRACKED && !self.tracked.contains_key(&id) {
                self.tracked.clear();
            }
            let sent_at = if unchanged && !resend && !t.dirty {
                self.tracked.get(&id).map_or(now, |s| s.sent_at)
            } else {
                now
            };
            self.tracked.insert(
                id.clone(),
                Tracked {
                    fingerprint: fp,
                    sent_at,
                    checked_at: now,
                },
            );
            if unchanged && !resend && !t.dirty {
                continue;
            }
            tracing::info!(
                container = %id,
                packages = inventory.packages.len(),
                errors = inventory.errors.len(),
                from_cache,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "inventory"
            );
            for e in &inventory.errors {
                tracing::warn!(container = %id, error = %e.escape_debug(), "inventory: package database not read");
            }
            out.push(InventoryRecord {
                container: t.container.clone(),
                time_unix_ns: crate::procfs::now_unix_ns(),
                image_digest: digest,
                inventory,
            });
        }
        out
    }

    async fn digest(&mut self, c: &Container) -> Option<String> {
        let image_id = c.meta.image_id.clone()?;
        if let Some(d) = self.digests.get(&image_id) {
            return d.clone();
        }
        let d = match self.runtime.image_digest(&image_id, c.meta.image.as_deref()).await {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(image = %image_id, error = %e, "image digest unknown");
                return None;
            }
        };
        if self.digests.len() >= MAX_CACHED_IMAGES {
            self.digests.clear();
        }
        self.digests.insert(image_id, d.clone());
        d
    }
}

/// Runs the scanner: targets in, records out, until the targets channel closes.
pub async fn run(mut scanner: Scanner, mut targets: mpsc::Receiver<Vec<Target>>, out: mpsc::Sender<InventoryRecord>) {
    while let Some(t) = targets.recv().await {
        for r in scanner.check(t).await {
            if out.send(r).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn dpkg_status_fixture() {
        let p = parse_dpkg(&fixture("dpkg/status"), "Debian:12");
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.source_name.as_deref()))
            .collect();
        // `deinstall ok config-files` is not installed.
        assert_eq!(
            names,
            [
                ("base-files", "12.4+deb12u4", None),
                ("libssl3", "3.0.11-1~deb12u1", Some("openssl")),
                ("openssl", "3.0.11-1~deb12u1", None),
                ("zlib1g", "1:1.2.13.dfsg-1", Some("zlib")),
            ]
        );
        assert!(
            p.iter()
                .all(|p| p.ecosystem == "Debian:12" && p.location == DPKG_STATUS)
        );
    }

    #[test]
    fn apk_installed_fixture() {
        let p = parse_apk(&fixture("apk/installed"), "Alpine:v3.18");
        let names: Vec<_> = p
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.source_name.as_deref()))
            .collect();
        assert_eq!(
            names,
            [
                ("musl", "1.2.4-r2", None),
                ("libcrypto3", "3.1.4-r0", Some("openssl")),
                ("libssl3", "3.1.4-r0", Some("openssl")),
                ("busybox", "1.36.1-r5", None),
            ]
        );
    }

    #[test]
    fn rpm_sqlite_fixture() {
        // Written by tests/fixtures/rpm/make_rpmdb.py with python3's sqlite3
        // in rpm's schema and header blob format.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/rpm/rpmdb.sqlite");
        let packages = parse_rpm_sqlite(&std::fs::read(p).unwrap(), "AlmaLinux:9").unwrap();
        assert_eq!(packages.len(), 303);
        let got: Vec<_> = packages[..3]
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.source_name.as_deref()))
            .collect();
        assert_eq!(
            got,
            [
                ("openssl-libs", "1:3.0.7-24.el9", Some("openssl")),
                ("bash", "5.1.8-6.el9_1", None),
                ("glibc-all-langpacks", "2.34-60.el9", Some("glibc")),
            ]
        );
        assert!(
            packages
                .iter()
                .all(|p| p.ecosystem == "AlmaLinux:9" && p.location == RPM_SQLITE)
        );
        assert!(
            parse_rpm_sqlite(b"not sqlite", "RPM")
                .unwrap_err()
                .contains("not a SQLite 3 database")
        );
        assert_eq!(rpm_header(&[0, 0, 0, 9, 0, 0, 0, 1], "RPM"), None);
    }

    #[test]
    fn python_metadata_and_npm_lockfiles() {
        let meta = "Metadata-Version: 2.1\nName: requests\nVersion: 2.28.1\nSummary: x\n\nName: not-this\n";
        assert_eq!(parse_python_metadata(meta), Some(("requests".into(), "2.28.1".into())));
        assert_eq!(parse_python_metadata("Name: x\n"), None);
        let v3 = br#"{"lockfileVersion":3,"packages":{"":{"name":"app","version":"1.0.0"},
            "node_modules/minimist":{"version":"1.2.5"},
            "node_modules/a/node_modules/@scope/b":{"version":"2.0.0"}}}"#;
        let p = parse_npm_lock(v3, "/app/package-lock.json").unwrap();
        let names: Vec<_> = p.iter().map(|p| (p.name.as_str(), p.version.as_str())).collect();
        assert_eq!(names, [("@scope/b", "2.0.0"), ("minimist", "1.2.5")]);
        let v1 = br#"{"lockfileVersion":1,"dependencies":{"minimist":{"version":"0.0.8","dependencies":{"x":{"version":"1.0.0"}}}}}"#;
        assert_eq!(parse_npm_lock(v1, "l").unwrap().len(), 2);
        assert!(
            parse_npm_lock(b"{}", "l")
                .unwrap_err()
                .contains("neither packages nor dependencies")
        );
        assert!(parse_npm_lock(b"nope", "l").unwrap_err().starts_with("l: not JSON"));
    }

    fn settings() -> Settings {
        Settings {
            interval: Duration::from_secs(60),
            resend: Duration::from_secs(3600),
            npm_lockfiles: vec![PathBuf::from("/app/package-lock.json")],
            proc_root: PathBuf::from("/proc"),
        }
    }

    #[test]
    fn a_root_filesystem_is_scanned_and_a_planted_link_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib/python3.11/site-packages/requests-2.28.1.dist-info")).unwrap();
        std::fs::create_dir_all(root.join("app")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
        std::fs::write(root.join("var/lib/dpkg/status"), fixture("dpkg/status")).unwrap();
        std::fs::write(
            root.join("usr/lib/python3.11/site-packages/requests-2.28.1.dist-info/METADATA"),
            "Name: requests\nVersion: 2.28.1\n",
        )
        .unwrap();
        std::fs::write(
            root.join("app/package-lock.json"),
            r#"{"packages":{"node_modules/minimist":{"version":"1.2.5"}}}"#,
        )
        .unwrap();
        let fs = RootFs::open_dir(root).unwrap();
        let s = settings();
        let inv = scan(&fs, &s);
        assert_eq!(inv.distro.as_deref(), Some("Debian:12"));
        assert!(inv.errors.is_empty(), "{:?}", inv.errors);
        let mut ecos: Vec<_> = inv.packages.iter().map(|p| p.ecosystem.as_str()).collect();
        ecos.dedup();
        assert_eq!(ecos, ["Debian:12", "PyPI", "npm"]);
        let before = fingerprint(&fs, &s);
        assert_eq!(fingerprint(&fs, &s), before);

        // The status replaced by a link to a host file: refused, named, not read.
        let host = dir.path().join("host-status");
        std::fs::write(&host, fixture("dpkg/status").replace("base-files", "host-only")).unwrap();
        std::fs::remove_file(root.join("var/lib/dpkg/status")).unwrap();
        std::os::unix::fs::symlink(&host, root.join("var/lib/dpkg/status")).unwrap();
        assert_ne!(fingerprint(&fs, &s), before);
        let inv = scan(&fs, &s);
        assert!(
            inv.packages
                .iter()
                .all(|p| p.name != "host-only" && p.ecosystem != "Debian:12")
        );
        assert_eq!(
            inv.errors,
            [format!(
                "/var/lib/dpkg/status: a symbolic link (to {:?}), refused",
                host.display().to_string()
            )]
        );
    }

    #[test]
    fn distributions_name_the_ecosystem() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        let fs = RootFs::open_dir(dir.path()).unwrap();
        assert_eq!(distro(&fs), None);
        std::fs::write(dir.path().join("etc/alpine-release"), "3.18.4\n").unwrap();
        assert_eq!(distro(&fs).as_deref(), Some("Alpine:v3.18"));
        std::fs::write(dir.path().join("etc/os-release"), "ID=ubuntu\nVERSION_ID=\"22.04\"\n").unwrap();
        assert_eq!(distro(&fs).as_deref(), Some("Ubuntu:22.04"));
        std::fs::write(dir.path().join("etc/os-release"), "ID=debian\nVERSION_ID=\"12\"\n").unwrap();
        assert_eq!(distro(&fs).as_deref(), Some("Debian:12"));
    }

    /// A fake `/proc` whose `PID/root` links point at root directories.
    fn fake_proc(roots: &[(u32, &Path)]) -> tempfile::TempDir {
        let proc_root = tempfile::tempdir().unwrap();
        for (pid, root) in roots {
            std::fs::create_dir_all(proc_root.path().join(pid.to_string())).unwrap();
            std::os::unix::fs::symlink(root, proc_root.path().join(pid.to_string()).join("root")).unwrap();
        }
        proc_root
    }

    fn target(id: &str, image_id: &str, pid: u32, dirty: bool) -> Target {
        let mut c = (*crate::pipeline::tests::container(id)).clone_for_test();
        c.meta.image_id = Some(image_id.into());
        Target {
            container: Arc::new(c),
            pid,
            dirty,
        }
    }

    #[tokio::test]
    async fn replicas_share_a_scan_changes_rescan_and_unchanged_is_not_resent() {
        let rootfs = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(rootfs.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(rootfs.path().join("var/lib/dpkg/status"), fixture("dpkg/status")).unwrap();
        let proc_root = fake_proc(&[(10, rootfs.path()), (11, rootfs.path())]);
        let settings = Settings {
            interval: Duration::ZERO,
            resend: Duration::from_secs(3600),
            npm_lockfiles: vec![],
            proc_root: proc_root.path().to_owned(),
        };
        let mut scanner = Scanner::new(settings, RuntimeClient::new(vec![]));
        let first = scanner
            .check(vec![
                target("a", "sha256:1", 10, false),
                target("b", "sha256:1", 11, false),
            ])
            .await;
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].inventory.packages.len(), 4);
        assert!(
            Arc::ptr_eq(&first[0].inventory, &first[1].inventory),
            "the second replica reuses the scan"
        );
        // Nothing changed: checked, not sent again.
        let again = scanner
            .check(vec![
                target("a", "sha256:1", 10, false),
                target("b", "sha256:1", 11, false),
            ])
            .await;
        assert!(again.is_empty(), "{again:?}");
        // The database changes: rescanned and sent.
        let status = fixture("dpkg/status").replace("Version: 12.4+deb12u4", "Version: 12.4+deb12u5");
        std::fs::write(rootfs.path().join("var/lib/dpkg/status"), status).unwrap();
        let changed = scanner.check(vec![target("a", "sha256:1", 10, false)]).await;
        assert_eq!(changed.len(), 1);
        assert_eq!(changed[0].inventory.packages[0].version, "12.4+deb12u5");
        // A write seen by the file sensor sends it again even when unchanged.
        assert_eq!(scanner.check(vec![target("a", "sha256:1", 10, true)]).await.len(), 1);
        // A container whose process is gone is skipped, not an error.
        assert!(scanner.check(vec![target("c", "sha256:2", 99, false)]).await.is_empty());
    }

    #[test]
    fn package_database_writes_are_recognised() {
        assert!(is_package_db(b"/var/lib/dpkg/status"));
        assert!(is_package_db(b"/lib/apk/db/installed"));
        assert!(is_package_db(
            b"/usr/lib/python3.11/site-packages/x-1.dist-info/METADATA"
        ));
        assert!(!is_package_db(b"/etc/passwd"));
    }
}
