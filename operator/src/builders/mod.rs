//! Pure builders: from (task, profile, effective settings, recorded facts) to
//! the objects a task owns. No API calls here; snapshot tests pin every field.
//!
//! ```text
//!   <task>-task             ConfigMap  the task file, immutable, mounted read-only
//!   <task>-repo             PVC        the repo volume
//!   hermes-deny             NetworkPolicy  the namespace's default deny for task pods
//!   hermes-egress-<hash>    NetworkPolicy  an allow list, shared by the pods labelled with its hash
//!   <task>-<phase>[-<n>]    Job        one per phase and infrastructure attempt
//! ```

use std::collections::BTreeMap;

use hermes_crds::{HermesTask, RunPhase};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, ResourceRequirements, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::narrowing::Effective;
use hermes_crds::profile::HermesProfileSpec;

mod gateway;
mod jobs;
mod network;
mod storage;

pub use gateway::{credential_secret, credential_secret_name};
pub use jobs::{AGENT_LIMITS, PhaseFacts, RUNNER_LIMITS, job, job_name};
pub use network::{
    DENY_POLICY, GUARDED_RANGES, METADATA_ADDRESSES, deny_policy, egress_label, egress_policy,
    excepts, network_policies,
};
pub use storage::{repo_pvc, repo_pvc_name, task_configmap, task_configmap_name, task_file_sha256};

/// Label naming the task (shortened with a hash when the name is too long for a label).
pub const LABEL_TASK: &str = "hermes.dev/task";
/// Label naming the phase of a Job and its pod.
pub const LABEL_PHASE: &str = "hermes.dev/phase";
/// Label on phase pods naming the allow list their NetworkPolicy holds.
pub const LABEL_EGRESS: &str = "hermes.dev/egress";
/// Label carrying the infrastructure attempt of a Job.
pub const LABEL_ATTEMPT: &str = "hermes.dev/attempt";
/// Annotation on pods carrying the task's full name (labels are length-bound).
pub const ANNOTATION_TASK_NAME: &str = "hermes.dev/task-name";

/// Where the pods mount things (the contract with the runner's flags).
pub mod paths {
    /// The repo volume's mount point.
    pub const WORKSPACE: &str = "/workspace";
    /// The clone inside the repo volume.
    pub const REPO: &str = "/workspace/repo";
    /// Where prepare writes a task file read from the repository.
    pub const TASK_FROM_REPO: &str = "/workspace/task.md";
    /// The task ConfigMap's mount point.
    pub const TASK_DIR: &str = "/hermes/task";
    /// The task file inside it.
    pub const TASK_FILE: &str = "/hermes/task/task.md";
    /// The emptyDir the steps of one pod hand files through.
    pub const SCRATCH: &str = "/hermes/scratch";
    /// The review bundle: written by `context`, read-only to everything after it.
    pub const BUNDLE: &str = "/hermes/bundle";
    /// Publish's verified copy: written by `verify` (which mounts the repo
    /// volume), read-only to `publish` (which does not).
    pub const VERIFIED: &str = "/hermes/verified";
    /// The runner binary, copied for wrapping the agent's command.
    pub const BIN: &str = "/hermes/bin";
    /// The agent's writable home (CLI configuration).
    pub const HOME: &str = "/hermes/home";
    /// Git credentials (read in prepare, push in publish).
    pub const GIT_SECRET: &str = "/hermes/secrets/git";
    /// Model credentials (implement and review, without the gateway).
    pub const MODEL_SECRET: &str = "/hermes/secrets/model";
    /// The phase's gateway credential (implement and review, with the gateway).
    pub const GATEWAY_SECRET: &str = "/hermes/secrets/gateway";
    /// The profile's CA bundle for https remotes (prepare and publish).
    pub const GIT_CA: &str = "/hermes/git-ca";
    /// The bundle's file inside it (the ConfigMap's key `ca.crt`).
    pub const GIT_CA_FILE: &str = "/hermes/git-ca/ca.crt";
    /// The runner binary inside the runner image.
    pub const RUNNER: &str = "/usr/local/bin/hermes-runner";
}

/// The uid and gid every task container runs as.
pub const RUN_AS: i64 = 65532;
/// Longest object name the builders produce (a label value's limit).
const MAX_NAME: usize = 63;
/// Longest Job name: the Job controller appends `-xxxxx` to name its pods.
const MAX_JOB_NAME: usize = 52;

/// Everything a builder needs, computed once per reconcile.
pub struct BuildInput<'a> {
    /// The task.
    pub task: &'a HermesTask,
    /// Its profile's spec.
    pub profile: &'a HermesProfileSpec,
    /// The effective settings (profile narrowed by the task).
    pub effective: &'a Effective,
    /// Where pods reach the Hermes gateway, when the operator has one.
    pub gateway: Option<&'a crate::gateway::Endpoint>,
    /// The cluster's own addresses (API server, nodes, the platform team's
    /// list: [`crate::cluster_addresses`]), excepted from every CIDR rule
    /// wider than them.
    pub cluster: &'a [ipnet::IpNet],
}

