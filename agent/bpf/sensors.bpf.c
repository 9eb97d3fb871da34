// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
/*
 * The agent's kernel side, one object: the process sensor and the TCP sensor.
 *
 * Process sensor: exec, fork and exit of every process in a container, from
 * raw tracepoints (no tracefs, no kprobes). Exec events carry everything the
 * kernel knows at that instant (executable, full argv up to GH_ARGV_MAX, cwd,
 * uid/gid, parent and its executable, cgroup path), so a process that exits
 * at once is still reported in full. Host processes (those in the agent's
 * mount namespace) are filtered out here unless `host_processes` is set.
 *
 * Records go to one ring buffer; when it is full the record is dropped and
 * counted per cgroup in `drops`, which user space reads and reports.
 *
 * TCP sensor: `sock/inet_sock_set_state` for IPv4 and IPv6. A socket's owner
 * (the process that called connect or listen) is recorded in process context
 * and looked up when the connection is established or closed in softirq
 * context; an inbound connection belongs to the owner of the listening socket
 * on its (network namespace, port). Closes carry the connection's byte counts.
 *
 * The record layout is the ABI with agent/src/sensor/bpf.rs: little-endian,
 * naturally aligned, a 32-byte header then, for exec, five strings; for
 * network events a fixed body.
 */
#include "glasshouse.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define GH_EXEC 1
#define GH_FORK 2
#define GH_EXIT 3
#define GH_NET 4

/* Network event kinds: the values of NetworkEventKind in ingest.proto. */
#define GH_NET_LISTEN 1
#define GH_NET_CONNECT 2
#define GH_NET_ACCEPT 3
#define GH_NET_CLOSE 4
#define GH_NET_CONNECT_FAILED 5

#define GH_AF_INET 2
#define GH_AF_INET6 10
#define GH_IPPROTO_TCP 6
#define GH_RCV_SHUTDOWN 1
#define GH_TCP_ESTABLISHED 1
#define GH_TCP_SYN_SENT 2
#define GH_TCP_SYN_RECV 3
#define GH_TCP_CLOSE 7
#define GH_TCP_LISTEN 10

#define GH_ARGV_MAX 8192    /* argv bytes kept; longer is cut and flagged */
#define GH_NAME_MAX 256     /* one path component, with its NUL */
#define GH_PATH_PARTS 40    /* components followed up from a dentry */
#define GH_CGROUP_PARTS 12  /* levels followed up a cgroup path */
#define GH_DATA 16384       /* string area of one exec record (power of two) */

#define GH_FLAG_ARGV_CUT 1
#define GH_FLAG_PATH_CUT 2
#define GH_FLAG_DRIFT 4 /* exec of a file in the container's writable layer */
#define GH_FLAG_STDIO_SOCKET 8 /* the new program's stdin or stdout is a socket */
#define GH_S_IFMT 0170000
#define GH_S_IFSOCK 0140000

#define GH_FILE 5
#define GH_OVERLAYFS_MAGIC 0x794c7630
#define GH_FMODE_WRITE 0x2
#define GH_FMODE_CREATED 0x100000

struct gh_config {
	u32 host_mnt_ns;       /* inum of the host mount namespace */
	u32 host_processes;    /* 1: report host processes too */
	s32 cgroup_subsys;     /* v1 subsystem index, or -1 for the v2 hierarchy */
	u32 pad;
};

const volatile struct gh_config gh_cfg = {};

struct gh_header {
	u32 kind;
	u32 pid;       /* thread group id */
	u64 time_ns;   /* CLOCK_BOOTTIME */
	u32 ppid;      /* exec: parent; fork: parent; exit: 0 */
	u32 uid;
	u32 gid;
	s32 code;      /* exit: wait status; exec: flags */
};

