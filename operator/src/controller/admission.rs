//! Admission: which waiting task of a profile may start now.
//!
//! Caps hold per profile (a namespace and a profile name):
//! - `maxRunning` counts tasks that are preparing, implementing, reviewing or
//!   publishing. A task beyond it waits in `Queued`; an approved task waiting
//!   for a person's approval waits in `AwaitingApproval` for a slot to publish.
//! - `maxAwaitingReview` counts tasks in `AwaitingApproval`. While it is full
//!   no new task starts. A running task under manual review holds a place
//!   too, since it may end up waiting for a person: so the cap holds at every
//!   moment, not only when tasks start.
//!
//! Order: approved tasks waiting to publish first (their work is done), then
//! the queue: higher `priority` first, then older, then by name. The order is
//! strict: a task never starts while one ahead of it is still waiting.
//!
//! `dependsOn`: a task joins the queue only once every dependency has
//! `Succeeded` with its merge pushed (so the base it clones contains them);
//! a dependency that ends otherwise fails it, and so does a cycle.
//!
//! Reconciles of different tasks run concurrently and the task cache sees a
//! status write a moment after it is made, so the [`Ledger`] remembers the
//! slots this process granted until the cache shows them taken: two
//! reconciles never give away the same slot.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use hermes_crds::profile::Concurrency;
use hermes_crds::task::{ANNOTATION_APPROVE, ANNOTATION_CANCEL, PublishMode, ReviewMode};
use hermes_crds::{HermesTask, TaskPhase};
use kube::ResourceExt;

use super::conditions::{self, reasons, types};

/// What a task asks of admission.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// To start: it has no Job yet.
    Start,
    /// To publish after a person approved it.
    Resume,
}

/// The answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Admission {
    /// The task may go on (it holds a slot, or needs none).
    #[default]
    Granted,
    /// The task waits: the `Scheduled` condition's reason and message.
    Waiting {
        /// The condition reason.
        reason: &'static str,
        /// Why, in words that stay the same while the reason does.
        message: String,
    },
    /// The task can never start: a dependency failed, or dependsOn cycles.
    Blocked {
        /// The condition reason.
        reason: &'static str,
        /// Why.
        message: String,
    },
}

impl Admission {
    fn waiting(reason: &'static str, message: impl Into<String>) -> Self {
        Self::Waiting {
            reason,
            message: message.into(),
        }
    }
}

fn phase(t: &HermesTask) -> Option<TaskPhase> {
    t.status.as_ref().and_then(|s| s.phase)
}

fn annotation<'a>(t: &'a HermesTask, key: &str) -> Option<&'a str> {
    t.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(|s| s.trim())
}

/// Whether a person approved the reviewed commit (annotation or recorded).
fn approved(t: &HermesTask) -> bool {
    let Some(status) = t.status.as_ref() else {
        return false;
    };
    let recorded = conditions::get(&status.conditions, types::APPROVED)
        .is_some_and(|c| c.status == "True" && c.reason == reasons::PERSON_APPROVED);
    let annotated = status
        .review
        .as_ref()
        .is_some_and(|r| annotation(t, ANNOTATION_APPROVE) == Some(r.reviewed_commit.as_str()));
    recorded || annotated
}

/// What `task` asks of admission, given whether it has Jobs already.
pub fn request(task: &HermesTask, has_jobs: bool) -> Option<Request> {
    if annotation(task, ANNOTATION_CANCEL).is_some() {
        return None;
    }
    match phase(task) {
        None | Some(TaskPhase::Pending | TaskPhase::Queued) if !has_jobs => Some(Request::Start),
        Some(TaskPhase::AwaitingApproval) if approved(task) => Some(Request::Resume),
        _ => None,
    }
}

/// The queue key: higher priority first, then older, then by name.
fn order_key(t: &HermesTask) -> (i32, Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        -t.spec.priority,
        t.metadata.creation_timestamp.as_ref().map(|c| c.0),
        t.name_any(),
    )
}

/// The tasks of a namespace by name.
type ByName<'a> = BTreeMap<&'a str, &'a HermesTask>;

fn by_name(peers: &[Arc<HermesTask>]) -> ByName<'_> {
    peers
        .iter()
        .filter_map(|t| Some((t.metadata.name.as_deref()?, t.as_ref())))
        .collect()
}

