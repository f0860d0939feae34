//! Batches under caps, on Tier A, with the operator as a real process and
//! the kubelet played by the test: a thousand tasks of one profile (mixed
//! priorities, some under manual review and approved by a person as they
//! come, some rejected, chains of dependencies, a dependency that fails, a
//! cycle). A watch on the tasks checks, at every event it sees, that the
//! profile's caps hold and that no task starts while a task ahead of it in
//! the queue waits with no place left for it; at the end every task is
//! terminal with the outcome its kind asks for.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hermes_crds::task::ANNOTATION_APPROVE;
use hermes_crds::{HermesTask, TaskPhase};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use support::kubelet::Kubelet;
use support::*;

const MAX_RUNNING: usize = 50;
const MAX_AWAITING: usize = 10;

/// What a task of the batch is, and so how it must end.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// Auto review, approved, merged.
    Plain,
    /// Manual review; the test approves it once it awaits approval.
    Manual,
    /// The reviewer rejects it.
    Rejected,
    /// Depends on other tasks that succeed: succeeds, after them.
    After(Vec<String>),
    /// Depends on a rejected task: fails with DependencyFailed.
    AfterRejected(String),
    /// Part of a dependsOn cycle: fails with DependencyCycle.
    Cycle(String),
}

fn plan(n: usize) -> Vec<(String, Kind, i32)> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let priority = [0, -1, 5][(i * 7919) % 3];
        let (name, kind) = match i {
            _ if i % 50 == 7 => (format!("reject-{i:04}"), Kind::Rejected),
            _ if i % 10 == 3 => (format!("t-{i:04}"), Kind::Manual),
            _ if i % 100 == 41 => (
                format!("t-{i:04}"),
                Kind::After(vec![format!("t-{:04}", i - 1), format!("t-{:04}", i - 2)]),
            ),
            _ if i % 100 == 58 => (
                format!("t-{i:04}"),
                Kind::AfterRejected(format!("reject-{:04}", i - 51)),
            ),
            _ if i % 250 == 100 => (format!("t-{i:04}"), Kind::Cycle(format!("t-{:04}", i + 1))),
            _ if i % 250 == 101 => (format!("t-{i:04}"), Kind::Cycle(format!("t-{:04}", i - 1))),
            _ => (format!("t-{i:04}"), Kind::Plain),
        };
        out.push((name, kind, priority));
    }
    out
}

fn spec(kind: &Kind, priority: i32) -> serde_json::Value {
    let mut s = json!({"priority": priority});
    match kind {
        Kind::Manual => s["review"] = json!({"mode": "manual"}),
        Kind::After(deps) => s["dependsOn"] = json!(deps),
        Kind::AfterRejected(dep) | Kind::Cycle(dep) => s["dependsOn"] = json!([dep]),
        Kind::Plain | Kind::Rejected => {}
    }
    s
}

fn phase(t: &HermesTask) -> Option<TaskPhase> {
    t.status.as_ref().and_then(|s| s.phase)
}

fn running(p: Option<TaskPhase>) -> bool {
    matches!(
        p,
        Some(
            TaskPhase::Preparing
                | TaskPhase::Implementing
                | TaskPhase::Reviewing
                | TaskPhase::Publishing
        )
    )
}

fn waiting(p: Option<TaskPhase>) -> bool {
    matches!(p, None | Some(TaskPhase::Pending | TaskPhase::Queued))
}

/// What the watch saw of one task.
#[derive(Clone)]
struct Seen {
    phase: Option<TaskPhase>,
    key: (i32, String, String),
    has_deps: bool,
}

/// What the watch found over the whole run.
#[derive(Default)]
struct Findings {
    max_running: usize,
    max_awaiting: usize,
    starts: Vec<String>,
    violations: Vec<String>,
    succeeded_at: HashMap<String, usize>,
    started_at: HashMap<String, usize>,
    events: usize,
    /// Every task's phase as last seen (the test polls this, not the API).
    phases: HashMap<String, Option<TaskPhase>>,
}

impl Findings {
    fn count(&self, pred: impl Fn(Option<TaskPhase>) -> bool) -> usize {
        self.phases.values().filter(|p| pred(**p)).count()
    }
}

