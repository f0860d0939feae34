//! Reads what the decision looks at: the profile, the task file, the task's
//! Jobs and their pods, the repo volume's claim. All of it comes from the
//! operator's watch caches ([`Caches`]), not from a list per reconcile: with
//! thousands of tasks, a list of a namespace's pods on every reconcile is
//! what would load the API server. The one read that goes to the API is a
//! task file in a ConfigMap the task names (not the operator's, so not
//! watched).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hermes_crds::task::PhaseImage;
use hermes_crds::{HermesTask, RunPhase, profile::HermesProfile};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStatus, PersistentVolumeClaim, Pod};
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use super::decide::{JobState, JobView, Observed, TaskText};
use super::index::LabelIndex;
use crate::builders::{LABEL_ATTEMPT, LABEL_PHASE, task_label};
use crate::{Error, Result};

fn owned_by(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// The watch caches reconciles read from.
#[derive(Clone)]
pub struct Caches {
    /// Every HermesProfile (in the watched namespaces).
    pub profiles: Store<HermesProfile>,
    /// The Jobs the operator made (by their managed-by label).
    pub jobs: Store<Job>,
    /// The Jobs' names by task label (a reconcile reads its own, not all).
    pub jobs_by_task: LabelIndex,
    /// The pods of those Jobs (by the task label), without their spec.
    pub pods: Store<Pod>,
    /// The pods' names by task label.
    pub pods_by_task: LabelIndex,
    /// The ConfigMaps the operator made.
    pub config_maps: Store<ConfigMap>,
    /// The claims the operator made.
    pub claims: Store<PersistentVolumeClaim>,
    /// The NetworkPolicies the operator made.
    pub network_policies: Store<k8s_openapi::api::networking::v1::NetworkPolicy>,
    /// The cluster's own addresses, shared by every namespace's controller.
    pub cluster: Arc<crate::cluster_addresses::ClusterAddresses>,
    /// True once every store above has listed ([`announce_ready`]).
    pub ready: Readiness,
}

impl Caches {
    /// Waits (up to a bound) until every cache has listed once, so a first
    /// reconcile after a start does not take a missing Job for one to create.
    ///
    /// Many reconciles wait here at once after a start. They wait on
    /// [`Readiness`], never on the stores themselves: a kube-runtime
    /// store's `wait_until_ready` wakes only the last of its concurrent
    /// waiters (one oneshot receiver, one waker slot), so the others would
    /// sleep until this bound's timer polls them again.
    pub async fn wait_ready(&self) -> Result<()> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(Duration::from_secs(60), ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Error::CachesNotReady),
        }
    }
}

/// Whether every cache has listed once, told to any number of waiters.
pub type Readiness = tokio::sync::watch::Receiver<bool>;

/// Waits for each cache's first list, one store at a time (so each store
/// has this one waiter: see [`Caches::wait_ready`]), logs how long each
/// took from `started`, and then tells `ready`. The tasks' own store is not
/// waited on here: the controller waits on it, and a second waiter could
/// take its wake-up.
pub async fn announce_ready(
    caches: Caches,
    ready: tokio::sync::watch::Sender<bool>,
    started: std::time::Instant,
) {
    async fn listed<K>(kind: &'static str, store: &Store<K>, started: std::time::Instant) -> bool
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        match store.wait_until_ready().await {
            Ok(()) => {
                tracing::info!(
                    kind,
                    objects = store.state().len(),
                    after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    "first list in the cache"
                );
                true
            }
            Err(e) => {
                tracing::warn!(kind, error = %e, "the cache's writer went away before its first list");
                false
            }
        }
    }
    let all = listed("HermesProfile", &caches.profiles, started).await
        && listed("Job", &caches.jobs, started).await
        && listed("Pod", &caches.pods, started).await
        && listed("ConfigMap", &caches.config_maps, started).await
        && listed("NetworkPolicy", &caches.network_policies, started).await
        && listed("PersistentVolumeClaim", &caches.claims, started).await;
    let mut cluster = caches.cluster.ready();
    let all = all && cluster.wait_for(|r| *r).await.is_ok();
    if all {
        tracing::info!(
            addresses = caches.cluster.addresses().map_or(0, |a| a.len()),
            after_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "the cluster's addresses are known"
        );
        let _ = ready.send(true);
    }
}

