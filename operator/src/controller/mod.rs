//! The reconcile loop: one HermesTask at a time, level-triggered.
//!
//! `reconcile` = [`observe::observe`] (read) → [`decide::decide`] (pure) →
//! [`apply::execute`] (write). Watches: tasks; the Jobs, ConfigMaps, claims
//! and NetworkPolicies they own; the pods of their Jobs (for termination
//! messages); and profiles (a change re-reconciles the tasks naming it).

pub mod admission;
pub mod apply;
pub mod conditions;
pub mod decide;
pub mod index;
pub mod observe;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use hermes_crds::{RunPhase, TaskPhase};

use futures::StreamExt;
use hermes_crds::{HermesProfile, HermesTask};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tracing::{Instrument, info_span, warn};

use crate::builders::{ANNOTATION_TASK_NAME, LABEL_TASK};
use crate::metrics::{Metrics, PhaseLabel, ReasonLabel};
use crate::{EVENT_REPORTER, Error, Result};

/// What every reconcile shares.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Publishes Events on tasks.
    pub recorder: Recorder,
    /// The operator's metrics.
    pub metrics: Arc<Metrics>,
    /// Every task, as the watch last saw it (admission counts from it).
    pub tasks: reflector::Store<HermesTask>,
    /// Slots granted and not yet visible in `tasks`.
    pub ledger: Arc<admission::Ledger>,
    /// The watch caches of everything else a reconcile reads.
    pub caches: observe::Caches,
    /// What this process wrote that the caches may not show yet.
    pub recent: Recent,
    /// The Hermes gateway, when the operator has one.
    pub gateway: Option<Arc<crate::gateway::Gateway>>,
}

/// What this process wrote a moment ago, by task uid: the caches show a
/// write only when its watch event arrives, and a reconcile that ran on the
/// older view would decide the same step again (another status write, a
/// second Event, the Job applied again).
#[derive(Default)]
pub struct Recent {
    /// The resourceVersion of the last status written.
    status: std::sync::Mutex<HashMap<String, u64>>,
    /// Jobs applied, not yet in the Job cache: (phase, attempt, name, when).
    jobs: std::sync::Mutex<HashMap<String, Vec<AppliedJob>>>,
    /// Shared objects written (a NetworkPolicy's body) and claims deleted,
    /// by `namespace/name`: in a burst, many reconciles run before the
    /// cache shows the first one's write.
    writes: std::sync::Mutex<HashMap<String, (String, std::time::Instant)>>,
}

/// A Job applied: its phase, attempt, name and when.
type AppliedJob = (RunPhase, u32, String, std::time::Instant);

/// How long an applied Job is taken as running without the cache showing it
/// (after that, the cache's word wins: a Job deleted at once is made again).
const APPLIED_JOB_GRACE: Duration = Duration::from_secs(30);

impl Recent {
    fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        match m.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// True when the task in hand is older than the status last written for
    /// it: its own watch event, with the newer version, is on its way.
    fn stale(&self, task: &HermesTask) -> bool {
        let uid = task.uid().unwrap_or_default();
        let seen = task.resource_version().and_then(|v| v.parse::<u64>().ok());
        let mut written = Self::lock(&self.status);
        match (written.get(&uid), seen) {
            (Some(w), Some(seen)) if seen < *w => true,
            (Some(_), _) => {
                written.remove(&uid);
                false
            }
            _ => false,
        }
    }

    fn wrote_status(&self, task: &HermesTask, version: Option<String>) {
        if let Some(v) = version.and_then(|v| v.parse::<u64>().ok()) {
            Self::lock(&self.status).insert(task.uid().unwrap_or_default(), v);
        }
    }

    fn applied_job(&self, task: &HermesTask, phase: RunPhase, attempt: u32) {
        let name = crate::builders::job_name(&task.name_any(), phase, attempt);
        Self::lock(&self.jobs)
            .entry(task.uid().unwrap_or_default())
            .or_default()
            .push((phase, attempt, name, std::time::Instant::now()));
    }