struct gh_exec {
	struct gh_header h;
	u16 argv_len, exe_len, cwd_len, pexe_len, cgroup_len, pad[3];
	u64 cgroup_id; /* kernfs id of the cgroup named by the cgroup path */
	/* Slack of one component/argv beyond GH_DATA keeps every masked write in bounds. */
	char data[GH_DATA + GH_ARGV_MAX];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct gh_exec);
} scratch SEC(".maps");

/* Records lost because the ring buffer was full, per cgroup id. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, u64);
} drops SEC(".maps");

/* Wake the reader only once this much is waiting: one wakeup per few hundred
 * records instead of one per record (a context switch each). User space also
 * drains the ring on a short timer, so a quiet trickle is not held back. */
#define GH_WAKEUP_BYTES (64 * 1024)
#define GH_RB_NO_WAKEUP 1
#define GH_RB_FORCE_WAKEUP 2
#define GH_RB_AVAIL_DATA 0

static __always_inline u64 wakeup(void)
{
	return bpf_ringbuf_query(&events, GH_RB_AVAIL_DATA) >= GH_WAKEUP_BYTES ? GH_RB_FORCE_WAKEUP
										: GH_RB_NO_WAKEUP;
}

static __always_inline bool wanted(struct task_struct *task)
{
	if (gh_cfg.host_processes)
		return true;
	u32 ns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	/* A task without nsproxy is exiting; report it (user space knows it or not). */
	return ns == 0 || ns != gh_cfg.host_mnt_ns;
}

static __always_inline struct cgroup *task_cgroup(struct task_struct *task)
{
	struct css_set *cset = BPF_CORE_READ(task, cgroups);
	s32 idx = gh_cfg.cgroup_subsys;
	if (idx < 0)
		return BPF_CORE_READ(cset, dfl_cgrp);
	if (idx >= 12)
		return 0;
	struct cgroup_subsys_state **subsys = __builtin_preserve_access_index(&cset->subsys[0]);
	struct cgroup_subsys_state *css = 0;
	bpf_probe_read_kernel(&css, sizeof(css), subsys + idx);
	return BPF_CORE_READ(css, cgroup);
}

static __always_inline void count_drop(struct task_struct *task)
{
	struct cgroup *cg = task_cgroup(task);
	u64 id = BPF_CORE_READ(cg, kn, id);
	u64 one = 1, *n = bpf_map_lookup_elem(&drops, &id);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&drops, &id, &one, BPF_NOEXIST);
}

static __always_inline struct kernfs_node *kn_parent(struct kernfs_node *kn)
{
	if (bpf_core_field_exists(((struct kernfs_node___new *)0)->__parent))
		return BPF_CORE_READ((struct kernfs_node___new *)kn, __parent);
	return BPF_CORE_READ((struct kernfs_node___old *)kn, parent);
}

/* State of one walk up a path or a cgroup, for bpf_loop: one verified step
 * instead of an unrolled loop whose branches the verifier would multiply. */
struct gh_walk {
	struct gh_exec *e;
	u32 off;
	struct dentry *d;
	struct vfsmount *vm;
	struct mount *m;
	struct dentry *root_d;
	struct vfsmount *root_m;
	struct kernfs_node *kn;
	u32 last;     /* offset of the last name written */
	u32 last_len; /* its length without the NUL */
};

/* Copies one NUL-terminated name to e->data[off..]; returns its length with
 * the NUL, or 0 when it does not fit or cannot be read. A global function, so
 * the verifier checks it once for any `off` instead of once per value of `off`
 * in every walk (which would never converge). */
__noinline int gh_put_name(struct gh_exec *e, u32 off, u64 name)
{
	if (!e)
		return 0;
	if (off > GH_DATA - GH_NAME_MAX) {
		e->h.code |= GH_FLAG_PATH_CUT;
		return 0;
	}
	long n = bpf_probe_read_kernel_str(&e->data[off & (GH_DATA - 1)], GH_NAME_MAX, (const void *)name);
	return n > 0 ? n : 0;
}

