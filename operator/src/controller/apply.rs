//! Carries out a plan: children with server-side apply under the operator's
//! field manager, deletions, the status (skipped when unchanged), Events.

use hermes_crds::gateway::{Claims, Limits};
use hermes_crds::{HermesTask, HermesTaskStatus, RunPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use tracing::{info, warn};

use super::decide::Plan;
use super::observe::Caches;
use crate::builders::{self, BuildInput, PhaseFacts};
use crate::{Error, FIELD_MANAGER, Result};
use kube::runtime::reflector::ObjectRef;

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::kube(format!(
        "applying {} {name}",
        K::kind(&K::DynamicType::default())
    )))?;
    Ok(())
}

/// Creates `obj` unless it exists. For the credential Secret: its content
/// is deterministic, so an existing one is the same, and the operator needs
/// only the right to create Secrets, not to change anyone's.
async fn create_once<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("creating {} {name}", K::kind(&K::DynamicType::default())),
            source,
        }),
    }
}

async fn delete<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(Error::Kube {
            action: format!("deleting {} {name}", K::kind(&K::DynamicType::default())),
            source,
        }),
    }
}

/// Executes `plan` for `task`; the resourceVersion of the status it wrote,
/// if it wrote one.
pub async fn execute(
    client: &Client,
    caches: &Caches,
    recent: &super::Recent,
    recorder: &Recorder,
    gateway: Option<&crate::gateway::Gateway>,
    task: &HermesTask,
    plan: &Plan,
) -> Result<Option<String>> {
    let ns = task
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = task.name_any();

    if let (Some(effective), Some(profile)) = (plan.effective.as_ref(), plan.profile.as_ref()) {
        // Never a policy without them: the caches' readiness waits for them.
        let cluster = caches.cluster.addresses().ok_or(Error::CachesNotReady)?;
        let input = BuildInput {
            task,
            profile,
            effective,
            gateway: plan.gateway.as_ref(),
            cluster: &cluster,
        };
        if plan.ensure_children {
            // Level-triggered, but without a write where the cache already
            // shows the child as it should be (each phase start ensures them
            // again, so a narrowed profile or a deleted policy is put right).
            if let Some(text) = &plan.task_text {
                let cm = builders::task_configmap(&input, text);
                let cached = caches.config_maps.get(&ObjectRef::from(&cm));
                if cached.is_none_or(|c| c.data != cm.data) {
                    apply(&Api::<ConfigMap>::namespaced(client.clone(), &ns), &cm).await?;
                }
            }
            let pvc = builders::repo_pvc(&input);
            // A claim's spec is immutable once bound: existing is enough.
            if caches.claims.get(&ObjectRef::from(&pvc)).is_none() {
                apply(
                    &Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns),
                    &pvc,
                )
                .await?;
            }
            // The allow lists are shared by the profile's tasks and go with
            // the profile (an owner that does not block its deletion); the
            // deny stays with the namespace. Most phase starts find them all
            // in the cache as they should be, and write nothing.
            let profile_owner = caches
                .profiles
                .get(&ObjectRef::new(&task.spec.profile.0).within(&ns))
                .and_then(|p| p.controller_owner_ref(&()))
                .map(|mut o| {
                    o.controller = None;
                    o.block_owner_deletion = None;
                    vec![o]
                });
            let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), &ns);
            for mut np in builders::network_policies(&input) {
                if np.metadata.name.as_deref() != Some(builders::DENY_POLICY) {
                    np.metadata.owner_references = profile_owner.clone();
                }
                let cached = caches.network_policies.get(&ObjectRef::from(&np));
                if cached.is_none_or(|c| {
                    c.spec != np.spec
                        || c.metadata.labels != np.metadata.labels
                        || c.metadata.owner_references != np.metadata.owner_references
                }) {
                    // Shared: another task's reconcile may have just written it.
                    let key = format!("{ns}/{}", np.metadata.name.as_deref().unwrap_or_default());
                    let body = serde_json::to_string(&np).unwrap_or_default();
                    if !recent.written_lately(&key, &body) {
                        apply(&policies, &np).await?;
                        recent.wrote(key, body);
                    }
                }
            }
        }
        if let Some((phase, attempt)) = plan.create_job {
            let facts = PhaseFacts {
                base_commit: plan.status.base_commit.clone(),
                reviewed_commit: plan
                    .status
                    .review
                    .as_ref()
                    .map(|r| r.reviewed_commit.clone()),
            };
            if let Some(gateway) = gateway
                && input.uses_gateway(phase)
            {
                let claims = Claims {
                    namespace: ns.clone(),
                    task: name.clone(),
                    uid: task.uid().ok_or(Error::MissingMetadata("uid"))?,
                    phase,
                    attempt,
                    budget: if phase == RunPhase::Implement {
                        super::decide::limits(&effective.budget)
                    } else {
                        Limits::default()
                    },
                };
                let token = gateway.mint(&claims);
                if let Some(secret) = builders::credential_secret(&input, phase, attempt, &token) {
                    create_once(&Api::<Secret>::namespaced(client.clone(), &ns), &secret).await?;
                }
            }
            let job = builders::job(&input, phase, attempt, &facts);
            info!(task = %name, job = job.metadata.name.as_deref().unwrap_or_default(), "starting phase");
            apply(&Api::<Job>::namespaced(client.clone(), &ns), &job).await?;
            // Known at once, whatever fails after it (the status write).
            recent.applied_job(task, phase, attempt);
        }
    }

    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    for job in &plan.delete_jobs {
        delete(&jobs, job).await?;
    }
    if plan.delete_volume {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
        let claim = builders::repo_pvc_name(&name);
        // Once: the reconciles before the cache shows the deletion would
        // delete it again.
        let key = format!("{ns}/{claim}/{}", task.uid().unwrap_or_default());
        if !recent.written_lately(&key, "deleted") {
            delete(&pvcs, &claim).await?;
            recent.wrote(key, "deleted".into());
        }
    }

    let old = task.status.clone().unwrap_or_default();
    let mut written = None;
    if old != plan.status {
        written = write_status(client, task, &plan.status).await?;
    }

    let reference = task.object_ref(&());
    for e in &plan.events {
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.into(),
            note: Some(e.note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = recorder.publish(&event, &reference).await {
            // An Event is a courtesy; the status is the record.
            warn!(task = %name, error = %err, "could not publish an event");
        }
    }
    Ok(written)
}

/// Writes the whole status with server-side apply on the status subresource.
pub async fn write_status(
    client: &Client,
    task: &HermesTask,
    status: &HermesTaskStatus,
) -> Result<Option<String>> {
    let ns = task
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = task.name_any();
    let api: Api<HermesTask> = Api::namespaced(client.clone(), &ns);
    let body = serde_json::json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "status": status,
    });
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!("writing the status of {ns}/{name}")))?;
    Ok(written.resource_version())
}
