//! Deployment artefacts: container images, Kubernetes manifests and the Helm chart, systemd units.
//!
//! One test binary per area (linked once); one module per subject.

mod deploy_containers;
mod deploy_kubernetes;
mod deploy_systemd;