/// Where a dependency stands.
enum Deps {
    Satisfied,
    Waiting(String),
    Blocked(&'static str, String),
}

/// The dependencies of `task`, against the other tasks of its namespace.
fn dependencies(task: &HermesTask, by_name: &ByName<'_>) -> Deps {
    if let Some(cycle) = find_cycle(task, by_name) {
        return Deps::Blocked(
            reasons::DEPENDENCY_CYCLE,
            format!("dependsOn forms a cycle: {}", cycle.join(" → ")),
        );
    }
    let mut waiting = Vec::new();
    for dep in &task.spec.depends_on {
        let Some(d) = by_name.get(dep.0.as_str()) else {
            waiting.push(format!("{} (does not exist)", dep.0));
            continue;
        };
        match phase(d) {
            Some(TaskPhase::Succeeded) => {
                let unpushed = d.spec.publish.mode == PublishMode::Merge
                    && !d
                        .status
                        .as_ref()
                        .and_then(|s| s.publish.as_ref())
                        .is_some_and(|p| p.pushed);
                if unpushed {
                    waiting.push(format!(
                        "{} (succeeded, but its merge is not on the remote: retry-publish it)",
                        dep.0
                    ));
                }
            }
            Some(p @ (TaskPhase::Failed | TaskPhase::Rejected | TaskPhase::Cancelled)) => {
                return Deps::Blocked(
                    reasons::DEPENDENCY_FAILED,
                    format!("dependency {} ended {p:?}", dep.0),
                );
            }
            _ => waiting.push(dep.0.clone()),
        }
    }
    if waiting.is_empty() {
        Deps::Satisfied
    } else {
        Deps::Waiting(format!(
            "waiting for dependencies to succeed: {}",
            waiting.join(", ")
        ))
    }
}

/// A path from `task` back to itself through dependsOn, if any.
fn find_cycle(task: &HermesTask, by_name: &ByName<'_>) -> Option<Vec<String>> {
    let me = task.name_any();
    // Depth-first over names, remembering the path; each name once.
    let mut seen = BTreeSet::new();
    let mut stack: Vec<(String, Vec<String>)> = task
        .spec
        .depends_on
        .iter()
        .map(|d| (d.0.clone(), vec![me.clone(), d.0.clone()]))
        .collect();
    while let Some((name, path)) = stack.pop() {
        if name == me {
            return Some(path);
        }
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(t) = by_name.get(name.as_str()) {
            for d in &t.spec.depends_on {
                let mut next = path.clone();
                next.push(d.0.clone());
                stack.push((d.0.clone(), next));
            }
        }
    }
    None
}

/// How a task of the profile stands, for counting.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Standing {
    Running {
        manual: bool,
    },
    Awaiting,
    /// Approved, waiting for a slot to publish (also counts as awaiting).
    Resume,
    /// Queued with its dependencies met.
    Queued {
        manual: bool,
    },
    Other,
}

fn standing(t: &HermesTask, granted: bool, by_name: &ByName<'_>) -> Standing {
    let manual = t.spec.review.mode == ReviewMode::Manual;
    if granted {
        return Standing::Running { manual };
    }
    match phase(t) {
        Some(
            TaskPhase::Preparing
            | TaskPhase::Implementing
            | TaskPhase::Reviewing
            | TaskPhase::Publishing,
        ) => Standing::Running { manual },
        Some(TaskPhase::AwaitingApproval) if approved(t) => Standing::Resume,
        Some(TaskPhase::AwaitingApproval) => Standing::Awaiting,
        // Waiting, or not looked at yet (and not held back by a problem of
        // its own, a missing task file): it is in the queue. A task that
        // waited for its profile is in it too: the profile exists now.
        None | Some(TaskPhase::Pending | TaskPhase::Queued)
            if annotation(t, ANNOTATION_CANCEL).is_none()
                && !t.status.as_ref().is_some_and(|s| {
                    conditions::get(&s.conditions, types::ADMITTED).is_some_and(|c| {
                        c.status == "False" && c.reason == reasons::TASK_FILE_NOT_FOUND
                    })
                })
                && matches!(dependencies(t, by_name), Deps::Satisfied) =>
        {
            Standing::Queued { manual }
        }
        _ => Standing::Other,
    }
}

fn waiting(phase: Option<TaskPhase>) -> bool {
    matches!(phase, None | Some(TaskPhase::Pending | TaskPhase::Queued))
}

/// A task waiting for a place.
struct Candidate<'a> {
    /// Approved, waiting to publish (ahead of the queue).
    resume: bool,
    /// Under manual review (holds a review place while it runs).
    manual: bool,
    task: &'a HermesTask,
    /// The task as the cache holds it (absent for the task being assessed).
    peer: Option<&'a Arc<HermesTask>>,
}

/// A profile's places as they stand and the tasks waiting for one.
struct Line<'a> {
    running: usize,
    running_manual: usize,
    awaiting: usize,
    candidates: Vec<Candidate<'a>>,
}