    /// Whether this operator applied the Job of (`phase`, `attempt`) a
    /// moment ago (and the cache does not show it yet).
    fn applied_lately(&self, task: &HermesTask, phase: RunPhase, attempt: u32) -> bool {
        Self::lock(&self.jobs)
            .get(&task.uid().unwrap_or_default())
            .is_some_and(|l| l.iter().any(|(p, a, ..)| (*p, *a) == (phase, attempt)))
    }

    /// Adds the Jobs applied a moment ago that the cache does not show yet,
    /// as running; forgets those it shows (or that are too old).
    fn fill_in(&self, task: &HermesTask, observed: &mut decide::Observed) {
        let uid = task.uid().unwrap_or_default();
        let mut all = Self::lock(&self.jobs);
        let Some(list) = all.get_mut(&uid) else {
            return;
        };
        list.retain(|(phase, attempt, name, at)| {
            if observed.jobs.contains_key(&(*phase, *attempt)) || at.elapsed() > APPLIED_JOB_GRACE {
                return false;
            }
            observed.jobs.insert(
                (*phase, *attempt),
                decide::JobView {
                    name: name.clone(),
                    state: decide::JobState::Running,
                    images: Vec::new(),
                },
            );
            true
        });
        if list.is_empty() {
            all.remove(&uid);
        }
    }

    /// True when this process wrote `body` as `key` within the grace (the
    /// cache may not show it yet). Old entries are forgotten on the way.
    pub fn written_lately(&self, key: &str, body: &str) -> bool {
        let mut writes = Self::lock(&self.writes);
        writes.retain(|_, (_, at)| at.elapsed() <= APPLIED_JOB_GRACE);
        writes.get(key).is_some_and(|(b, _)| b == body)
    }

    /// Remembers a write that succeeded (only then: a reconcile that skips
    /// it must find it done, not in flight).
    pub fn wrote(&self, key: String, body: String) {
        Self::lock(&self.writes).insert(key, (body, std::time::Instant::now()));
    }

    fn forget(&self, task: &HermesTask) {
        let uid = task.uid().unwrap_or_default();
        Self::lock(&self.status).remove(&uid);
        Self::lock(&self.jobs).remove(&uid);
    }
}

impl Context {
    /// A context for `client`; `instance` names this replica in Events.
    pub fn new(
        client: Client,
        instance: Option<String>,
        metrics: Arc<Metrics>,
        tasks: reflector::Store<HermesTask>,
        ledger: Arc<admission::Ledger>,
        caches: observe::Caches,
        gateway: Option<Arc<crate::gateway::Gateway>>,
    ) -> Self {
        let reporter = Reporter {
            controller: EVENT_REPORTER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            tasks,
            ledger,
            caches,
            recent: Recent::default(),
            gateway,
        }
    }

    /// The tasks of `namespace` in the cache.
    fn peers(&self, namespace: &str) -> Vec<Arc<HermesTask>> {
        self.tasks
            .state()
            .into_iter()
            .filter(|t| t.namespace().as_deref() == Some(namespace))
            .collect()
    }
}

/// Follows the task watch: a task whose phase changed (or that is gone)
/// marks its profile for the scheduler to look at; a task that ended (or is
/// gone) wakes the tasks that depend on it.
struct Waker {
    last: HashMap<String, Option<TaskPhase>>,
    store: reflector::Store<HermesTask>,
    dirty: UnboundedSender<(String, String)>,
    wake: UnboundedSender<ObjectRef<HermesTask>>,
}