/// Follows every task event in order and checks the caps and the order.
fn observe(tasks: Api<HermesTask>, findings: Arc<Mutex<Findings>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
        let mut stream = watcher(tasks, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(t)) = stream.next().await {
            let name = t.name_any();
            let new = phase(&t);
            let old = seen.get(&name).and_then(|s| s.phase);
            let key = (
                -t.spec.priority,
                t.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|c| c.0.to_string())
                    .unwrap_or_default(),
                name.clone(),
            );
            seen.insert(
                name.clone(),
                Seen {
                    phase: new,
                    key: key.clone(),
                    has_deps: !t.spec.depends_on.is_empty(),
                },
            );
            let mut f = findings.lock().expect("findings");
            f.phases.insert(name.clone(), new);
            f.events += 1;
            let event = f.events;
            let n_running = seen.values().filter(|s| running(s.phase)).count();
            let n_awaiting = seen
                .values()
                .filter(|s| s.phase == Some(TaskPhase::AwaitingApproval))
                .count();
            f.max_running = f.max_running.max(n_running);
            f.max_awaiting = f.max_awaiting.max(n_awaiting);
            if n_running > MAX_RUNNING {
                f.violations.push(format!(
                    "{n_running} running at event {event} ({name} → {new:?})"
                ));
            }
            if n_awaiting > MAX_AWAITING {
                f.violations.push(format!(
                    "{n_awaiting} awaiting review at event {event} ({name} → {new:?})"
                ));
            }
            if new == Some(TaskPhase::Succeeded) {
                let at = f.events;
                f.succeeded_at.entry(name.clone()).or_insert(at);
            }
            if waiting(old) && running(new) {
                let at = f.events;
                f.started_at.insert(name.clone(), at);
                f.starts.push(name.clone());
                // Strict order: a task ahead that still waits must have a place left.
                let me = &seen[&name];
                if !me.has_deps && n_running >= MAX_RUNNING {
                    let ahead: Vec<&String> = seen
                        .iter()
                        .filter(|(_, s)| waiting(s.phase) && !s.has_deps && s.key < me.key)
                        .map(|(n, _)| n)
                        .collect();
                    if !ahead.is_empty() {
                        f.violations.push(format!(
                            "{name} started as the last place went while {} task(s) ahead still waited (first: {})",
                            ahead.len(),
                            ahead[0]
                        ));
                    }
                }
            }
        }
    })
}