/// Observes the world of one task.
pub async fn observe(
    client: &Client,
    caches: &Caches,
    gateway: Option<&crate::gateway::Gateway>,
    task: &HermesTask,
) -> Result<Observed> {
    let ns = task
        .namespace()
        .ok_or(Error::MissingMetadata("namespace"))?;
    let name = task.name_any();
    let uid = task.uid().ok_or(Error::MissingMetadata("uid"))?;

    let profile = caches
        .profiles
        .get(&ObjectRef::new(&task.spec.profile.0).within(&ns))
        .map(|p| p.spec.clone());

    let task_text = Some(task_text(client, caches, task, &ns, &uid).await?);

    let label = task_label(&name);
    // The index names this task's objects; the cache holds them. Both are
    // filled by the same watch, so a name the cache lacks is merely gone.
    let job_list: Vec<Arc<Job>> = caches
        .jobs_by_task
        .names(&ns, &label)
        .into_iter()
        .filter_map(|n| caches.jobs.get(&ObjectRef::new(&n).within(&ns)))
        .filter(|j| owned_by(&j.metadata, &uid))
        .collect();
    let pod_list: Vec<Arc<Pod>> = caches
        .pods_by_task
        .names(&ns, &label)
        .into_iter()
        .filter_map(|n| caches.pods.get(&ObjectRef::new(&n).within(&ns)))
        .collect();

    let mut views = BTreeMap::new();
    for job in &job_list {
        let labels = job.labels();
        let Some(phase) = labels.get(LABEL_PHASE).and_then(|p| parse_phase(p)) else {
            continue;
        };
        let attempt = labels
            .get(LABEL_ATTEMPT)
            .and_then(|a| a.parse::<u32>().ok())
            .unwrap_or(1);
        let job_uid = job.uid().unwrap_or_default();
        let mut job_pods: Vec<&Pod> = pod_list
            .iter()
            .map(AsRef::as_ref)
            .filter(|p| owned_by(&p.metadata, &job_uid))
            .collect();
        job_pods.sort_by_key(|p| p.metadata.creation_timestamp.clone());
        let pod = job_pods.last().copied();
        views.insert(
            (phase, attempt),
            JobView {
                name: job.name_any(),
                state: job_state(job, pod),
                images: pod.map(|p| images(phase, p)).unwrap_or_default(),
            },
        );
    }

    let repo_volume_exists = caches
        .claims
        .get(&ObjectRef::new(&crate::builders::repo_pvc_name(&name)).within(&ns))
        .is_some_and(|p| owned_by(&p.metadata, &uid) && p.metadata.deletion_timestamp.is_none());

    let gateway = match gateway {
        Some(g) if profile.as_ref().is_some_and(|p| p.model.is_some()) => {
            // A phase that counts on the gateway just ended: its final count,
            // read now rather than at the next poll.
            if agent_phase_ended(task, &views) {
                g.refresh_task(&uid).await;
            }
            Some(super::decide::GatewayView {
                endpoint: g.endpoint(),
                usage: g.usage_of(&uid),
            })
        }
        Some(g) => Some(super::decide::GatewayView {
            endpoint: g.endpoint(),
            usage: Default::default(),
        }),
        None => None,
    };

    Ok(Observed {
        profile,
        task_text,
        jobs: views,
        repo_volume_exists,
        admission: super::admission::Admission::Granted,
        gateway,
    })
}

/// Whether the task is in implement or review by its status and that
/// phase's Job (of the recorded attempt) has ended.
fn agent_phase_ended(task: &HermesTask, views: &BTreeMap<(RunPhase, u32), JobView>) -> bool {
    let status = task.status.as_ref();
    let phase = match status.and_then(|s| s.phase) {
        Some(hermes_crds::TaskPhase::Implementing) => RunPhase::Implement,
        Some(hermes_crds::TaskPhase::Reviewing) => RunPhase::Review,
        _ => return false,
    };
    let attempt = status
        .and_then(|s| s.attempt)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1)
        .max(1);
    views
        .get(&(phase, attempt))
        .is_some_and(|v| v.state != JobState::Running)
}

fn parse_phase(s: &str) -> Option<RunPhase> {
    RunPhase::ALL.into_iter().find(|p| p.as_str() == s)
}

