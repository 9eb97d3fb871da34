//! Reading files of a container's root filesystem from the host, safely.
//!
//! A container's files are attacker-controlled, and so are its symbolic
//! links: `var/lib/dpkg/status -> /etc/shadow`, opened naively through
//! `/proc/PID/root`, would make the agent read the **host's** shadow file.
//! Every open here goes through `openat2(2)` relative to the container's
//! root directory with `RESOLVE_IN_ROOT` (every absolute link and every `..`
//! resolves inside the root, as the container's own processes would see
//! it; nothing can name a file outside) and `RESOLVE_NO_MAGICLINKS`
//! (no `/proc/self/fd/N`-style jumps). On top of that the last component of
//! a file read must not be a symbolic link at all (`O_NOFOLLOW`): a package
//! database that is a link is refused with an error naming its target, so a
//! planted link is reported, not silently followed. Files are opened
//! `O_NONBLOCK` (a FIFO planted in place of a database cannot hang the
//! agent), must be regular files and are read up to a size limit.
//!
//! ```text
//!  /proc/PID/root ──open(O_PATH|O_DIRECTORY)──▶ root fd
//!  root fd + "var/lib/dpkg/status" ──openat2(RESOLVE_IN_ROOT|NO_MAGICLINKS, O_NOFOLLOW)──▶ file
//! ```

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// `RESOLVE_NO_MAGICLINKS` of `<linux/openat2.h>`.
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// `RESOLVE_IN_ROOT` of `<linux/openat2.h>`.
const RESOLVE_IN_ROOT: u64 = 0x10;

/// `struct open_how` of `<linux/openat2.h>`.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Why a file of a container could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RootFsError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: a symbolic link (to {target:?}), refused")]
    Symlink { path: String, target: String },
    #[error("{path}: not a regular file, refused")]
    NotRegular { path: String },
    #[error("{path}: larger than {max} bytes, refused")]
    TooLarge { path: String, max: u64 },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("root of process {pid}: {source}")]
    Root {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

impl RootFsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, RootFsError::NotFound { .. })
    }
}

/// What [`RootFs::stat`] tells: enough to notice a file changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i64,
}

/// A container's root directory, opened once.
#[derive(Debug)]
pub struct RootFs {
    root: OwnedFd,
}

impl RootFs {
    /// The root of the mount namespace process `pid` sees, through `proc_root`
    /// (normally `/proc`).
    pub fn of_process(proc_root: &Path, pid: u32) -> Result<RootFs, RootFsError> {
        RootFs::open_dir(&proc_root.join(pid.to_string()).join("root"))
            .map_err(|source| RootFsError::Root { pid, source })
    }

