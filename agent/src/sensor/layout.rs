//! The records the eBPF programs write and the structs user space writes
//! into their maps, as `#[repr(C)]` Rust types: one layout for kernel and
//! user space. The C definitions in `bpf/sensors.bpf.c` are the source; the
//! tests below check every type here against the BTF of the compiled object
//! (size and the offset of every field), so a change on one side that the
//! other misses fails a test instead of misreading records.
//!
//! Records are read with `zerocopy` (a record shorter than its type is
//! refused, never misread); both sides are the same machine, so fields are
//! in native byte order.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `enum` of `struct gh_header.kind` (`GH_EXEC` …).
pub const KIND_EXEC: u32 = 1;
pub const KIND_FORK: u32 = 2;
pub const KIND_EXIT: u32 = 3;
pub const KIND_NET: u32 = 4;
pub const KIND_FILE: u32 = 5;

/// Bits of an exec's `code` (`GH_FLAG_*`).
pub const FLAG_ARGV_CUT: i32 = 1;
pub const FLAG_PATH_CUT: i32 = 2;
pub const FLAG_DRIFT: i32 = 4;
pub const FLAG_STDIO_SOCKET: i32 = 8;

/// `AF_*` of `struct gh_net.family`.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// `struct gh_header`: the start of every ring-buffer record.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Header {
    pub kind: u32,
    /// Thread group id.
    pub pid: u32,
    /// CLOCK_BOOTTIME.
    pub time_ns: u64,
    /// Exec and fork: the parent; exit: 0.
    pub ppid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Exit: the wait status; exec: `FLAG_*`; network: `GH_NET_*`.
    pub code: i32,
}

/// `struct gh_exec` up to its string area (`data`), which holds the strings
/// whose lengths it gives, in this order. A file record (`KIND_FILE`) has the
/// same layout: `uid` holds the open flags, `gid` whether the file was
/// created, `exe_len` the writer's executable and `cwd_len` the path, which
/// come path first.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ExecHead {
    pub h: Header,
    pub argv_len: u16,
    pub exe_len: u16,
    pub cwd_len: u16,
    pub pexe_len: u16,
    pub cgroup_len: u16,
    pub pad: [u16; 3],
    /// Kernfs id of the cgroup the cgroup path names.
    pub cgroup_id: u64,
}

/// `struct gh_net`: one TCP socket event.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Net {
    /// `pid`: the socket's owner; `code`: `GH_NET_*` (the wire's kinds).
    pub h: Header,
    pub family: u16,
    pub lport: u16,
    /// 0 for LISTEN and a listener's CLOSE.
    pub rport: u16,
    pub pad: u16,
    pub laddr: [u8; 16],
    pub raddr: [u8; 16],
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// The owner's cgroup when it opened the socket.
    pub cgroup_id: u64,
}

/// `struct gh_owner`: who owns a socket (value of `sock_owners` and
/// `listeners`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Owner {
    pub pid: u32,
    pub pad: u32,
    pub cgroup_id: u64,
}

/// `struct gh_listen_key`: a listening socket's network namespace and port.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct ListenKey {
    pub netns: u32,
    pub port: u32,
}

/// `struct gh_config`: the programs' read-only settings (`gh_cfg`).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
pub struct Config {
    /// Inode of the host's mount namespace.
    pub host_mnt_ns: u32,
    /// 1: report host processes too.
    pub host_processes: u32,
    /// v1 subsystem index whose hierarchy names containers, or -1 for v2.
    pub cgroup_subsys: i32,
    pub pad: u32,
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use libbpf_rs::btf::types::{MemberAttr, Struct};
    use libbpf_rs::{Btf, HasSize};

    use super::*;