impl Waker {
    fn on_event(&mut self, event: &watcher::Event<HermesTask>) {
        let phase = |t: &HermesTask| t.status.as_ref().and_then(|s| s.phase);
        let (task, ended) = match event {
            watcher::Event::InitApply(t) | watcher::Event::Apply(t) => {
                let new = phase(t);
                let old = self.last.insert(t.uid().unwrap_or_default(), new);
                if old == Some(new) {
                    return;
                }
                (t, new.is_some_and(TaskPhase::is_terminal))
            }
            watcher::Event::Delete(t) => {
                self.last.remove(&t.uid().unwrap_or_default());
                (t, true)
            }
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let ns = task.namespace().unwrap_or_default();
        let _ = self
            .dirty
            .unbounded_send((ns.clone(), task.spec.profile.0.clone()));
        if ended {
            let peers: Vec<Arc<HermesTask>> = self.store.state();
            for t in admission::dependents(&ns, &task.name_any(), &peers) {
                let _ = self.wake.unbounded_send(ObjectRef::from(t.as_ref()));
            }
        }
    }
}

/// Wakes the tasks a place is free for: for each profile the watch marked,
/// at once, and for every profile every [`SWEEP_EVERY`] (a safety net for a
/// change the watch did not show, such as a relist).
async fn schedule(
    store: reflector::Store<HermesTask>,
    ledger: Arc<admission::Ledger>,
    mut dirty: futures::channel::mpsc::UnboundedReceiver<(String, String)>,
    wake: UnboundedSender<ObjectRef<HermesTask>>,
) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut profiles = std::collections::BTreeSet::new();
        tokio::select! {
            next = dirty.next() => match next {
                Some(key) => { profiles.insert(key); }
                None => return,
            },
            _ = tick.tick() => {
                profiles.extend(
                    store
                        .state()
                        .iter()
                        .map(|t| (t.namespace().unwrap_or_default(), t.spec.profile.0.clone())),
                );
            }
        }
        // Everything marked meanwhile, at once.
        while let Ok(key) = dirty.try_recv() {
            profiles.insert(key);
        }
        for (ns, profile) in profiles {
            // Read under the ledger's lock (see `Ledger::admit`).
            let peers = || -> Vec<Arc<HermesTask>> {
                store
                    .state()
                    .into_iter()
                    .filter(|t| t.namespace().as_deref() == Some(ns.as_str()))
                    .collect()
            };
            for t in ledger.heads(&ns, &profile, peers) {
                if wake.unbounded_send(ObjectRef::from(t.as_ref())).is_err() {
                    return;
                }
            }
        }
    }
}

/// How often every profile's queue is looked at without a watch event.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Reconciles one task.
pub async fn reconcile(task: Arc<HermesTask>, ctx: Arc<Context>) -> Result<Action> {
    let span = info_span!(
        "reconcile",
        namespace = task.namespace().unwrap_or_default(),
        name = task.name_any()
    );
    async move {
        if task.metadata.deletion_timestamp.is_some() {
            // Children go with the task (ownerReferences); nothing outside the cluster to clean.
            return Ok(Action::await_change());
        }
        let started = std::time::Instant::now();
        ctx.metrics.reconciles.inc();
        ctx.caches.wait_ready().await?;
        if ctx.recent.stale(&task) {
            // The watch event of our own write comes next; a safety net in case.
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
        let mut observed =
            observe::observe(&ctx.client, &ctx.caches, ctx.gateway.as_deref(), &task).await?;
        ctx.recent.fill_in(&task, &mut observed);
        let request = admission::request(&task, !observed.jobs.is_empty());
        if let (Some(request), Some(profile)) = (request, observed.profile.as_ref()) {
            let ns = task.namespace().unwrap_or_default();
            observed.admission = ctx
                .ledger
                .admit(&task, request, &profile.concurrency, || ctx.peers(&ns));
        }
        let plan = decide::decide(&task, &observed, &now());
        let granted = request.is_some() && observed.admission == admission::Admission::Granted;
        if granted && plan.create_job.is_none() {
            // Granted, but the decision did not start it (e.g. it failed
            // admission checks): the place goes back.
            ctx.ledger.release(&task);
        }
        match apply::execute(
            &ctx.client,
            &ctx.caches,
            &ctx.recent,
            &ctx.recorder,
            ctx.gateway.as_deref(),
            &task,
            &plan,
        )
        .await
        {
            Ok(version) => {
                if plan.status.phase.is_some_and(TaskPhase::is_terminal) {
                    ctx.recent.forget(&task);
                } else {
                    ctx.recent.wrote_status(&task, version);
                }
            }
            Err(e) => {
                // The place goes back only if the phase did not start: a Job
                // applied before a later step failed (the status write, under
                // a loaded API server) runs, and its task holds the place
                // until the cache shows it running. Giving it back let a
                // second task take it: one over maxRunning.
                let started = plan.create_job.is_some_and(|(phase, attempt)| {
                    ctx.recent.applied_lately(&task, phase, attempt)
                });
                if granted && !started {
                    ctx.ledger.release(&task);
                }
                return Err(e);
            }
        }
        let old_phase = task.status.as_ref().and_then(|s| s.phase);
        if let Some(phase) = plan.status.phase.filter(|p| Some(*p) != old_phase) {
            ctx.metrics
                .transitions
                .get_or_create(&PhaseLabel {
                    phase: format!("{phase:?}"),
                })
                .inc();
        }
        ctx.metrics
            .reconcile_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(plan
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue))
    }
    .instrument(span)
    .await
}