static __always_inline bool put_name(struct gh_walk *w, const void *name)
{
	int n = gh_put_name(w->e, w->off, (u64)name);
	if (n > 0) {
		w->last = w->off;
		w->last_len = n - 1;
	}
	w->off += n;
	return n > 0;
}

static long path_step(u32 i, void *ctx)
{
	struct gh_walk *w = ctx;
	/* Locals, not w->…, inside BPF_CORE_READ: only kernel types get relocated. */
	struct dentry *d = w->d;
	struct vfsmount *vm = w->vm;
	struct mount *m = w->m;
	if (!d || (d == w->root_d && vm == w->root_m))
		return 1;
	struct dentry *parent = BPF_CORE_READ(d, d_parent);
	if (d == BPF_CORE_READ(vm, mnt_root) || d == parent) {
		/* The top of a mount: go on from where it is mounted. */
		struct mount *mp = BPF_CORE_READ(m, mnt_parent);
		if (mp == m)
			return 1;
		w->d = BPF_CORE_READ(m, mnt_mountpoint);
		w->m = mp;
		w->vm = (void *)mp + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	if (!put_name(w, BPF_CORE_READ(d, d_name.name)))
		return 1;
	w->d = parent;
	return 0;
}

static long cgroup_step(u32 i, void *ctx)
{
	struct gh_walk *w = ctx;
	struct kernfs_node *kn = w->kn;
	if (!kn)
		return 1;
	struct kernfs_node *parent = kn_parent(kn);
	if (!parent) /* the hierarchy's root has no name of its own */
		return 1;
	if (!put_name(w, BPF_CORE_READ(kn, name)))
		return 1;
	w->kn = parent;
	return 0;
}

/* Writes the names of a path's components leaf first, each NUL-terminated,
 * at e->data[w->off..], up to `root`; returns the bytes written. */
static __always_inline u16 put_path(struct gh_walk *w, struct dentry *d, struct vfsmount *vm, struct path *root)
{
	u32 start = w->off;
	w->d = d;
	w->vm = vm;
	w->m = (void *)vm - bpf_core_field_offset(struct mount, mnt);
	w->root_d = BPF_CORE_READ(root, dentry);
	w->root_m = BPF_CORE_READ(root, mnt);
	bpf_loop(GH_PATH_PARTS, path_step, w, 0);
	return w->off - start;
}

static __always_inline u16 put_file(struct gh_walk *w, struct file *f, struct path *root)
{
	if (!f)
		return 0;
	return put_path(w, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), root);
}

static __always_inline u16 put_cgroup(struct gh_walk *w, struct cgroup *cg)
{
	u32 start = w->off;
	w->kn = BPF_CORE_READ(cg, kn);
	bpf_loop(GH_CGROUP_PARTS, cgroup_step, w, 0);
	return w->off - start;
}

/* Whether a file lives in an overlayfs upper (writable) layer: created or
 * modified after the container started, not part of its image. */
/* Whether file descriptor `fd` of `task` is a socket. */
static __always_inline bool fd_is_socket(struct task_struct *task, int fd)
{
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return false;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), fds + fd);
	if (!f)
		return false;
	unsigned short mode = BPF_CORE_READ(f, f_inode, i_mode);
	return (mode & GH_S_IFMT) == GH_S_IFSOCK;
}

static __always_inline bool is_upper(struct file *f)
{
	struct inode *inode = BPF_CORE_READ(f, f_inode);
	if (!inode || BPF_CORE_READ(inode, i_sb, s_magic) != GH_OVERLAYFS_MAGIC)
		return false;
	struct ovl_inode *oi = (void *)inode - bpf_core_field_offset(struct ovl_inode, vfs_inode);
	return BPF_CORE_READ(oi, __upperdentry) != 0;
}