impl<'a> Line<'a> {
    /// Counts the places `peers` of `profile` hold (`granted`: task uids
    /// holding a place the cache does not show yet) and lines up those
    /// waiting, leaving out the task with uid `skip`.
    fn of(
        profile: &str,
        peers: &'a [Arc<HermesTask>],
        granted: &HashSet<String>,
        by_name: &ByName<'a>,
        skip: Option<&str>,
    ) -> Self {
        let mut line = Line {
            running: 0,
            running_manual: 0,
            awaiting: 0,
            candidates: Vec::new(),
        };
        for t in peers.iter().filter(|t| t.spec.profile.0 == profile) {
            let uid = t.metadata.uid.as_deref().unwrap_or_default();
            if skip == Some(uid) {
                continue;
            }
            match standing(t, granted.contains(uid), by_name) {
                Standing::Running { manual } => {
                    line.running += 1;
                    line.running_manual += usize::from(manual);
                }
                Standing::Awaiting => line.awaiting += 1,
                Standing::Resume => {
                    line.awaiting += 1;
                    line.candidates.push(Candidate {
                        resume: true,
                        manual: false,
                        task: t,
                        peer: Some(t),
                    });
                }
                Standing::Queued { manual } => line.candidates.push(Candidate {
                    resume: false,
                    manual,
                    task: t,
                    peer: Some(t),
                }),
                Standing::Other => {}
            }
        }
        line
    }

    /// Admission order: approved tasks first, then the queue's order.
    fn sort(&mut self) {
        self.candidates
            .sort_by_key(|c| (!c.resume, order_key(c.task)));
    }

    /// Admits from the front, as if every task ahead started now: how many
    /// candidates get a place, and why the next one does not.
    fn admit_front(&self, profile: &str, caps: &Concurrency) -> (usize, Admission) {
        let max_running = usize::try_from(caps.max_running.max(1)).unwrap_or(1);
        let max_awaiting = usize::try_from(caps.max_awaiting_review.max(1)).unwrap_or(1);
        let (mut running, mut running_manual, mut awaiting) =
            (self.running, self.running_manual, self.awaiting);
        for (i, c) in self.candidates.iter().enumerate() {
            if running >= max_running {
                return (
                    i,
                    Admission::waiting(
                        reasons::MAX_RUNNING,
                        format!(
                            "profile {profile} allows {max_running} running task(s) (maxRunning); all are taken or promised to tasks ahead in the queue"
                        ),
                    ),
                );
            }
            if !c.resume
                && (awaiting >= max_awaiting
                    || (c.manual && awaiting + running_manual >= max_awaiting))
            {
                return (
                    i,
                    Admission::waiting(
                        reasons::MAX_AWAITING_REVIEW,
                        format!(
                            "profile {profile} allows {max_awaiting} task(s) awaiting review (maxAwaitingReview), counting running tasks under manual review; no new task starts until a person decides"
                        ),
                    ),
                );
            }
            running += 1;
            if c.resume {
                awaiting = awaiting.saturating_sub(1);
            } else if c.manual {
                running_manual += 1;
            }
        }
        (self.candidates.len(), Admission::Granted)
    }
}

/// Decides for `task` (asking `request`) against the tasks of its namespace
/// (`peers`, from the cache; `task` itself may be among them) and the slots
/// granted but not yet visible there (`granted`, task uids). Pure.
pub fn assess(
    task: &HermesTask,
    request: Request,
    profile: &str,
    caps: &Concurrency,
    peers: &[Arc<HermesTask>],
    granted: &HashSet<String>,
) -> Admission {
    let my_uid = task.uid().unwrap_or_default();
    let by_name = by_name(peers);
    if request == Request::Start {
        match dependencies(task, &by_name) {
            Deps::Satisfied => {}
            Deps::Waiting(why) => {
                return Admission::waiting(reasons::WAITING_FOR_DEPENDENCIES, why);
            }
            Deps::Blocked(reason, message) => return Admission::Blocked { reason, message },
        }
    }
    let mut line = Line::of(profile, peers, granted, &by_name, Some(&my_uid));
    if request == Request::Resume {
        // This task's own place in AwaitingApproval.
        line.awaiting += 1;
    }
    line.candidates.push(Candidate {
        resume: request == Request::Resume,
        manual: task.spec.review.mode == ReviewMode::Manual,
        task,
        peer: None,
    });
    line.sort();
    let (admitted, why) = line.admit_front(profile, caps);
    let mine = line
        .candidates
        .iter()
        .position(|c| std::ptr::eq(c.task, task))
        .unwrap_or(usize::MAX);
    if mine < admitted {
        Admission::Granted
    } else {
        why
    }
}

