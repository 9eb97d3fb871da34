//! Arrow schema of `glasshouse.syscalls` records: one row per (container,
//! interval, syscall): how often the processes of one container entered one
//! system call during one sampling interval of the agent (counted in a kernel
//! map, never one event per call). Attributed like every record, except
//! that a profile always names a container (host processes are not profiled) and carries no
//! event index: `agent_id`, `boot_id`, `container_id`, `start` and `nr`
//! identify a row, and a re-sent batch repeats them (with its `batch_seq`).
//!
//! The [`Attribution`] columns (`container_id` never null), then:
//!
//! | column | type | meaning |
//! |---|---|---|
//! | `start` | timestamp(ns, UTC) | start of the interval (inclusive) |
//! | `end` | timestamp(ns, UTC) | end of the interval (exclusive); never before `start` |
//! | `arch` | utf8 | architecture the syscall numbers belong to (`x86_64`, `aarch64`, as the agent reports it) |
//! | `nr` | uint32 | syscall number of that architecture |
//! | `name` | utf8, nullable | the syscall's name for `arch` = `x86_64` (from Linux's `arch/x86/entry/syscalls/syscall_64.tbl`, numbers 0 to 461, see [`x86_64_name`]); null for other architectures and numbers outside the table |
//! | `count` | uint64 | times the container's processes entered the syscall during the interval (the agent sends only non-zero counts) |

use std::sync::LazyLock;

pub use super::Attribution;
pub use super::column::Str;
use super::column::Time;

/// The `arch` value whose syscall numbers [`name`] knows.
pub const ARCH_X86_64: &str = "x86_64";

/// Highest x86_64 syscall number in [`x86_64_name`]'s table.
pub const X86_64_MAX_NR: u32 = 461;

crate::columns! {
    builder: RowBuilder, reader: RowReader;

    /// One syscall count of one container over one interval, attributed.
    #[derive(Debug, Clone, PartialEq, Eq, Default)]
    pub struct Row {
        /// Always names a container.
        pub attribution: Attribution,
        /// The interval: [start, end) in Unix nanoseconds.
        pub start_unix_ns: i64 => "start" as Time,
        pub end_unix_ns: i64 => "end" as Time,
        pub arch: Str,
        pub nr: u32,
        /// The syscall's name when known (see [`name`]).
        pub name: Option<Str>,
        pub count: u64,
    }
}

crate::record!(crate::record::RecordType::Syscalls);

impl Row {
    /// 1234 `openat` calls in ten seconds of [`Attribution::sample`]'s
    /// container, for tests and benchmarks.
    pub fn sample() -> Row {
        Row {
            attribution: Attribution::sample(),
            start_unix_ns: 1_700_000_000_000_000_000,
            end_unix_ns: 1_700_000_010_000_000_000,
            arch: ARCH_X86_64.into(),
            nr: 257,
            name: Some("openat".into()),
            count: 1234,
        }
    }
}

/// The name of syscall `nr` of architecture `arch`, when known: only
/// `x86_64` numbers are, from [`x86_64_name`]. Rows share the returned string.
pub fn name(arch: &str, nr: u32) -> Option<Str> {
    static X86_64: LazyLock<Vec<Option<Str>>> =
        LazyLock::new(|| (0..=X86_64_MAX_NR).map(|nr| x86_64_name(nr).map(Str::from)).collect());
    if arch != ARCH_X86_64 {
        return None;
    }
    X86_64.get(usize::try_from(nr).ok()?).cloned().flatten()
}