    /// A directory used as the root (tests, or a root filesystem on disk).
    pub fn open_dir(path: &Path) -> std::io::Result<RootFs> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
        // SAFETY: `c` is a valid NUL-terminated string; the flags are valid.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is owned by nobody else.
        let root = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(RootFs { root })
    }

    /// `openat2` of `path` (absolute or relative, always inside the root).
    fn openat2(&self, path: &Path, flags: i32) -> std::io::Result<OwnedFd> {
        let rel = path.strip_prefix("/").unwrap_or(path);
        let rel = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let c = CString::new(rel.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path with a NUL byte"))?;
        let how = OpenHow {
            flags: (flags | libc::O_CLOEXEC) as u64,
            mode: 0,
            resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
        };
        loop {
            // SAFETY: openat2(2) with a valid directory fd, a NUL-terminated
            // path and a properly sized `open_how`; it only reads them.
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_openat2,
                    self.root.as_raw_fd(),
                    c.as_ptr(),
                    &how as *const OpenHow,
                    size_of::<OpenHow>(),
                )
            };
            if fd >= 0 {
                // SAFETY: a new descriptor returned by the kernel, owned by nobody else.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
            }
            let e = std::io::Error::last_os_error();
            // EAGAIN: a concurrent rename raced the resolution; try again.
            if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
                return Err(e);
            }
        }
    }

    fn error(&self, path: &Path, e: std::io::Error) -> RootFsError {
        let shown = path.display().to_string();
        match e.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR) => RootFsError::NotFound { path: shown },
            Some(libc::ELOOP) => match self.link_target(path) {
                Some(target) => RootFsError::Symlink { path: shown, target },
                None => RootFsError::Io { path: shown, source: e },
            },
            _ => RootFsError::Io { path: shown, source: e },
        }
    }

    /// The target of `path` when its last component is a symbolic link.
    fn link_target(&self, path: &Path) -> Option<String> {
        let fd = self.openat2(path, libc::O_PATH | libc::O_NOFOLLOW).ok()?;
        let mut buf = vec![0u8; 4096];
        let empty = c"";
        // SAFETY: readlinkat(2) on an O_PATH descriptor of the link with an
        // empty path reads that link; `buf` is valid for `buf.len()` bytes.
        let n = unsafe { libc::readlinkat(fd.as_raw_fd(), empty.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        (n >= 0).then(|| {
            buf.truncate(n as usize);
            String::from_utf8_lossy(&buf).into_owned()
        })
    }

    /// Opens a regular file for reading; a symbolic link as last component,
    /// or anything but a regular file, is refused.
    pub fn open_file(&self, path: &Path) -> Result<(File, Stamp), RootFsError> {
        let fd = self
            .openat2(
                path,
                libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
            )
            .map_err(|e| self.error(path, e))?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| RootFsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        if !meta.file_type().is_file() {
            return Err(RootFsError::NotRegular {
                path: path.display().to_string(),
            });
        }
        Ok((file, stamp(&meta)))
    }

    /// Reads a whole regular file of at most `max` bytes.
    pub fn read(&self, path: &Path, max: u64) -> Result<(Vec<u8>, Stamp), RootFsError> {
        let (file, stamp) = self.open_file(path)?;
        if stamp.size > max {
            return Err(RootFsError::TooLarge {
                path: path.display().to_string(),
                max,
            });
        }
        let mut out = Vec::with_capacity(stamp.size as usize);
        // `take`: a file growing while read still stops at the limit.
        file.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|source| RootFsError::Io {
                path: path.display().to_string(),
                source,
            })?;
        if out.len() as u64 > max {
            return Err(RootFsError::TooLarge {
                path: path.display().to_string(),
                max,
            });
        }
        Ok((out, stamp))
    }

    /// What a path is now (following links inside the root), without reading it.
    pub fn stat(&self, path: &Path) -> Result<Stamp, RootFsError> {
        let fd = self.openat2(path, libc::O_PATH).map_err(|e| self.error(path, e))?;
        let meta = File::from(fd).metadata().map_err(|source| RootFsError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Ok(stamp(&meta))
    }

    /// Names in a directory (resolved inside the root), sorted, at most `max`.
    pub fn read_dir(&self, path: &Path, max: usize) -> Result<Vec<OsString>, RootFsError> {
        let fd = self
            .openat2(path, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| self.error(path, e))?;
        // The descriptor is already resolved inside the root: listing it
        // through its /proc/self/fd entry cannot leave it.
        let listing = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let mut names: Vec<OsString> = std::fs::read_dir(&listing)
            .map_err(|source| RootFsError::Io {
                path: path.display().to_string(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .take(max)
            .collect();
        drop(fd);
        names.sort();
        Ok(names)
    }
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    Stamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    }
}

/// `name` as text for reports (lossy: names inside containers may be any bytes).
pub fn lossy(name: &OsString) -> String {
    String::from_utf8_lossy(&name.clone().into_vec()).into_owned()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A host directory holding a "secret" and a fake root beside it.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "host secret\n").unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
        (dir, secret, root)
    }

    #[test]
    fn a_file_inside_is_read() {
        let (_d, _secret, root) = setup();
        let fs = RootFs::open_dir(&root).unwrap();
        let (bytes, stamp) = fs.read(Path::new("/etc/os-release"), 1024).unwrap();
        assert_eq!(bytes, b"ID=debian\n");
        assert_eq!(stamp.size, 10);
        assert_eq!(fs.stat(Path::new("etc/os-release")).unwrap(), stamp);
        assert_eq!(fs.read_dir(Path::new("/"), 10).unwrap(), ["etc", "var"]);
    }

    #[test]
    fn a_link_to_a_host_file_is_refused_and_the_host_file_not_read() {
        let (_d, secret, root) = setup();
        symlink(&secret, root.join("var/lib/dpkg/status")).unwrap();
        let fs = RootFs::open_dir(&root).unwrap();
        let err = fs.read(Path::new("/var/lib/dpkg/status"), 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "/var/lib/dpkg/status: a symbolic link (to {:?}), refused",
                secret.display().to_string()
            )
        );
        // Through a directory link, an absolute target resolves inside the root.
        std::fs::remove_file(root.join("var/lib/dpkg/status")).unwrap();
        std::fs::remove_dir(root.join("var/lib/dpkg")).unwrap();
        symlink(secret.parent().unwrap(), root.join("var/lib/dpkg")).unwrap();
        let err = fs.read(Path::new("/var/lib/dpkg/secret"), 1 << 20).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        // And `..` cannot climb out either.
        let err = fs.read(Path::new("../../secret"), 1 << 20).unwrap_err();
        assert!(err.is_not_found(), "{err}");
        let err = fs.read(Path::new("/../secret"), 1 << 20).unwrap_err();
        assert!(err.is_not_found(), "{err}");
    }

    #[test]
    fn a_link_inside_the_root_is_followed_for_directories() {
        let (_d, _secret, root) = setup();
        std::fs::create_dir_all(root.join("usr/lib/sysimage/rpm")).unwrap();
        std::fs::write(root.join("usr/lib/sysimage/rpm/db"), "x").unwrap();
        symlink("/usr/lib/sysimage/rpm", root.join("var/lib/rpm")).unwrap();
        let fs = RootFs::open_dir(&root).unwrap();
        assert_eq!(fs.read(Path::new("/var/lib/rpm/db"), 10).unwrap().0, b"x");
    }

    #[test]
    fn fifos_devices_directories_and_large_files_are_refused() {
        let (_d, _secret, root) = setup();
        let fifo = CString::new(root.join("var/lib/dpkg/status").as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let fs = RootFs::open_dir(&root).unwrap();
        let err = fs.read(Path::new("/var/lib/dpkg/status"), 1024).unwrap_err();
        assert_eq!(err.to_string(), "/var/lib/dpkg/status: not a regular file, refused");
        let err = fs.read(Path::new("/etc"), 1024).unwrap_err();
        assert_eq!(err.to_string(), "/etc: not a regular file, refused");
        let err = fs.read(Path::new("/etc/os-release"), 5).unwrap_err();
        assert_eq!(err.to_string(), "/etc/os-release: larger than 5 bytes, refused");
        let err = fs.read(Path::new("/nope"), 5).unwrap_err();
        assert_eq!(err.to_string(), "/nope: not found");
    }
}