SEC("raw_tp/sched_process_exec")
int gh_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (void *)ctx->args[0];
	struct linux_binprm *bprm = (void *)ctx->args[2];
	if (!wanted(task))
		return 0;
	u32 zero = 0;
	struct gh_exec *e = bpf_map_lookup_elem(&scratch, &zero);
	if (!e)
		return 0;
	struct task_struct *parent = BPF_CORE_READ(task, real_parent);
	e->h.kind = GH_EXEC;
	e->h.pid = BPF_CORE_READ(task, tgid);
	e->h.time_ns = bpf_ktime_get_boot_ns();
	e->h.ppid = BPF_CORE_READ(parent, tgid);
	e->h.uid = BPF_CORE_READ(task, real_cred, uid.val);
	e->h.gid = BPF_CORE_READ(task, real_cred, gid.val);
	e->h.code = 0;

	/* argv first, at offset 0: the new image's arguments are on its stack now. */
	unsigned long a0 = BPF_CORE_READ(task, mm, arg_start);
	unsigned long a1 = BPF_CORE_READ(task, mm, arg_end);
	u64 len = a1 > a0 ? a1 - a0 : 0;
	if (len > GH_ARGV_MAX - 1) {
		len = GH_ARGV_MAX - 1;
		e->h.code |= GH_FLAG_ARGV_CUT;
	}
	len &= GH_ARGV_MAX - 1;
	if (bpf_probe_read_user(e->data, len, (void *)a0) < 0)
		len = 0;
	e->argv_len = len;
	struct gh_walk w = { .e = e, .off = len };

	struct path root;
	BPF_CORE_READ_INTO(&root, task, fs, root);
	struct file *exe = BPF_CORE_READ(bprm, file);
	e->exe_len = put_file(&w, exe, &root);
	if (is_upper(exe))
		e->h.code |= GH_FLAG_DRIFT;
	/* A program whose input or output is a network connection: with a
	 * shell, the shape of a reverse (or bind) shell. */
	if (fd_is_socket(task, 0) || fd_is_socket(task, 1))
		e->h.code |= GH_FLAG_STDIO_SOCKET;
	struct path pwd;
	BPF_CORE_READ_INTO(&pwd, task, fs, pwd);
	e->cwd_len = put_path(&w, pwd.dentry, pwd.mnt, &root);
	/* The parent's executable, seen from the new process's root. */
	e->pexe_len = put_file(&w, BPF_CORE_READ(parent, mm, exe_file), &root);
	struct cgroup *cg = task_cgroup(task);
	e->cgroup_id = BPF_CORE_READ(cg, kn, id);
	e->cgroup_len = put_cgroup(&w, cg);

	u64 size = __builtin_offsetof(struct gh_exec, data) + (w.off & (GH_DATA - 1));
	if (size > sizeof(*e))
		return 0;
	if (bpf_ringbuf_output(&events, e, size, wakeup()) < 0)
		count_drop(task);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int gh_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *parent = (void *)ctx->args[0];
	struct task_struct *child = (void *)ctx->args[1];
	int pid = BPF_CORE_READ(child, pid);
	if (pid != BPF_CORE_READ(child, tgid)) /* a thread, not a process */
		return 0;
	if (!wanted(child))
		return 0;
	struct gh_header *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		count_drop(child);
		return 0;
	}
	h->kind = GH_FORK;
	h->pid = pid;
	h->time_ns = bpf_ktime_get_boot_ns();
	h->ppid = BPF_CORE_READ(parent, tgid);
	h->uid = 0;
	h->gid = 0;
	h->code = 0;
	bpf_ringbuf_submit(h, wakeup());
	return 0;
}

SEC("raw_tp/sched_process_exit")
int gh_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (void *)ctx->args[0];
	int pid = BPF_CORE_READ(task, pid);
	if (pid != BPF_CORE_READ(task, tgid)) /* a thread ended, not its process */
		return 0;
	if (!wanted(task))
		return 0;
	struct gh_header *h = bpf_ringbuf_reserve(&events, sizeof(*h), 0);
	if (!h) {
		count_drop(task);
		return 0;
	}
	h->kind = GH_EXIT;
	h->pid = pid;
	h->time_ns = bpf_ktime_get_boot_ns();
	h->ppid = 0;
	h->uid = 0;
	h->gid = 0;
	h->code = BPF_CORE_READ(task, exit_code);
	bpf_ringbuf_submit(h, wakeup());
	return 0;
}

