//! Workload identity: the key every baseline is learned under, shared by all
//! replicas of one workload. Kubernetes `namespace/owner/container` when the
//! container belongs to a pod; else the image repository without tag or digest;
//! else the image id; else the container itself.

use crate::runtime::{ContainerMeta, image_repository};

const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const LABEL_POD: &str = "io.kubernetes.pod.name";
const LABEL_CONTAINER: &str = "io.kubernetes.container.name";

/// The workload id of a container.
pub fn identity(container_id: &str, meta: &ContainerMeta) -> String {
    let label = |k: &str| meta.labels.get(k).filter(|v| !v.is_empty());
    if let (Some(ns), Some(container)) = (label(LABEL_NAMESPACE), label(LABEL_CONTAINER)) {
        let owner = label(LABEL_POD).map_or("-", |p| owner_of_pod(p));
        return format!("k8s:{ns}/{owner}/{container}");
    }
    if let Some(repo) = meta.image.as_deref().map(image_repository).filter(|r| !r.is_empty()) {
        return repo.to_owned();
    }
    if let Some(id) = &meta.image_id {
        return id.clone();
    }
    format!("container:{}", &container_id[..container_id.len().min(12)])
}

/// Workload id of processes outside any container.
pub fn host_identity(hostname: &str) -> String {
    format!("host:{hostname}")
}

/// The owner part of a pod name: Deployment pods are `NAME-<rs hash>-<5>`,
/// DaemonSet/Job pods `NAME-<5>`, StatefulSet pods `NAME-<ordinal>`.
pub fn owner_of_pod(pod: &str) -> &str {
    let parts: Vec<&str> = pod.rsplitn(3, '-').collect();
    // Kubernetes generates these suffixes from an alphabet without vowels
    // (`rand.SafeEncodeString`), which tells them apart from name words.
    const SAFE: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let safe = |s: &str| s.bytes().all(|b| SAFE.contains(&b));
    let is_suffix5 = |s: &str| s.len() == 5 && safe(s);
    let is_rs_hash = |s: &str| (6..=10).contains(&s.len()) && safe(s);
    match parts.as_slice() {
        [last, hash, name] if is_suffix5(last) && is_rs_hash(hash) => name,
        [last, ..] if is_suffix5(last) || last.bytes().all(|b| b.is_ascii_digit()) => {
            &pod[..pod.len() - last.len() - 1]
        }
        _ => pod,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(image: Option<&str>, image_id: Option<&str>, labels: &[(&str, &str)]) -> ContainerMeta {
        ContainerMeta {
            name: None,
            image: image.map(str::to_owned),
            image_id: image_id.map(str::to_owned),
            labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        }
    }

    #[test]
    fn pod_owner_heuristics() {
        assert_eq!(owner_of_pod("web-7d4b9c8f6d-x2x9k"), "web");
        assert_eq!(owner_of_pod("node-exporter-x2x9k"), "node-exporter");
        assert_eq!(owner_of_pod("api-server-7c9d"), "api-server-7c9d");
        assert_eq!(owner_of_pod("db-0"), "db");
        assert_eq!(owner_of_pod("standalone"), "standalone");
    }

    #[test]
    fn identity_precedence() {
        let id = "41ee3b278ccc524b777af28ee230be43e8190e5e371378d1b86665907ad6a128";
        let k8s = meta(
            Some("nginx:1.25"),
            Some("sha256:1"),
            &[
                (LABEL_NAMESPACE, "shop"),
                (LABEL_POD, "web-7d4b9c8f6d-x2x9k"),
                (LABEL_CONTAINER, "nginx"),
            ],
        );
        assert_eq!(identity(id, &k8s), "k8s:shop/web/nginx");
        assert_eq!(identity(id, &meta(Some("nginx:1.25"), Some("sha256:1"), &[])), "nginx");
        assert_eq!(identity(id, &meta(None, Some("sha256:1"), &[])), "sha256:1");
        assert_eq!(identity(id, &meta(None, None, &[])), "container:41ee3b278ccc");
    }
}