impl BuildInput<'_> {
    /// Whether `phase`'s pod goes through the gateway: the profile routes
    /// its model there (`spec.model`) and the operator knows where the
    /// gateway is. Implement and review always (their model API and egress);
    /// prepare and publish when the profile lists hosts for them (the git
    /// host by name, through the egress proxy).
    pub fn uses_gateway(&self, phase: RunPhase) -> bool {
        self.profile.model.is_some()
            && self.gateway.is_some()
            && match phase {
                RunPhase::Implement | RunPhase::Review => true,
                RunPhase::Prepare | RunPhase::Publish => {
                    !self.profile.egress.hosts.get(phase).is_empty()
                }
            }
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        self.task.metadata.name.as_deref().unwrap_or_default()
    }

    /// The task's namespace.
    pub fn namespace(&self) -> Option<String> {
        self.task.metadata.namespace.clone()
    }

    /// The owner reference every child carries (controller, blocks owner deletion).
    pub fn owner(&self) -> Vec<OwnerReference> {
        self.task.controller_owner_ref(&()).into_iter().collect()
    }

    /// Metadata of a child: name, namespace, owner, labels.
    pub fn meta(&self, name: String, phase: Option<RunPhase>) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: self.namespace(),
            owner_references: Some(self.owner()),
            labels: Some(labels(self.name(), phase)),
            ..ObjectMeta::default()
        }
    }
}

/// `<task>-<suffix>`, shortened to `limit` with a hash of the task's name.
pub fn child_name(task: &str, suffix: &str, limit: usize) -> String {
    let full = format!("{task}-{suffix}");
    if full.len() <= limit {
        return full;
    }
    let hash = short_hash(task);
    let keep = limit.saturating_sub(suffix.len() + hash.len() + 2);
    let prefix = task[..keep.min(task.len())].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{suffix}")
}

/// The task's label value: its name, or a shortened form with a hash.
pub fn task_label(task: &str) -> String {
    if task.len() <= MAX_NAME {
        return task.to_owned();
    }
    let hash = short_hash(task);
    let prefix = task[..MAX_NAME - hash.len() - 1].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

fn short_hash(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    digest.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// The labels of every child (and of pods), per DESIGN.md.
pub fn labels(task: &str, phase: Option<RunPhase>) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/name".to_owned(), "hermes".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "hermes-operator".to_owned(),
        ),
        ("app.kubernetes.io/instance".to_owned(), task_label(task)),
        (LABEL_TASK.to_owned(), task_label(task)),
    ]);
    if let Some(p) = phase {
        l.insert(
            "app.kubernetes.io/component".to_owned(),
            p.as_str().to_owned(),
        );
        l.insert(LABEL_PHASE.to_owned(), p.as_str().to_owned());
    }
    l
}

/// The Pod Security "restricted" context of every task pod.
pub fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS),
        run_as_group: Some(RUN_AS),
        fs_group: Some(RUN_AS),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// The "restricted" context of every container: no privilege escalation, no
/// capabilities, read-only root filesystem.
pub fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: None,
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

/// The ephemeral-storage request of a container whose limit Hermes set:
/// small, so a node's disk is not reserved whole by tasks that use little.
pub const EPHEMERAL_REQUEST: &str = "256Mi";

/// Default limits of a container: CPU, memory, ephemeral storage.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// CPU.
    pub cpu: &'static str,
    /// Memory.
    pub memory: &'static str,
    /// Ephemeral storage (its writable layer, logs; the pod's emptyDirs
    /// count against the sum of its containers').
    pub ephemeral: &'static str,
}

/// Resources: the profile's, with every limit it leaves out filled in, so
/// no task container runs without a CPU, memory and ephemeral-storage
/// limit. A missing limit is the profile's request for it (a limit may not
/// be below its request), else `defaults`'. Without a profile value, CPU
/// and memory are requested as limited, ephemeral storage
/// [`EPHEMERAL_REQUEST`].
pub fn resources(
    from_profile: Option<&ResourceRequirements>,
    defaults: Limits,
) -> ResourceRequirements {
    let mut r = from_profile
        .cloned()
        .unwrap_or_else(|| ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity(defaults.cpu.into())),
                ("memory".to_owned(), Quantity(defaults.memory.into())),
                (
                    "ephemeral-storage".to_owned(),
                    Quantity(EPHEMERAL_REQUEST.into()),
                ),
            ])),
            ..ResourceRequirements::default()
        });
    let requests = r.requests.clone().unwrap_or_default();
    let limits = r.limits.get_or_insert_with(BTreeMap::new);
    for (key, default) in [
        ("cpu", defaults.cpu),
        ("memory", defaults.memory),
        ("ephemeral-storage", defaults.ephemeral),
    ] {
        if !limits.contains_key(key) {
            let value = requests
                .get(key)
                .cloned()
                .unwrap_or_else(|| Quantity(default.into()));
            limits.insert(key.to_owned(), value);
        }
    }
    r
}

/// A container with the restricted context and the File termination-message policy.
pub fn container(name: &str, image: &str, pull: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        image_pull_policy: Some(pull.into()),
        security_context: Some(container_security()),
        termination_message_policy: Some("File".into()),
        ..Container::default()
    }
}

/// A volume mount.
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(read_only),
        ..VolumeMount::default()
    }
}

/// An emptyDir volume with a size limit.
pub fn empty_dir(name: &str, size: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(k8s_openapi::api::core::v1::EmptyDirVolumeSource {
            size_limit: Some(Quantity(size.into())),
            medium: None,
        }),
        ..Volume::default()
    }
}

#[cfg(test)]
mod tests;