/// What to do after a failed reconcile: transient API trouble retries soon,
/// an invalid object (a bug, or a schema the operator does not match) later.
pub fn error_policy(task: Arc<HermesTask>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .errors
        .get_or_create(&ReasonLabel {
            reason: error.metric_label().to_owned(),
        })
        .inc();
    warn!(namespace = task.namespace().unwrap_or_default(), name = task.name_any(), error = %error, reason = error.metric_label(), "reconcile failed");
    match error.metric_label() {
        "conflict" | "transport" | "api" | "not_found" | "caches" => {
            Action::requeue(Duration::from_secs(2))
        }
        _ => Action::requeue(Duration::from_secs(60)),
    }
}

/// An API over every namespace, or one.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the controller until `shutdown` resolves, over every namespace or,
/// with `namespace`, over that one only.
pub async fn run(
    client: Client,
    namespace: Option<String>,
    instance: Option<String>,
    metrics: Arc<Metrics>,
    gateway: Option<Arc<crate::gateway::Gateway>>,
    cluster: Arc<crate::cluster_addresses::ClusterAddresses>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=hermes-operator");
    let tasks: Api<HermesTask> = api(&client, ns);
    // The task cache drops managedFields and the last-applied annotation:
    // the operator never reads them, and with thousands of tasks they are
    // most of the cache.
    let (store, writer) = reflector::store();
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
    let (dirty_tx, dirty_rx) = futures::channel::mpsc::unbounded();
    let ledger = Arc::new(admission::Ledger::default());
    if let Some(g) = &gateway {
        g.subscribe(namespace.clone(), wake_tx.clone());
    }
    let mut waker = Waker {
        last: HashMap::new(),
        store: store.clone(),
        dirty: dirty_tx,
        wake: wake_tx.clone(),
    };
    let task_stream = watcher(tasks, watcher::Config::default())
        .default_backoff()
        .modify(|t: &mut HermesTask| {
            t.managed_fields_mut().clear();
            t.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .inspect(move |event| {
            if let Ok(event) = event {
                waker.on_event(event);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(task_stream, store.clone());
    metrics.set_store(store.clone());
    let scheduler = tokio::spawn(schedule(store.clone(), ledger.clone(), dirty_rx, wake_tx));
    // Each kind is watched once: the watch fills the cache reconciles read
    // and triggers the owning task.
    let (jobs, jobs_writer) = reflector::store();
    let jobs_by_task = index::LabelIndex::new(LABEL_TASK);
    let job_index = jobs_by_task.clone();
    let job_stream = watcher(api::<Job>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|j: &mut Job| j.managed_fields_mut().clear())
        .reflect(jobs_writer)
        .inspect(move |e| {
            if let Ok(e) = e {
                job_index.apply(e);
            }
        })
        .touched_objects();
    let (config_maps, cm_writer) = reflector::store();
    let cm_stream = watcher(api::<ConfigMap>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|c: &mut ConfigMap| c.managed_fields_mut().clear())
        .reflect(cm_writer)
        .touched_objects();
    let (claims, claims_writer) = reflector::store();
    let claim_stream = watcher(api::<PersistentVolumeClaim>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|c: &mut PersistentVolumeClaim| c.managed_fields_mut().clear())
        .reflect(claims_writer)
        .touched_objects();
    let (pods, pods_writer) = reflector::store();
    let pods_by_task = index::LabelIndex::new(LABEL_TASK);
    let pod_index = pods_by_task.clone();
    let pod_stream = watcher(
        api::<Pod>(&client, ns),
        watcher::Config::default().labels(LABEL_TASK),
    )
    .default_backoff()
    .modify(|p: &mut Pod| {
        // The decision reads labels, owners and status only.
        p.managed_fields_mut().clear();
        p.spec = None;
    })
    .reflect(pods_writer)
    .inspect(move |e| {
        if let Ok(e) = e {
            pod_index.apply(e);
        }
    })
    .touched_objects();
    let (profiles, profiles_writer) = reflector::store();
    let profile_stream = watcher(
        api::<HermesProfile>(&client, ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|p: &mut HermesProfile| p.managed_fields_mut().clear())
    .reflect(profiles_writer)
    .touched_objects();
    let (network_policies, np_writer) = reflector::store();
    let np_stream = watcher(api::<NetworkPolicy>(&client, ns), owned.clone())
        .default_backoff()
        .modify(|n: &mut NetworkPolicy| n.managed_fields_mut().clear())
        .reflect(np_writer)
        .touched_objects();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let caches = observe::Caches {
        profiles,
        jobs,
        jobs_by_task,
        pods,
        pods_by_task,
        config_maps,
        claims,
        network_policies,
        cluster,
        ready,
    };
    let first_lists = tokio::spawn(observe::announce_ready(
        caches.clone(),
        ready_tx,
        std::time::Instant::now(),
    ));
    let ctx = Arc::new(Context::new(
        client.clone(),
        instance,
        metrics,
        store.clone(),
        ledger,
        caches,
        gateway,
    ));
    controller
        .reconcile_on(wake_rx)
        .owns_stream(job_stream)
        .owns_stream(cm_stream)
        .owns_stream(claim_stream)
        .owns_stream(np_stream)
        .watches_stream(pod_stream, |pod: Pod| {
            let ns = pod.namespace()?;
            let name = pod.annotations().get(ANNOTATION_TASK_NAME)?.clone();
            Some(ObjectRef::<HermesTask>::new(&name).within(&ns))
        })
        .watches_stream(profile_stream, move |profile: HermesProfile| {
            let ns = profile.namespace();
            let name = profile.name_any();
            store
                .state()
                .into_iter()
                .filter(|t| t.namespace() == ns && t.spec.profile.0 == name)
                .map(|t| ObjectRef::from(t.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // A wake for a task deleted meanwhile (its children's
                // watch events and the gateway's counts outlive it).
                Err(e @ kube::runtime::controller::Error::ObjectNotFound(_)) => {
                    tracing::debug!(error = %e, "woken for a task no longer there");
                }
                Err(e) => warn!(error = %e, "controller stream error"),
                Ok(_) => {}
            }
        })
        .await;
    scheduler.abort();
    first_lists.abort();
}

#[cfg(test)]
mod tests {
    use super::Recent;

    #[test]
    fn a_job_applied_is_known_before_the_cache_shows_it() {
        use hermes_crds::{HermesTask, RunPhase};
        let mut task: HermesTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
            "metadata": {"name": "t", "namespace": "n", "uid": "u-1"},
            "spec": {"repo": {"url": "https://git.example/r.git", "baseRef": "main"},
                     "task": "x", "scope": ["**"], "profile": "p"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let recent = Recent::default();
        assert!(!recent.applied_lately(&task, RunPhase::Prepare, 1));
        recent.applied_job(&task, RunPhase::Prepare, 1);
        // What a failed status write after the Job leaves: the phase started.
        assert!(recent.applied_lately(&task, RunPhase::Prepare, 1));
        assert!(!recent.applied_lately(&task, RunPhase::Prepare, 2));
        assert!(!recent.applied_lately(&task, RunPhase::Publish, 1));
        task.metadata.uid = Some("u-2".into());
        assert!(!recent.applied_lately(&task, RunPhase::Prepare, 1));
    }

    #[test]
    fn a_shared_write_is_made_once_while_the_cache_may_not_show_it() {
        let recent = Recent::default();
        let key = "ns/hermes-egress-abc";
        assert!(!recent.written_lately(key, "v1"), "not written yet");
        recent.wrote(key.into(), "v1".into());
        assert!(recent.written_lately(key, "v1"), "written: skip");
        // Another body is another write (a profile changed its egress).
        assert!(!recent.written_lately(key, "v2"));
        recent.wrote(key.into(), "v2".into());
        assert!(recent.written_lately(key, "v2"));
        // Other keys are their own.
        assert!(!recent.written_lately("ns/other", "v2"));
    }
}