async fn task_text(
    client: &Client,
    caches: &Caches,
    task: &HermesTask,
    ns: &str,
    uid: &str,
) -> Result<TaskText> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let own_name = crate::builders::task_configmap_name(&task.name_any());
    // Once copied, the task's own immutable copy is what runs.
    if let Some(own) = caches
        .config_maps
        .get(&ObjectRef::new(&own_name).within(ns))
        && owned_by(&own.metadata, uid)
        && let Some(text) = own.data.as_ref().and_then(|d| d.get("task.md"))
    {
        return Ok(TaskText::Ready(text.clone()));
    }
    if let Some(text) = &task.spec.task {
        return Ok(TaskText::Ready(text.clone()));
    }
    let Some(r) = &task.spec.task_ref else {
        return Ok(TaskText::Missing(
            "the task has neither spec.task nor spec.taskRef".into(),
        ));
    };
    if r.repo_path.is_some() {
        return Ok(TaskText::InRepo);
    }
    let Some(key_ref) = &r.config_map_key_ref else {
        return Ok(TaskText::Missing("spec.taskRef names no source".into()));
    };
    let cm = maps
        .get_opt(&key_ref.name.0)
        .await
        .map_err(Error::kube(format!(
            "reading ConfigMap {ns}/{}",
            key_ref.name
        )))?;
    Ok(match cm {
        None => TaskText::Missing(format!(
            "ConfigMap {:?} does not exist; the task waits for it",
            key_ref.name.0
        )),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&key_ref.key)) {
            Some(text) if !text.trim().is_empty() => TaskText::Ready(text.clone()),
            Some(_) => TaskText::Missing(format!(
                "key {:?} of ConfigMap {:?} is empty",
                key_ref.key, key_ref.name.0
            )),
            None => TaskText::Missing(format!(
                "ConfigMap {:?} has no key {:?}",
                key_ref.name.0, key_ref.key
            )),
        },
    })
}

fn condition(job: &Job, type_: &str) -> Option<(String, Option<String>)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.type_.clone(), c.reason.clone()))
}

fn terminated_message(statuses: Option<&Vec<ContainerStatus>>, name: &str) -> Option<String> {
    statuses?
        .iter()
        .find(|s| s.name == name)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .message
        .clone()
}

/// What the kubelet says when a pod goes over its own ephemeral-storage
/// limits (pkg/kubelet/eviction/helpers.go), as opposed to a node short of
/// disk (`The node was low on resource`), which is the infrastructure's.
const OWN_STORAGE_EVICTIONS: [&str; 3] = [
    "exceeded its local ephemeral storage limit",
    "ephemeral local storage usage exceeds the total limit of containers",
    "Usage of EmptyDir volume",
];

/// The pod ended on its own use of a resource: evicted for going over its
/// ephemeral-storage limits, or a container OOM-killed.
fn exhausted(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<(&'static str, String)> {
    let message = status.message.as_deref().unwrap_or_default();
    if status.reason.as_deref() == Some("Evicted")
        && OWN_STORAGE_EVICTIONS.iter().any(|m| message.contains(m))
    {
        return Some(("ephemeral-storage", message.trim().to_owned()));
    }
    oom_killed(status)
}

/// A container of the pod that ended `OOMKilled`, whatever its exit code.
fn oom_killed(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<(&'static str, String)> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .find(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.reason.as_deref() == Some("OOMKilled"))
        })
        .map(|c| ("memory", format!("container {} was OOM-killed", c.name)))
}

const IMAGE_PROBLEMS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
];