/// The tasks of `namespace` that depend on `name` and have not ended.
pub fn dependents(namespace: &str, name: &str, peers: &[Arc<HermesTask>]) -> Vec<Arc<HermesTask>> {
    peers
        .iter()
        .filter(|t| t.namespace().as_deref() == Some(namespace))
        .filter(|t| t.spec.depends_on.iter().any(|d| d.0 == name))
        .filter(|t| !phase(t).is_some_and(TaskPhase::is_terminal))
        .cloned()
        .collect()
}

/// The slots this process granted that the task cache does not show yet,
/// and the caps each profile had when a task of it was last assessed.
#[derive(Default)]
pub struct Ledger {
    inner: Mutex<LedgerState>,
}

type ProfileKey = (String, String);

#[derive(Default)]
struct LedgerState {
    granted: HashMap<ProfileKey, HashMap<String, Request>>,
    caps: HashMap<ProfileKey, Concurrency>,
}

impl LedgerState {
    /// The grants of a profile still ahead of the cache, forgetting those the
    /// cache now shows taken (or whose task is gone).
    fn granted(
        &mut self,
        key: &ProfileKey,
        peers: &[Arc<HermesTask>],
    ) -> &mut HashMap<String, Request> {
        let granted = self.granted.entry(key.clone()).or_default();
        granted.retain(|g, asked| {
            peers
                .iter()
                .find(|t| t.uid().as_deref() == Some(g.as_str()))
                .is_some_and(|t| match asked {
                    Request::Start => waiting(phase(t)),
                    Request::Resume => phase(t) == Some(TaskPhase::AwaitingApproval),
                })
        });
        granted
    }
}

fn key_of(task: &HermesTask) -> ProfileKey {
    (
        task.namespace().unwrap_or_default(),
        task.spec.profile.0.clone(),
    )
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Assesses `task` under the lock and, when granted, remembers the slot.
    /// `peers` reads the tasks of its namespace from the cache, and is called
    /// under the lock: a snapshot read before it could be older than one a
    /// concurrent call already forgot a grant by (the cache showing that
    /// task started), and would then count that task nowhere: one place too
    /// many (CI's batch test saw 51 running under `maxRunning` 50).
    pub fn admit(
        &self,
        task: &HermesTask,
        request: Request,
        caps: &Concurrency,
        peers: impl FnOnce() -> Vec<Arc<HermesTask>>,
    ) -> Admission {
        let key = key_of(task);
        let uid = task.uid().unwrap_or_default();
        let mut state = self.lock();
        let peers = peers();
        let peers = peers.as_slice();
        state.caps.insert(key.clone(), caps.clone());
        let granted = state.granted(&key, peers);
        let uids: HashSet<String> = granted.keys().cloned().collect();
        let answer = assess(task, request, &key.1, caps, peers, &uids);
        if answer == Admission::Granted && !uid.is_empty() {
            granted.insert(uid, request);
        }
        answer
    }

    /// Gives back a slot granted to a task that did not start after all.
    pub fn release(&self, task: &HermesTask) {
        let uid = task.uid().unwrap_or_default();
        if let Some(g) = self.lock().granted.get_mut(&key_of(task)) {
            g.remove(&uid);
        }
    }

    /// The waiting tasks of a profile that would be granted a place if they
    /// asked now, in queue order: the ones to wake. Without known caps (no
    /// task of the profile assessed yet), the head of the queue only.
    /// `peers` is read under the lock, as for [`Ledger::admit`].
    pub fn heads(
        &self,
        namespace: &str,
        profile: &str,
        peers: impl FnOnce() -> Vec<Arc<HermesTask>>,
    ) -> Vec<Arc<HermesTask>> {
        let key = (namespace.to_owned(), profile.to_owned());
        let mut state = self.lock();
        let peers = peers();
        let peers = peers.as_slice();
        let caps = state.caps.get(&key).cloned();
        let uids: HashSet<String> = state.granted(&key, peers).keys().cloned().collect();
        // One line for the whole profile: every waiting task that would be
        // granted if it asked now is a prefix of it (each one's own
        // assessment walks the same line).
        let by_name = by_name(peers);
        let mut line = Line::of(profile, peers, &uids, &by_name, None);
        line.sort();
        let admitted = match caps {
            Some(caps) => line.admit_front(profile, &caps).0,
            None => 1,
        };
        line.candidates
            .iter()
            .take(admitted)
            .filter_map(|c| c.peer.cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests;
