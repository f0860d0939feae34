//! The task-file ConfigMap and the repo volume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use sha2::{Digest, Sha256};

use super::{BuildInput, MAX_NAME, child_name};

/// Name of the task-file ConfigMap.
pub fn task_configmap_name(task: &str) -> String {
    child_name(task, "task", MAX_NAME)
}

/// Name of the repo volume's claim.
pub fn repo_pvc_name(task: &str) -> String {
    child_name(task, "repo", MAX_NAME)
}

/// sha256 (hex) of a task file.
pub fn task_file_sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The task file as an immutable ConfigMap, mounted read-only into implement
/// and review. Copied at the start of the run, so editing a referenced
/// ConfigMap later cannot change what the agent and the reviewer read.
pub fn task_configmap(input: &BuildInput<'_>, text: &str) -> ConfigMap {
    let mut meta = input.meta(task_configmap_name(input.name()), None);
    meta.annotations = Some(BTreeMap::from([(
        "hermes.dev/task-file-sha256".to_owned(),
        task_file_sha256(text),
    )]));
    ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([("task.md".to_owned(), text.to_owned())])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// The per-task repo volume: size and class from the profile.
pub fn repo_pvc(input: &BuildInput<'_>) -> PersistentVolumeClaim {
    let volume = &input.profile.volume;
    PersistentVolumeClaim {
        metadata: input.meta(repo_pvc_name(input.name()), None),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: volume.storage_class_name.as_ref().map(|c| c.0.clone()),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    volume.size.clone(),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}