/// Plays the person: approves each manual task's reviewed commit once it awaits.
fn approve_as_they_come(tasks: Api<HermesTask>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let stream = watcher(tasks.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects();
        stream
            .try_filter(|t| futures::future::ready(phase(t) == Some(TaskPhase::AwaitingApproval)))
            .for_each_concurrent(8, |t| {
                let tasks = tasks.clone();
                async move {
                    let Ok(t) = t else { return };
                    let Some(commit) = t
                        .status
                        .as_ref()
                        .and_then(|s| s.review.as_ref())
                        .map(|r| r.reviewed_commit.clone())
                    else {
                        return;
                    };
                    if t.annotations().get(ANNOTATION_APPROVE) == Some(&commit) {
                        return;
                    }
                    // A person takes a moment; the review places fill meanwhile.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = tasks
                        .patch(
                            &t.name_any(),
                            &PatchParams::default(),
                            &Patch::Merge(
                                &json!({"metadata": {"annotations": {ANNOTATION_APPROVE: commit}}}),
                            ),
                        )
                        .await;
                }
            })
            .await;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_tasks_keep_their_caps_and_order_and_all_end() {
    let Some(w) = World::new("batch").await else {
        return;
    };
    let _operator = Operator::start(&w.cluster, &w.ns.name);
    let plan = plan(1000);

    // The test follows the tasks through one watch (polling lists of a
    // thousand tasks would load the API server the batch runs on).
    let findings = Arc::new(Mutex::new(Findings::default()));
    let observer = observe(w.tasks.clone(), findings.clone());
    // Every task first, without its profile: they wait as Pending, so when
    // the profile comes the operator knows them all and the order is whole.
    futures::stream::iter(plan.iter())
        .for_each_concurrent(16, |(name, kind, priority)| {
            let w = &w;
            async move { w.create_task(name, spec(kind, *priority)).await }
        })
        .await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let pending = findings
            .lock()
            .expect("findings")
            .count(|p| p == Some(TaskPhase::Pending));
        if pending == plan.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {pending} of {} tasks reached Pending",
            plan.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let approver = approve_as_they_come(w.tasks.clone());
    let kubelet = Kubelet::start(w.cluster.client.clone(), &w.ns.name, 32);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    w.create_profile(
        json!({"concurrency": {"maxRunning": MAX_RUNNING, "maxAwaitingReview": MAX_AWAITING}}),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(1500);
    loop {
        let (done, by_phase) = {
            let f = findings.lock().expect("findings");
            let mut by_phase: BTreeMap<String, usize> = BTreeMap::new();
            for p in f.phases.values() {
                *by_phase.entry(format!("{p:?}")).or_default() += 1;
            }
            (f.count(|p| p.is_some_and(TaskPhase::is_terminal)), by_phase)
        };
        if done == plan.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {} tasks ended in time: {by_phase:?}",
            plan.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let last = w
        .tasks
        .list(&ListParams::default())
        .await
        .expect("list tasks")
        .items;
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    observer.abort();
    approver.abort();
    let pods = kubelet.finished();
    drop(kubelet);

    let by_name: HashMap<String, &HermesTask> = last.iter().map(|t| (t.name_any(), t)).collect();
    let f = findings.lock().expect("findings");
    eprintln!(
        "batch: {} tasks ended in {:.1} s ({:.0}/min), {pods} pods, {} task events; max running {}, max awaiting review {}",
        plan.len(),
        elapsed.as_secs_f64(),
        plan.len() as f64 / elapsed.as_secs_f64() * 60.0,
        f.events,
        f.max_running,
        f.max_awaiting
    );
    assert!(
        f.violations.is_empty(),
        "{} violation(s): {:#?}",
        f.violations.len(),
        &f.violations[..f.violations.len().min(10)]
    );
    // The caps were reached, so the checks above had something to check.
    assert_eq!(
        f.max_running, MAX_RUNNING,
        "the batch never filled maxRunning"
    );
    assert!(
        f.max_awaiting >= 2,
        "manual reviews never queued up ({})",
        f.max_awaiting
    );

    for (name, kind, _) in &plan {
        let t = by_name[name];
        let ready = condition(t, "Ready")
            .map(|c| c.reason.clone())
            .unwrap_or_default();
        let got = (phase(t), ready.as_str());
        let why = condition(t, "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        match kind {
            Kind::Plain | Kind::Manual => {
                assert_eq!(
                    got,
                    (Some(TaskPhase::Succeeded), "Succeeded"),
                    "{name}: {why}"
                )
            }
            Kind::Rejected => assert_eq!(got.0, Some(TaskPhase::Rejected), "{name}: {why}"),
            Kind::After(deps) => {
                assert_eq!(
                    got,
                    (Some(TaskPhase::Succeeded), "Succeeded"),
                    "{name}: {why}"
                );
                for d in deps {
                    assert!(
                        f.succeeded_at[d] < f.started_at[name],
                        "{name} started before its dependency {d} succeeded"
                    );
                }
            }
            Kind::AfterRejected(dep) => {
                assert_eq!(got, (Some(TaskPhase::Failed), "DependencyFailed"), "{name}");
                let msg = condition(t, "Ready")
                    .map(|c| c.message.clone())
                    .unwrap_or_default();
                assert!(
                    msg.contains(dep.as_str()) && msg.contains("Rejected"),
                    "{name}: {msg}"
                );
                assert!(!f.started_at.contains_key(name), "{name} ran");
            }
            Kind::Cycle(_) => {
                assert_eq!(got, (Some(TaskPhase::Failed), "DependencyCycle"), "{name}");
                assert!(!f.started_at.contains_key(name), "{name} ran");
            }
        }
    }
}