struct gh_net {
	struct gh_header h; /* pid: the socket's owner; code: GH_NET_* */
	u16 family;
	u16 lport;
	u16 rport;
	u16 pad;
	u8 laddr[16];
	u8 raddr[16];
	u64 bytes_sent;
	u64 bytes_received;
	u64 cgroup_id; /* the owner's cgroup when it opened the socket */
};

/* Keeps struct gh_net in the object's BTF (it is only ever a pointer into the
 * ring buffer, which BTF would not otherwise carry): user space checks its
 * Rust layout against it (agent/src/sensor/layout.rs). */
struct gh_net *gh_net_btf __attribute__((unused));

/* Who owns a socket: the process, and its cgroup (which outlives it: a socket
 * often closes after its process exited). */
struct gh_owner {
	u32 pid;
	u32 pad;
	u64 cgroup_id;
};

/* Socket → owner, from connect or accept. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, u64);
	__type(value, struct gh_owner);
} sock_owners SEC(".maps");

struct gh_listen_key {
	u32 netns;
	u32 port;
};

/* (network namespace, port) of a listening socket → its owner. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct gh_listen_key);
	__type(value, struct gh_owner);
} listeners SEC(".maps");

static __always_inline void emit_net(struct sock *sk, struct task_struct *task, struct gh_owner *owner, s32 kind,
				     bool remote)
{
	struct gh_net *n = bpf_ringbuf_reserve(&events, sizeof(*n), 0);
	if (!n) {
		count_drop(task);
		return;
	}
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	n->h.kind = GH_NET;
	n->h.pid = owner->pid;
	n->cgroup_id = owner->cgroup_id;
	n->h.time_ns = bpf_ktime_get_boot_ns();
	n->h.ppid = 0;
	n->h.uid = 0;
	n->h.gid = 0;
	n->h.code = kind;
	n->family = family;
	/* inet_sport, not skc_num: the bound port is released before the close. */
	n->lport = __builtin_bswap16(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	n->rport = remote ? __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport)) : 0;
	n->pad = 0;
	__builtin_memset(n->laddr, 0, sizeof(n->laddr));
	__builtin_memset(n->raddr, 0, sizeof(n->raddr));
	if (family == GH_AF_INET6) {
		BPF_CORE_READ_INTO(&n->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		if (remote)
			BPF_CORE_READ_INTO(&n->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((u32 *)n->laddr, sk, __sk_common.skc_rcv_saddr);
		if (remote)
			BPF_CORE_READ_INTO((u32 *)n->raddr, sk, __sk_common.skc_daddr);
	}
	n->bytes_sent = 0;
	n->bytes_received = 0;
	if (kind == GH_NET_CLOSE && remote) {
		/* Payload only: bytes_sent counts retransmissions again, and
		 * bytes_received counts the peer's FIN (then RCV_SHUTDOWN is set). */
		struct tcp_sock *tp = (void *)sk;
		n->bytes_sent = BPF_CORE_READ(tp, bytes_sent) - BPF_CORE_READ(tp, bytes_retrans);
		u64 received = BPF_CORE_READ(tp, bytes_received);
		if (received && (BPF_CORE_READ(sk, sk_shutdown) & GH_RCV_SHUTDOWN))
			received--;
		n->bytes_received = received;
	}
	bpf_ringbuf_submit(n, wakeup());
}

SEC("raw_tp/inet_sock_set_state")
int gh_sock_state(struct bpf_raw_tracepoint_args *ctx)
{
	struct sock *sk = (void *)ctx->args[0];
	int old = ctx->args[1];
	int new = ctx->args[2];
	if (BPF_CORE_READ(sk, sk_protocol) != GH_IPPROTO_TCP)
		return 0;
	u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != GH_AF_INET && family != GH_AF_INET6)
		return 0;
	u64 key = (u64)sk;
	struct task_struct *task = (void *)bpf_get_current_task();
	struct gh_listen_key lk = {
		.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
		.port = BPF_CORE_READ(sk, __sk_common.skc_num),
	};
	struct gh_owner *owner;

	if (new == GH_TCP_SYN_SENT || new == GH_TCP_LISTEN) {
		/* connect() or listen(), in the caller's context. */
		if (!wanted(task))
			return 0;
		struct gh_owner me = {
			.pid = bpf_get_current_pid_tgid() >> 32,
			.cgroup_id = BPF_CORE_READ(task_cgroup(task), kn, id),
		};
		if (new == GH_TCP_SYN_SENT) {
			bpf_map_update_elem(&sock_owners, &key, &me, BPF_ANY);
		} else {
			bpf_map_update_elem(&listeners, &lk, &me, BPF_ANY);
			emit_net(sk, task, &me, GH_NET_LISTEN, false);
		}
		return 0;
	}
	if (new == GH_TCP_ESTABLISHED && old == GH_TCP_SYN_SENT) {
		owner = bpf_map_lookup_elem(&sock_owners, &key);
		if (owner)
			emit_net(sk, task, owner, GH_NET_CONNECT, true);
		return 0;
	}
	if (new == GH_TCP_ESTABLISHED && old == GH_TCP_SYN_RECV) {
		owner = bpf_map_lookup_elem(&listeners, &lk);
		if (!owner)
			return 0;
		struct gh_owner o = *owner;
		bpf_map_update_elem(&sock_owners, &key, &o, BPF_ANY);
		emit_net(sk, task, &o, GH_NET_ACCEPT, true);
		return 0;
	}
	if (new != GH_TCP_CLOSE)
		return 0;
	if (old == GH_TCP_LISTEN) {
		owner = bpf_map_lookup_elem(&listeners, &lk);
		if (owner) {
			emit_net(sk, task, owner, GH_NET_CLOSE, false);
			bpf_map_delete_elem(&listeners, &lk);
		}
		return 0;
	}
	owner = bpf_map_lookup_elem(&sock_owners, &key);
	if (!owner)
		return 0;
	emit_net(sk, task, owner, old == GH_TCP_SYN_SENT ? GH_NET_CONNECT_FAILED : GH_NET_CLOSE, true);
	bpf_map_delete_elem(&sock_owners, &key);
	return 0;
}