/// What the Job and its (latest) pod show.
pub fn job_state(job: &Job, pod: Option<&Pod>) -> JobState {
    let status = pod.and_then(|p| p.status.as_ref());
    let main_name = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .map(|c| c.name.clone())
        .unwrap_or_default();
    // A Succeeded pod is the phase's success already: the Job (backoffLimit
    // 0, one completion) records Complete only after the Job controller's
    // next sync, up to a second later, and the pod carries the result.
    let pod_phase = status.and_then(|s| s.phase.as_deref());
    let pod_succeeded = pod_phase == Some("Succeeded");
    let job_ended = condition(job, "Complete").is_some()
        || condition(job, "Failed").is_some_and(|(_, r)| r.as_deref() != Some("DeadlineExceeded"));
    // An init container OOM-killed while its exit code was 0 (one process
    // killed, the container gone on to exit; containerd says `OOMKilled`)
    // counts as failed to the kubelet, which then starts nothing more and
    // fails nothing either: the pod stays Pending until its deadline. It is
    // the phase's end already.
    if !matches!(pod_phase, Some("Succeeded" | "Failed"))
        && let Some(status) = status
        && let Some((resource, why)) = oom_killed(status)
    {
        return JobState::Exhausted {
            resource,
            why,
            running: true,
        };
    }
    // The Job and its pods come through two watches, and either can be
    // ahead: a Job that ended while the pod cache still shows its pod
    // unfinished is read again when the pod's own update arrives (it wakes
    // this task). Deciding now would read an absent termination message as
    // an invalid result, or a failure as a lost pod.
    if job_ended && pod.is_some() && !matches!(pod_phase, Some("Succeeded" | "Failed")) {
        return JobState::Running;
    }
    if condition(job, "Complete").is_some() && pod.is_none() {
        return JobState::Lost {
            why: "the pod of the completed Job is gone, and its result with it".into(),
        };
    }
    if condition(job, "Complete").is_some() || pod_succeeded {
        // A process of the container OOM-killed while the container went on
        // to exit 0 (on cgroup v1 the kernel kills one process, not the
        // container; containerd still records `OOMKilled`): the phase ran
        // out of memory at its limit, and what it handed back was made by a
        // run that lost part of itself. The task's own use, as when the
        // whole container is killed.
        if let Some(status) = status
            && let Some((resource, why)) = oom_killed(status)
        {
            return JobState::Exhausted {
                resource,
                why,
                running: false,
            };
        }
        return JobState::Succeeded {
            main: terminated_message(
                status.and_then(|s| s.container_statuses.as_ref()),
                &main_name,
            ),
            context: terminated_message(
                status.and_then(|s| s.init_container_statuses.as_ref()),
                "context",
            ),
        };
    }
    if let Some((_, reason)) = condition(job, "Failed") {
        if reason.as_deref() == Some("DeadlineExceeded") {
            return JobState::TimedOut;
        }
        let Some(status) = status else {
            return JobState::Lost {
                why: "the pod disappeared".into(),
            };
        };
        // The pod's own activeDeadlineSeconds may fire before the Job's.
        if status.reason.as_deref() == Some("DeadlineExceeded") {
            return JobState::TimedOut;
        }
        // Before the disruption check: the kubelet marks its own evictions
        // as disruptions too, and these are the task's doing.
        if let Some((resource, why)) = exhausted(status) {
            return JobState::Exhausted {
                resource,
                why,
                running: false,
            };
        }
        let disrupted = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "DisruptionTarget" && c.status == "True");
        if disrupted || status.reason.as_deref() == Some("Evicted") {
            return JobState::Lost {
                why: status
                    .reason
                    .clone()
                    .unwrap_or_else(|| "the pod was disrupted".into()),
            };
        }
        let all = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for c in all {
            if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref())
                && t.exit_code != 0
            {
                return JobState::Failed {
                    message: t.message.clone().filter(|m| !m.trim().is_empty()),
                    why: format!(
                        "container {} exited {}{}",
                        c.name,
                        t.exit_code,
                        t.reason
                            .as_ref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    ),
                };
            }
        }
        return JobState::Lost {
            why: status
                .reason
                .clone()
                .unwrap_or_else(|| "the pod failed before its containers ran".into()),
        };
    }
    let waiting = status
        .into_iter()
        .flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .find(|r| IMAGE_PROBLEMS.contains(&r.as_str()));
    match waiting {
        Some(r) => JobState::Lost {
            why: format!("image not available ({r})"),
        },
        None => JobState::Running,
    }
}