    /// Checks that the C struct `name` in the compiled object has the size
    /// `size` and exactly the members `fields` at these byte offsets.
    fn check(btf: &Btf<'_>, name: &str, size: usize, fields: &[(&str, usize)]) {
        let s: Struct<'_> = btf
            .type_by_name(name)
            .unwrap_or_else(|| panic!("struct {name} not in the object's BTF"));
        assert_eq!(s.size(), size, "size of struct {name}");
        let kernel: Vec<(String, usize)> = s
            .iter()
            .map(|m| {
                let offset = match m.attr {
                    MemberAttr::Normal { offset } => offset,
                    MemberAttr::BitField { .. } => panic!("bit field in struct {name}"),
                };
                let name = m.name.map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                (name, offset as usize / 8)
            })
            .collect();
        let ours: Vec<(String, usize)> = fields.iter().map(|(n, o)| ((*n).to_owned(), *o)).collect();
        assert_eq!(kernel, ours, "members of struct {name} (name, byte offset)");
    }

    #[test]
    fn every_type_has_the_layout_of_its_c_struct() {
        let btf = Btf::from_raw("sensors", super::super::bpf::OBJECT)
            .expect("the object's BTF parses")
            .expect("the object carries BTF (clang -g)");
        check(
            &btf,
            "gh_header",
            size_of::<Header>(),
            &[
                ("kind", offset_of!(Header, kind)),
                ("pid", offset_of!(Header, pid)),
                ("time_ns", offset_of!(Header, time_ns)),
                ("ppid", offset_of!(Header, ppid)),
                ("uid", offset_of!(Header, uid)),
                ("gid", offset_of!(Header, gid)),
                ("code", offset_of!(Header, code)),
            ],
        );
        // The string area follows the head.
        let exec: Struct<'_> = btf.type_by_name("gh_exec").expect("struct gh_exec");
        check(
            &btf,
            "gh_exec",
            exec.size(),
            &[
                ("h", offset_of!(ExecHead, h)),
                ("argv_len", offset_of!(ExecHead, argv_len)),
                ("exe_len", offset_of!(ExecHead, exe_len)),
                ("cwd_len", offset_of!(ExecHead, cwd_len)),
                ("pexe_len", offset_of!(ExecHead, pexe_len)),
                ("cgroup_len", offset_of!(ExecHead, cgroup_len)),
                ("pad", offset_of!(ExecHead, pad)),
                ("cgroup_id", offset_of!(ExecHead, cgroup_id)),
                ("data", size_of::<ExecHead>()),
            ],
        );
        check(
            &btf,
            "gh_net",
            size_of::<Net>(),
            &[
                ("h", offset_of!(Net, h)),
                ("family", offset_of!(Net, family)),
                ("lport", offset_of!(Net, lport)),
                ("rport", offset_of!(Net, rport)),
                ("pad", offset_of!(Net, pad)),
                ("laddr", offset_of!(Net, laddr)),
                ("raddr", offset_of!(Net, raddr)),
                ("bytes_sent", offset_of!(Net, bytes_sent)),
                ("bytes_received", offset_of!(Net, bytes_received)),
                ("cgroup_id", offset_of!(Net, cgroup_id)),
            ],
        );
        check(
            &btf,
            "gh_owner",
            size_of::<Owner>(),
            &[
                ("pid", offset_of!(Owner, pid)),
                ("pad", offset_of!(Owner, pad)),
                ("cgroup_id", offset_of!(Owner, cgroup_id)),
            ],
        );
        check(
            &btf,
            "gh_listen_key",
            size_of::<ListenKey>(),
            &[
                ("netns", offset_of!(ListenKey, netns)),
                ("port", offset_of!(ListenKey, port)),
            ],
        );
        check(
            &btf,
            "gh_config",
            size_of::<Config>(),
            &[
                ("host_mnt_ns", offset_of!(Config, host_mnt_ns)),
                ("host_processes", offset_of!(Config, host_processes)),
                ("cgroup_subsys", offset_of!(Config, cgroup_subsys)),
                ("pad", offset_of!(Config, pad)),
            ],
        );
    }

    /// The check fails on a layout that differs: a test of the test.
    #[test]
    #[should_panic(expected = "members of struct gh_owner")]
    fn a_moved_field_is_found() {
        let btf = Btf::from_raw("sensors", super::super::bpf::OBJECT)
            .expect("the object's BTF parses")
            .expect("the object carries BTF");
        check(
            &btf,
            "gh_owner",
            size_of::<Owner>(),
            &[("pid", 0), ("pad", 4), ("cgroup_id", 12)],
        );
    }
}