/*
 * File sensor: every successful open(2) family call of a container process
 * that opened a file for writing, at syscall exit (the file is then resolved
 * by the kernel: the path is walked from the struct file, not taken from the
 * caller). Only files under a top-level directory listed in `sensitive_top`
 * (filled by user space from its configured prefixes) are reported; user
 * space applies the exact prefixes.
 *
 * The record reuses the exec header and lengths, with its own data order:
 * the file's path (cwd_len bytes) then the writing process's executable
 * (exe_len bytes), both leaf first; h.uid carries the file's f_flags and h.gid
 * is 1 when the open created the file.
 */

struct gh_top_key {
	char name[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct gh_top_key);
	__type(value, u8);
} sensitive_top SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct gh_exec);
} file_scratch SEC(".maps");

struct gh_sys_exit {
	u64 common;
	long nr;
	long ret;
};

static __always_inline int file_opened(struct gh_sys_exit *ctx)
{
	long fd = ctx->ret;
	if (fd < 0)
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	if (!wanted(task))
		return 0;
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), fds + fd);
	if (!f)
		return 0;
	unsigned int mode = BPF_CORE_READ(f, f_mode);
	if (!(mode & GH_FMODE_WRITE))
		return 0;
	u32 zero = 0;
	struct gh_exec *e = bpf_map_lookup_elem(&file_scratch, &zero);
	if (!e)
		return 0;
	e->h.kind = GH_FILE;
	e->h.pid = bpf_get_current_pid_tgid() >> 32;
	e->h.time_ns = bpf_ktime_get_boot_ns();
	e->h.ppid = 0;
	e->h.uid = BPF_CORE_READ(f, f_flags);
	e->h.gid = (mode & GH_FMODE_CREATED) ? 1 : 0;
	e->h.code = 0;
	e->argv_len = 0;
	e->pexe_len = 0;
	e->cgroup_len = 0;
	e->cgroup_id = BPF_CORE_READ(task_cgroup(task), kn, id);

	struct path root;
	BPF_CORE_READ_INTO(&root, task, fs, root);
	struct gh_walk w = { .e = e, .off = 0 };
	e->cwd_len = put_path(&w, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt), &root);
	/* The top-level directory is the last component written (leaf first). */
	u32 len = w.last_len;
	if (len == 0 || len >= sizeof(struct gh_top_key))
		return 0;
	/* Keep the bound visible to the verifier on the register passed. */
	asm volatile("" : "+r"(len));
	len &= sizeof(struct gh_top_key) - 1;
	struct gh_top_key key = {};
	bpf_probe_read_kernel(&key.name, len, &e->data[w.last & (GH_DATA - 1)]);
	if (!bpf_map_lookup_elem(&sensitive_top, &key))
		return 0;
	e->exe_len = put_file(&w, BPF_CORE_READ(task, mm, exe_file), &root);
	u64 size = __builtin_offsetof(struct gh_exec, data) + (w.off & (GH_DATA - 1));
	if (size > sizeof(*e))
		return 0;
	if (bpf_ringbuf_output(&events, e, size, wakeup()) < 0)
		count_drop(task);
	return 0;
}

