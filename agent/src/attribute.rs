//! Attribution: which container a process belongs to, from its cgroup path.
//!
//! Recognised (cgroup v1 and v2, systemd and cgroupfs drivers):
//! Docker `docker-ID.scope` and `/docker/ID`, Podman `libpod-ID[.scope]`,
//! containerd `cri-containerd-ID.scope`, CRI-O `crio-ID.scope`, and Kubernetes pod
//! directories `kubepods…pod<UID>` (with `_` for `-` under systemd) whose child is
//! the bare container id. Conmon's own cgroups (`libpod-conmon-…`,
//! `crio-conmon-…`) are not containers.

use glasshouse_proto::v1::ContainerRuntime;

/// The container a cgroup path names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerKey {
    pub runtime: ContainerRuntime,
    /// Full 64-hex-digit container id.
    pub id: String,
    /// Kubernetes pod UID, when the path is under a pod.
    pub pod_uid: Option<String>,
}

/// Attributes a process from the text of `/proc/PID/cgroup`: the v2 line first,
/// then every v1 hierarchy.
pub fn from_proc_cgroup(text: &str) -> Option<ContainerKey> {
    let mut v1 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(hierarchy), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Some(key) = parse_cgroup_path(path) {
            if hierarchy == "0" {
                return Some(key);
            }
            v1.get_or_insert(key);
        }
    }
    v1
}

/// Parses one cgroup path. The deepest component naming a container wins.
pub fn parse_cgroup_path(path: &str) -> Option<ContainerKey> {
    let mut pod_uid = None;
    let mut found = None;
    let mut previous_was_pod = false;
    let mut previous = "";
    for component in path.split('/').filter(|c| !c.is_empty()) {
        let name = component.strip_suffix(".scope").unwrap_or(component);
        if let Some(uid) = pod_uid_of(component) {
            pod_uid = Some(uid);
            previous_was_pod = true;
            previous = component;
            continue;
        }
        let candidate = if let Some(id) = name.strip_prefix("docker-") {
            hex_id(id).map(|id| (ContainerRuntime::Docker, id))
        } else if let Some(id) = name.strip_prefix("libpod-") {
            hex_id(id).map(|id| (ContainerRuntime::Podman, id))
        } else if let Some(id) = name.strip_prefix("cri-containerd-") {
            hex_id(id).map(|id| (ContainerRuntime::Containerd, id))
        } else if let Some(id) = name.strip_prefix("crio-") {
            hex_id(id).map(|id| (ContainerRuntime::Crio, id))
        } else if let Some(id) = hex_id(name) {
            // A bare id: `/docker/ID` (cgroupfs driver) or `/kubepods/…/podUID/ID`.
            if previous_was_pod {
                Some((ContainerRuntime::Unspecified, id))
            } else if previous == "docker" {
                Some((ContainerRuntime::Docker, id))
            } else {
                None
            }
        } else {
            None
        };
        previous_was_pod = false;
        previous = component;
        if let Some((runtime, id)) = candidate {
            found = Some((runtime, id));
        }
    }
    found.map(|(runtime, id)| ContainerKey {
        runtime,
        id: id.to_owned(),
        pod_uid,
    })
}

/// A container id: exactly 64 lowercase hex digits.
fn hex_id(s: &str) -> Option<&str> {
    (s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))).then_some(s)
}

/// `pod<UID>` (cgroupfs) or `kubepods-<qos>-pod<UID_with_underscores>.slice` (systemd).
fn pod_uid_of(component: &str) -> Option<String> {
    let c = component.strip_suffix(".slice").unwrap_or(component);
    if !(c.starts_with("pod") || c.starts_with("kubepods")) {
        return None;
    }
    let idx = c.rfind("pod")?;
    let uid = &c[idx + 3..];
    let uid = uid.replace('_', "-");
    let is_uid = uid.len() == 36
        && uid.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    is_uid.then_some(uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "41ee3b278ccc524b777af28ee230be43e8190e5e371378d1b86665907ad6a128";

    fn key(runtime: ContainerRuntime, pod: Option<&str>) -> Option<ContainerKey> {
        Some(ContainerKey {
            runtime,
            id: ID.into(),
            pod_uid: pod.map(str::to_owned),
        })
    }

    #[test]
    fn real_path_samples() {
        use ContainerRuntime::*;
        let pod = "0f7b5c3e-2b4d-4c5a-9a8e-1234567890ab";
        let cases: Vec<(String, Option<ContainerKey>)> = vec![
            // Podman, cgroupfs driver (this VM), v1 and v2 lines.
            (format!("/libpod_parent/libpod-{ID}"), key(Podman, None)),
            // Podman, systemd driver.
            (format!("/machine.slice/libpod-{ID}.scope"), key(Podman, None)),
            (
                format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"),
                key(Podman, None),
            ),
            // Podman's conmon is not the container.
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), None),
            // Docker, systemd and cgroupfs drivers.
            (format!("/system.slice/docker-{ID}.scope"), key(Docker, None)),
            (format!("/docker/{ID}"), key(Docker, None)),
            // containerd under Kubernetes, systemd driver.
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
                    pod.replace('-', "_")
                ),
                key(Containerd, Some(pod)),
            ),
            // CRI-O under Kubernetes, systemd driver; its conmon.
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
                    pod.replace('-', "_")
                ),
                key(Crio, Some(pod)),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod{}.slice/crio-conmon-{ID}.scope",
                    pod.replace('-', "_")
                ),
                None,
            ),
            // Kubernetes with the cgroupfs driver: bare id under the pod directory.
            (
                format!("/kubepods/burstable/pod{pod}/{ID}"),
                key(Unspecified, Some(pod)),
            ),
            (format!("/kubepods/pod{pod}/{ID}"), key(Unspecified, Some(pod))),
            // Docker-in-Docker style nesting: the deepest container wins.
            (format!("/docker/{}/docker/{ID}", "a".repeat(64)), key(Docker, None)),
            // Host processes.
            ("/".into(), None),
            ("/system.slice/sshd.service".into(), None),
            ("/user.slice/user-0.slice/session-1.scope".into(), None),
            // Too short or not hex.
            ("/docker/41ee3b278ccc".into(), None),
            (format!("/libpod_parent/libpod-{}", "g".repeat(64)), None),
        ];
        for (path, want) in cases {
            assert_eq!(parse_cgroup_path(&path), want, "{path}");
        }
    }

    #[test]
    fn proc_cgroup_file_prefers_v2_then_v1() {
        let hybrid = format!(
            "9:name=systemd:/libpod_parent/libpod-{ID}\n4:memory:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{ID}\n"
        );
        assert_eq!(from_proc_cgroup(&hybrid), key(ContainerRuntime::Podman, None));
        let v1_only = format!("4:memory:/docker/{ID}\n1:name=systemd:/\n0::/\n");
        assert_eq!(from_proc_cgroup(&v1_only), key(ContainerRuntime::Docker, None));
        assert_eq!(from_proc_cgroup("0::/init.scope\n"), None);
        assert_eq!(from_proc_cgroup("garbage"), None);
    }
}