fn images(phase: RunPhase, pod: &Pod) -> Vec<PhaseImage> {
    let Some(status) = pod.status.as_ref() else {
        return Vec::new();
    };
    status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten())
        .filter(|c| !c.image.is_empty())
        .map(|c| PhaseImage {
            phase,
            container: c.name.clone(),
            image: c.image.clone(),
            image_id: (!c.image_id.is_empty()).then(|| c.image_id.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job() -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "t-prepare"},
            "spec": {"template": {"spec": {"containers": [{"name": "prepare"}]}}},
            "status": {"active": 1},
        }))
        .expect("job")
    }

    fn pod(phase: &str, message: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "t-prepare-x"},
            "status": {
                "phase": phase,
                "containerStatuses": [{
                    "name": "prepare", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "message": message}},
                }],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn a_succeeded_pod_completes_the_phase_before_the_job_says_so() {
        match job_state(&job(), Some(&pod("Succeeded", "result"))) {
            JobState::Succeeded { main, .. } => assert_eq!(main.as_deref(), Some("result")),
            other => panic!("{other:?}"),
        }
        // A pod still running (or merely with a terminated container) does not.
        assert!(matches!(
            job_state(&job(), Some(&pod("Running", "result"))),
            JobState::Running
        ));
    }

    fn ended_job(condition: &str, reason: &str) -> Job {
        let mut job = job();
        job.status = serde_json::from_value(json!({
            "conditions": [{"type": condition, "status": "True", "reason": reason}],
        }))
        .expect("status");
        job
    }

    #[test]
    fn a_job_that_ended_waits_for_the_pod_cache_to_show_its_pod_ended() {
        // The Job watch ran ahead of the pod watch: the pod still shows
        // Running (no message yet). Reading it now would take the missing
        // message for an invalid result, or the failure for a lost pod.
        for (condition, reason) in [
            ("Complete", "CompletionsReached"),
            ("Failed", "BackoffLimitExceeded"),
        ] {
            assert_eq!(
                job_state(&ended_job(condition, reason), Some(&pod("Running", ""))),
                JobState::Running,
                "{condition}"
            );
        }
        // Once the pod shows its end, the result is read.
        match job_state(
            &ended_job("Complete", "CompletionsReached"),
            Some(&pod("Succeeded", "result")),
        ) {
            JobState::Succeeded { main, .. } => assert_eq!(main.as_deref(), Some("result")),
            other => panic!("{other:?}"),
        }
        // A deadline ends the phase whatever the pod shows.
        assert_eq!(
            job_state(
                &ended_job("Failed", "DeadlineExceeded"),
                Some(&pod("Running", ""))
            ),
            JobState::TimedOut
        );
    }

    /// The task's own use of a resource (an OOM kill, an eviction for its
    /// ephemeral-storage limits, as the kubelet words them) is exhausted,
    /// never lost; a node short of disk is the infrastructure's.
    #[test]
    fn the_pods_own_resource_use_is_exhausted_and_a_node_short_of_disk_is_lost() {
        let evicted = |message: &str| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": "t-implement-x"},
                "status": {
                    "phase": "Failed", "reason": "Evicted", "message": message,
                    "conditions": [{"type": "DisruptionTarget", "status": "True",
                                    "reason": "TerminationByKubelet"}],
                },
            }))
            .expect("pod")
        };
        let failed = ended_job("Failed", "BackoffLimitExceeded");
        for message in [
            "Container agent exceeded its local ephemeral storage limit \"4Gi\". ",
            "Pod ephemeral local storage usage exceeds the total limit of containers 6Gi. ",
            "Usage of EmptyDir volume \"scratch\" exceeds the limit \"256Mi\". ",
        ] {
            match job_state(&failed, Some(&evicted(message))) {
                JobState::Exhausted { resource, why, .. } => {
                    assert_eq!(resource, "ephemeral-storage");
                    assert_eq!(why, message.trim());
                }
                other => panic!("{message}: {other:?}"),
            }
        }
        assert!(matches!(
            job_state(
                &failed,
                Some(&evicted(
                    "The node was low on resource: ephemeral-storage. "
                ))
            ),
            JobState::Lost { .. }
        ));
        let oom: Pod = serde_json::from_value(json!({
            "metadata": {"name": "t-implement-x"},
            "status": {
                "phase": "Failed",
                "containerStatuses": [{
                    "name": "agent", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}},
                }],
            },
        }))
        .expect("pod");
        assert_eq!(
            job_state(&failed, Some(&oom)),
            JobState::Exhausted {
                resource: "memory",
                why: "container agent was OOM-killed".into(),
                running: false,
            }
        );
    }

    /// On cgroup v1 the OOM killer takes one process (the agent's test
    /// run, say) and the container can still exit 0: containerd records
    /// `OOMKilled` all the same, and the phase's result is not taken. Where
    /// that container is an init container (the agent's, before collect),
    /// the kubelet leaves the pod Pending: the phase has ended all the same,
    /// and its Job is still to be deleted.
    #[test]
    fn a_pod_that_succeeded_after_an_oom_kill_is_exhausted() {
        let pending: Pod = serde_json::from_value(json!({
            "metadata": {"name": "t-implement-x"},
            "status": {
                "phase": "Pending",
                "initContainerStatuses": [{
                    "name": "agent", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "OOMKilled"}},
                }],
                "containerStatuses": [{
                    "name": "collect", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "PodInitializing"}},
                }],
            },
        }))
        .expect("pod");
        assert_eq!(
            job_state(&job(), Some(&pending)),
            JobState::Exhausted {
                resource: "memory",
                why: "container agent was OOM-killed".into(),
                running: true,
            }
        );
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "t-implement-x"},
            "status": {
                "phase": "Succeeded",
                "containerStatuses": [{
                    "name": "agent", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "OOMKilled",
                                             "message": "{}"}},
                }],
            },
        }))
        .expect("pod");
        assert_eq!(
            job_state(&ended_job("Complete", "CompletionsReached"), Some(&pod)),
            JobState::Exhausted {
                resource: "memory",
                why: "container agent was OOM-killed".into(),
                running: false,
            }
        );
    }

    #[test]
    fn a_completed_job_whose_pod_is_gone_is_lost_not_an_invalid_result() {
        assert!(matches!(
            job_state(&ended_job("Complete", "CompletionsReached"), None),
            JobState::Lost { .. }
        ));
    }
}