SEC("tp/syscalls/sys_exit_openat")
int gh_exit_openat(struct gh_sys_exit *ctx)
{
	return file_opened(ctx);
}

SEC("tp/syscalls/sys_exit_openat2")
int gh_exit_openat2(struct gh_sys_exit *ctx)
{
	return file_opened(ctx);
}

SEC("tp/syscalls/sys_exit_open")
int gh_exit_open(struct gh_sys_exit *ctx)
{
	return file_opened(ctx);
}

SEC("tp/syscalls/sys_exit_creat")
int gh_exit_creat(struct gh_sys_exit *ctx)
{
	return file_opened(ctx);
}

/*
 * Syscall sensor: per-cgroup counts of every system call entered by a
 * container process, in a per-CPU map that user space reads (and diffs)
 * periodically. Never one event per syscall.
 */
#define GH_SYSCALLS 512

struct gh_syscalls {
	u64 counts[GH_SYSCALLS];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, u64);
	__type(value, struct gh_syscalls);
} syscall_counts SEC(".maps");

/* A zeroed value to insert (too large for the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct gh_syscalls);
} syscall_zero SEC(".maps");

SEC("raw_tp/sys_enter")
int gh_sys_enter(struct bpf_raw_tracepoint_args *ctx)
{
	long nr = ctx->args[1];
	if (nr < 0 || nr >= GH_SYSCALLS)
		return 0;
	struct task_struct *task = (void *)bpf_get_current_task();
	if (!wanted(task))
		return 0;
	u64 id = BPF_CORE_READ(task_cgroup(task), kn, id);
	struct gh_syscalls *c = bpf_map_lookup_elem(&syscall_counts, &id);
	if (!c) {
		u32 zero = 0;
		struct gh_syscalls *z = bpf_map_lookup_elem(&syscall_zero, &zero);
		if (!z)
			return 0;
		bpf_map_update_elem(&syscall_counts, &id, z, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&syscall_counts, &id);
		if (!c)
			return 0;
	}
	c->counts[nr & (GH_SYSCALLS - 1)]++;
	return 0;
}