/// The name of x86_64 syscall `nr`, as in Linux's
/// `arch/x86/entry/syscalls/syscall_64.tbl` (the `common` and `64` entries,
/// 0 to [`X86_64_MAX_NR`]); `None` for unassigned numbers (336 to 423 are
/// reserved) and numbers past the table.
pub fn x86_64_name(nr: u32) -> Option<&'static str> {
    Some(match nr {
        0 => "read",
        1 => "write",
        2 => "open",
        3 => "close",
        4 => "stat",
        5 => "fstat",
        6 => "lstat",
        7 => "poll",
        8 => "lseek",
        9 => "mmap",
        10 => "mprotect",
        11 => "munmap",
        12 => "brk",
        13 => "rt_sigaction",
        14 => "rt_sigprocmask",
        15 => "rt_sigreturn",
        16 => "ioctl",
        17 => "pread64",
        18 => "pwrite64",
        19 => "readv",
        20 => "writev",
        21 => "access",
        22 => "pipe",
        23 => "select",
        24 => "sched_yield",
        25 => "mremap",
        26 => "msync",
        27 => "mincore",
        28 => "madvise",
        29 => "shmget",
        30 => "shmat",
        31 => "shmctl",
        32 => "dup",
        33 => "dup2",
        34 => "pause",
        35 => "nanosleep",
        36 => "getitimer",
        37 => "alarm",
        38 => "setitimer",
        39 => "getpid",
        40 => "sendfile",
        41 => "socket",
        42 => "connect",
        43 => "accept",
        44 => "sendto",
        45 => "recvfrom",
        46 => "sendmsg",
        47 => "recvmsg",
        48 => "shutdown",
        49 => "bind",
        50 => "listen",
        51 => "getsockname",
        52 => "getpeername",
        53 => "socketpair",
        54 => "setsockopt",
        55 => "getsockopt",
        56 => "clone",
        57 => "fork",
        58 => "vfork",
        59 => "execve",
        60 => "exit",
        61 => "wait4",
        62 => "kill",
        63 => "uname",
        64 => "semget",
        65 => "semop",
        66 => "semctl",
        67 => "shmdt",
        68 => "msgget",
        69 => "msgsnd",
        70 => "msgrcv",
        71 => "msgctl",
        72 => "fcntl",
        73 => "flock",
        74 => "fsync",
        75 => "fdatasync",
        76 => "truncate",
        77 => "ftruncate",
        78 => "getdents",
        79 => "getcwd",
        80 => "chdir",
        81 => "fchdir",
        82 => "rename",
        83 => "mkdir",
        84 => "rmdir",
        85 => "creat",
        86 => "link",
        87 => "unlink",
        88 => "symlink",
        89 => "readlink",
        90 => "chmod",
        91 => "fchmod",
        92 => "chown",
        93 => "fchown",
        94 => "lchown",
        95 => "umask",
        96 => "gettimeofday",
        97 => "getrlimit",
        98 => "getrusage",
        99 => "sysinfo",
        100 => "times",
        101 => "ptrace",
        102 => "getuid",
        103 => "syslog",
        104 => "getgid",
        105 => "setuid",
        106 => "setgid",
        107 => "geteuid",
        108 => "getegid",
        109 => "setpgid",
        110 => "getppid",
        111 => "getpgrp",
        112 => "setsid",
        113 => "setreuid",
        114 => "setregid",
        115 => "getgroups",
        116 => "setgroups",
        117 => "setresuid",
        118 => "getresuid",
        119 => "setresgid",
        120 => "getresgid",
        121 => "getpgid",
        122 => "setfsuid",
        123 => "setfsgid",
        124 => "getsid",
        125 => "capget",
        126 => "capset",
        127 => "rt_sigpending",
        128 => "rt_sigtimedwait",
        129 => "rt_sigqueueinfo",
        130 => "rt_sigsuspend",
        131 => "sigaltstack",
        132 => "utime",
        133 => "mknod",
        134 => "uselib",
        135 => "personality",
        136 => "ustat",
        137 => "statfs",
        138 => "fstatfs",
        139 => "sysfs",
        140 => "getpriority",
        141 => "setpriority",
        142 => "sched_setparam",
        143 => "sched_getparam",
        144 => "sched_setscheduler",
        145 => "sched_getscheduler",
        146 => "sched_get_priority_max",
        147 => "sched_get_priority_min",
        148 => "sched_rr_get_interval",
        149 => "mlock",
        150 => "munlock",
        151 => "mlockall",
        152 => "munlockall",
        153 => "vhangup",
        154 => "modify_ldt",
        155 => "pivot_root",
        156 => "_sysctl",
        157 => "prctl",
        158 => "arch_prctl",
        159 => "adjtimex",
        160 => "setrlimit",
        161 => "chroot",
        162 => "sync",
        163 => "acct",
        164 => "settimeofday",
        165 => "mount",
        166 => "umount2",
        167 => "swapon",
        168 => "swapoff",
        169 => "reboot",
        170 => "sethostname",
        171 => "setdomainname",
        172 => "iopl",
        173 => "ioperm",
        174 => "create_module",
        175 => "init_module",
        176 => "delete_module",
        177 => "get_kernel_syms",
        178 => "query_module",
        179 => "quotactl",
        180 => "nfsservctl",
        181 => "getpmsg",
        182 => "putpmsg",
        183 => "afs_syscall",
        184 => "tuxcall",
        185 => "security",
        186 => "gettid",
        187 => "readahead",
        188 => "setxattr",
        189 => "lsetxattr",
        190 => "fsetxattr",
        191 => "getxattr",
        192 => "lgetxattr",
        193 => "fgetxattr",
        194 => "listxattr",
        195 => "llistxattr",
        196 => "flistxattr",
        197 => "removexattr",
        198 => "lremovexattr",
        199 => "fremovexattr",
        200 => "tkill",
        201 => "time",
        202 => "futex",
        203 => "sched_setaffinity",
        204 => "sched_getaffinity",
        205 => "set_thread_area",
        206 => "io_setup",
        207 => "io_destroy",
        208 => "io_getevents",
        209 => "io_submit",
        210 => "io_cancel",
        211 => "get_thread_area",
        212 => "lookup_dcookie",
        213 => "epoll_create",
        214 => "epoll_ctl_old",
        215 => "epoll_wait_old",
        216 => "remap_file_pages",
        217 => "getdents64",
        218 => "set_tid_address",
        219 => "restart_syscall",
        220 => "semtimedop",
        221 => "fadvise64",
        222 => "timer_create",
        223 => "timer_settime",
        224 => "timer_gettime",
        225 => "timer_getoverrun",
        226 => "timer_delete",
        227 => "clock_settime",
        228 => "clock_gettime",
        229 => "clock_getres",
        230 => "clock_nanosleep",
        231 => "exit_group",
        232 => "epoll_wait",
        233 => "epoll_ctl",
        234 => "tgkill",
        235 => "utimes",
        236 => "vserver",
        237 => "mbind",
        238 => "set_mempolicy",
        239 => "get_mempolicy",
        240 => "mq_open",
        241 => "mq_unlink",
        242 => "mq_timedsend",
        243 => "mq_timedreceive",
        244 => "mq_notify",
        245 => "mq_getsetattr",
        246 => "kexec_load",
        247 => "waitid",
        248 => "add_key",
        249 => "request_key",
        250 => "keyctl",
        251 => "ioprio_set",
        252 => "ioprio_get",
        253 => "inotify_init",
        254 => "inotify_add_watch",
        255 => "inotify_rm_watch",
        256 => "migrate_pages",
        257 => "openat",
        258 => "mkdirat",
        259 => "mknodat",
        260 => "fchownat",
        261 => "futimesat",
        262 => "newfstatat",
        263 => "unlinkat",
        264 => "renameat",
        265 => "linkat",
        266 => "symlinkat",
        267 => "readlinkat",
        268 => "fchmodat",
        269 => "faccessat",
        270 => "pselect6",
        271 => "ppoll",
        272 => "unshare",
        273 => "set_robust_list",
        274 => "get_robust_list",
        275 => "splice",
        276 => "tee",
        277 => "sync_file_range",
        278 => "vmsplice",
        279 => "move_pages",
        280 => "utimensat",
        281 => "epoll_pwait",
        282 => "signalfd",
        283 => "timerfd_create",
        284 => "eventfd",
        285 => "fallocate",
        286 => "timerfd_settime",
        287 => "timerfd_gettime",
        288 => "accept4",
        289 => "signalfd4",
        290 => "eventfd2",
        291 => "epoll_create1",
        292 => "dup3",
        293 => "pipe2",
        294 => "inotify_init1",
        295 => "preadv",
        296 => "pwritev",
        297 => "rt_tgsigqueueinfo",
        298 => "perf_event_open",
        299 => "recvmmsg",
        300 => "fanotify_init",
        301 => "fanotify_mark",
        302 => "prlimit64",
        303 => "name_to_handle_at",
        304 => "open_by_handle_at",
        305 => "clock_adjtime",
        306 => "syncfs",
        307 => "sendmmsg",
        308 => "setns",
        309 => "getcpu",
        310 => "process_vm_readv",
        311 => "process_vm_writev",
        312 => "kcmp",
        313 => "finit_module",
        314 => "sched_setattr",
        315 => "sched_getattr",
        316 => "renameat2",
        317 => "seccomp",
        318 => "getrandom",
        319 => "memfd_create",
        320 => "kexec_file_load",
        321 => "bpf",
        322 => "execveat",
        323 => "userfaultfd",
        324 => "membarrier",
        325 => "mlock2",
        326 => "copy_file_range",
        327 => "preadv2",
        328 => "pwritev2",
        329 => "pkey_mprotect",
        330 => "pkey_alloc",
        331 => "pkey_free",
        332 => "statx",
        333 => "io_pgetevents",
        334 => "rseq",
        335 => "uretprobe",
        424 => "pidfd_send_signal",
        425 => "io_uring_setup",
        426 => "io_uring_enter",
        427 => "io_uring_register",
        428 => "open_tree",
        429 => "move_mount",
        430 => "fsopen",
        431 => "fsconfig",
        432 => "fsmount",
        433 => "fspick",
        434 => "pidfd_open",
        435 => "clone3",
        436 => "close_range",
        437 => "openat2",
        438 => "pidfd_getfd",
        439 => "faccessat2",
        440 => "process_madvise",
        441 => "epoll_pwait2",
        442 => "mount_setattr",
        443 => "quotactl_fd",
        444 => "landlock_create_ruleset",
        445 => "landlock_add_rule",
        446 => "landlock_restrict_self",
        447 => "memfd_secret",
        448 => "process_mrelease",
        449 => "futex_waitv",
        450 => "set_mempolicy_home_node",
        451 => "cachestat",
        452 => "fchmodat2",
        453 => "map_shadow_stack",
        454 => "futex_wake",
        455 => "futex_wait",
        456 => "futex_requeue",
        457 => "statmount",
        458 => "listmount",
        459 => "lsm_get_self_attr",
        460 => "lsm_set_self_attr",
        461 => "lsm_list_modules",
        _ => return None,
    })
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

    /// An aarch64 profile: numbers without names; a container without name,
    /// image or image id.
    fn aarch64_row() -> Row {
        Row {
            attribution: Attribution {
                container_name: None,
                image: None,
                image_id: None,
                workload_id: "container:41ee3b278ccc".into(),
                ..Attribution::sample()
            },
            arch: "aarch64".into(),
            nr: 56,
            name: None,
            count: u64::MAX,
            ..sample_row()
        }
    }

    #[test]
    fn rows_round_trip_through_a_batch_and_ipc() {
        let rows = vec![sample_row(), aarch64_row()];
        let back = crate::record::testing::round_trip(&rows);
        assert_eq!(back.column_by_name("name").unwrap().null_count(), 1);
        assert_eq!(back.column_by_name("container_id").unwrap().null_count(), 0);
        assert_eq!(
            crate::record::testing::own_columns::<Row>(),
            ["start", "end", "arch", "nr", "name", "count"]
        );
    }

    #[test]
    fn x86_64_numbers_have_their_syscall_table_names() {
        for (nr, want) in [
            (0, "read"),
            (1, "write"),
            (2, "open"),
            (56, "clone"),
            (59, "execve"),
            (101, "ptrace"),
            (156, "_sysctl"),
            (257, "openat"),
            (322, "execveat"),
            (334, "rseq"),
            (335, "uretprobe"),
            (424, "pidfd_send_signal"),
            (435, "clone3"),
            (437, "openat2"),
            (450, "set_mempolicy_home_node"),
            (451, "cachestat"),
            (457, "statmount"),
            (461, "lsm_list_modules"),
        ] {
            assert_eq!(x86_64_name(nr), Some(want), "nr {nr}");
            assert_eq!(name(ARCH_X86_64, nr).as_deref(), Some(want), "nr {nr}");
        }
        // The reserved hole, the end of the table, x32 numbers.
        for nr in [336, 400, 423, X86_64_MAX_NR + 1, 512, u32::MAX] {
            assert_eq!(x86_64_name(nr), None, "nr {nr}");
            assert_eq!(name(ARCH_X86_64, nr), None, "nr {nr}");
        }
        // Other architectures number differently: no names rather than wrong ones.
        assert_eq!(name("aarch64", 63), None);
        assert_eq!(name("", 0), None);
        assert_eq!(name("x86-64", 0), None);
    }

    #[test]
    fn the_x86_64_table_is_complete_and_unambiguous() {
        let named: Vec<(u32, &str)> = (0..=X86_64_MAX_NR + 100)
            .filter_map(|nr| x86_64_name(nr).map(|n| (nr, n)))
            .collect();
        // 0..=335, then 424..=461.
        assert_eq!(named.len(), 336 + 38);
        assert!(
            named
                .iter()
                .all(|(nr, _)| *nr <= 335 || (424..=X86_64_MAX_NR).contains(nr))
        );
        let distinct: std::collections::HashSet<&str> = named.iter().map(|(_, n)| *n).collect();
        assert_eq!(distinct.len(), named.len(), "a name used twice");
        assert!(named.iter().all(|(_, n)| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }));
        // Rows share one string per syscall.
        let a = name(ARCH_X86_64, 0).unwrap();
        let b = name(ARCH_X86_64, 0).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn approx_bytes_grows_with_the_strings() {
        let short = sample_row();
        let long = Row {
            attribution: Attribution {
                container_name: Some("w".repeat(105).into()),
                ..Attribution::sample()
            },
            ..sample_row()
        };
        assert_eq!(long.approx_bytes() - short.approx_bytes(), 100);
    }

    #[test]
    fn foreign_schemas_are_refused() {
        let other = RecordBatch::new_empty(Arc::new(Schema::new(vec![Field::new("x", DataType::Int32, false)])));
        assert!(read_rows(&other).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::file::Row::sample())).is_err());
        assert!(read_rows(&crate::record::testing::batch_of(&crate::resources::Row::sample())).is_err());
    }
}