#[cfg(test)]
mod readiness {
    use super::*;
    use kube::runtime::{reflector, watcher};

    /// Many reconciles wait for the caches at once after a start; every one
    /// goes on as soon as the last cache has listed, not when the bound's
    /// timer fires (a store's own `wait_until_ready` would wake only the
    /// last of them: in paused time the others would reach 60 s).
    #[tokio::test(start_paused = true)]
    async fn every_concurrent_waiter_goes_on_once_the_caches_have_listed() {
        let (profiles, mut w_profiles) = reflector::store();
        let (jobs, mut w_jobs) = reflector::store();
        let (pods, mut w_pods) = reflector::store();
        let (config_maps, mut w_cms) = reflector::store();
        let (claims, mut w_claims) = reflector::store();
        let (network_policies, mut w_nps) = reflector::store();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let caches = Caches {
            profiles,
            jobs,
            jobs_by_task: LabelIndex::new("hermes.dev/task"),
            pods,
            pods_by_task: LabelIndex::new("hermes.dev/task"),
            config_maps,
            claims,
            network_policies,
            cluster: crate::cluster_addresses::ClusterAddresses::fixed(Vec::new()),
            ready,
        };
        let start = tokio::time::Instant::now();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let c = caches.clone();
                tokio::spawn(async move { c.wait_ready().await.map(|()| start.elapsed()) })
            })
            .collect();
        tokio::spawn(announce_ready(
            caches.clone(),
            ready_tx,
            std::time::Instant::now(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        w_profiles.apply_watcher_event(&watcher::Event::InitDone);
        w_jobs.apply_watcher_event(&watcher::Event::InitDone);
        w_pods.apply_watcher_event(&watcher::Event::InitDone);
        w_cms.apply_watcher_event(&watcher::Event::InitDone);
        w_claims.apply_watcher_event(&watcher::Event::InitDone);
        w_nps.apply_watcher_event(&watcher::Event::InitDone);
        for w in waiters {
            let waited = w.await.unwrap().unwrap();
            assert!(waited < Duration::from_secs(1), "a waiter slept {waited:?}");
        }
        // Before the lists, a waiter waits; it times out only at the bound.
        let (_sender, unready) = tokio::sync::watch::channel(false);
        let stuck = Caches {
            ready: unready,
            ..caches
        };
        let t = tokio::time::Instant::now();
        assert!(matches!(
            stuck.wait_ready().await,
            Err(Error::CachesNotReady)
        ));
        assert!(t.elapsed() >= Duration::from_secs(60));
    }
}
