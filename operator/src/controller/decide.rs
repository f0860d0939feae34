//! The decision: from the task, its status (the facts already recorded) and
//! what exists in the cluster, the next status and the actions to take. Pure:
//! no API calls, no clock (the time is an input), so every path is unit-tested
//! and a reconcile can be replayed.

use std::collections::BTreeMap;
use std::time::Duration;

use hermes_crds::gateway::{Figures, Limits, meters_total};
use hermes_crds::profile::HermesProfileSpec;
use hermes_crds::task::{
    ANNOTATION_APPROVE, ANNOTATION_CANCEL, ANNOTATION_REJECT, ANNOTATION_RETRY_PUBLISH,
    DiffSummary, Finding, FindingSource, HermesTaskStatus, PhaseImage, PublishMode, PublishOutcome,
    ReviewMode, ReviewOutcome, Severity, Usage, UsageFigures, UsageMeter, UsageSource, Verdict,
};
use hermes_crds::{HermesTask, RunPhase, TaskPhase};
use hermes_results::{StepResult, decode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::admission::Admission;
use super::conditions::{self, reasons, types};
use crate::narrowing::{self, Effective};

/// The task file, as the operator could resolve it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskText {
    /// The text (inline, from the referenced ConfigMap, or from the task's own copy).
    Ready(String),
    /// The referenced ConfigMap or key does not exist (yet).
    Missing(String),
    /// The task file lives in the repository; prepare reads it.
    InRepo,
}

/// What a phase Job's pod shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Not finished.
    Running,
    /// Finished well; the termination messages of the main container and, in
    /// review, of the `context` init container.
    Succeeded {
        /// The main container's termination message.
        main: Option<String>,
        /// The `context` init container's termination message (review only).
        context: Option<String>,
    },
    /// Killed at its deadline.
    TimedOut,
    /// A step failed; the failing container's termination message, if any.
    Failed {
        /// The termination message.
        message: Option<String>,
        /// How the container ended, when it wrote nothing (e.g. OOMKilled).
        why: String,
    },
    /// Ended by its own use of a resource at the limit the pod sets: a
    /// container OOM-killed, or the pod evicted for its ephemeral storage (a
    /// container's limit, an emptyDir's size, the pod's total). The task's
    /// doing, so never retried.
    Exhausted {
        /// Which resource: `memory` or `ephemeral-storage`.
        resource: &'static str,
        /// What the node said.
        why: String,
        /// Whether the pod was still in its course when it was seen: an init
        /// container OOM-killed whose exit code was 0 leaves the pod Pending
        /// (the kubelet starts no next container and fails nothing), so the
        /// Job must be deleted, or it holds the node until its deadline.
        running: bool,
    },
    /// Lost to the infrastructure (evicted, node lost, image missing, pod deleted).
    Lost {
        /// What happened.
        why: String,
    },
}

/// One phase Job, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobView {
    /// The Job's name.
    pub name: String,
    /// What its pod shows.
    pub state: JobState,
    /// The images its containers ran, with the digests the node resolved.
    pub images: Vec<PhaseImage>,
}

/// Everything the decision looks at besides the task.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The task's profile, if it exists.
    pub profile: Option<HermesProfileSpec>,
    /// The task file.
    pub task_text: Option<TaskText>,
    /// The task's Jobs by phase and attempt.
    pub jobs: BTreeMap<(RunPhase, u32), JobView>,
    /// Whether the repo volume's claim exists.
    pub repo_volume_exists: bool,
    /// What admission (the profile's caps, dependsOn) says, when the task
    /// asked to start or to publish after approval; `Granted` otherwise.
    pub admission: Admission,
    /// The gateway, when the operator has one: where it is and what its
    /// instances counted for this task.
    pub gateway: Option<GatewayView>,
}

/// The gateway as one reconcile sees it.
#[derive(Clone, Debug, Default)]
pub struct GatewayView {
    /// Where pods reach it, once its Service was read.
    pub endpoint: Option<crate::gateway::Endpoint>,
    /// What its instances counted for this task.
    pub usage: crate::gateway::TaskUsage,
}

/// An Event to publish on the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: &'static str,
    /// What happened.
    pub note: String,
}

/// What to do.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The status to write (skipped by the caller when unchanged).
    pub status: HermesTaskStatus,
    /// The profile, when it exists.
    pub profile: Option<HermesProfileSpec>,
    /// The effective settings, when the task fits its profile.
    pub effective: Option<Effective>,
    /// Where pods reach the gateway, for the builders.
    pub gateway: Option<crate::gateway::Endpoint>,
    /// Apply the task's ConfigMap, PVC and NetworkPolicies (idempotent).
    pub ensure_children: bool,
    /// The text of the task-file ConfigMap to apply, when it lives in the cluster.
    pub task_text: Option<String>,
    /// A Job to create (server-side apply: creating it twice is a no-op).
    pub create_job: Option<(RunPhase, u32)>,
    /// Jobs to delete (cancel, or a Job stuck on the infrastructure).
    pub delete_jobs: Vec<String>,
    /// Delete the repo volume.
    pub delete_volume: bool,
    /// Events to publish.
    pub events: Vec<PlannedEvent>,
    /// Look again after this long even without a change.
    pub requeue_after: Option<Duration>,
}

fn phase_of(p: RunPhase) -> TaskPhase {
    match p {
        RunPhase::Prepare => TaskPhase::Preparing,
        RunPhase::Implement => TaskPhase::Implementing,
        RunPhase::Review => TaskPhase::Reviewing,
        RunPhase::Publish => TaskPhase::Publishing,
    }
}

/// The Event reason for entering a phase.
fn phase_reason(p: TaskPhase) -> &'static str {
    match p {
        TaskPhase::Pending => "Pending",
        TaskPhase::Queued => "Queued",
        TaskPhase::Preparing => "Preparing",
        TaskPhase::Implementing => "Implementing",
        TaskPhase::Reviewing => "Reviewing",
        TaskPhase::AwaitingApproval => "AwaitingApproval",
        TaskPhase::Publishing => "Publishing",
        TaskPhase::Succeeded => "Succeeded",
        TaskPhase::Rejected => "Rejected",
        TaskPhase::Failed => "Failed",
        TaskPhase::Cancelled => "Cancelled",
    }
}

fn condition_of(p: RunPhase) -> &'static str {
    match p {
        RunPhase::Prepare => types::PREPARED,
        RunPhase::Implement => types::IMPLEMENTED,
        RunPhase::Review => types::REVIEWED,
        RunPhase::Publish => types::PUBLISHED,
    }
}

fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

/// What running a phase gave.
enum Stage {
    /// Still going (or just started); stop deciding for now.
    InProgress,
    /// The task ended (failed); stop.
    Ended,
    /// Done, with the main result and, in review, the context result.
    Done(Box<StepResult>, Option<Box<StepResult>>),
}

struct Decider<'a> {
    task: &'a HermesTask,
    obs: &'a Observed,
    now: &'a Time,
    generation: Option<i64>,
    old_phase: Option<TaskPhase>,
    plan: Plan,
}

/// The budget as the gateway enforces it.
pub fn limits(b: &narrowing::EffectiveBudget) -> Limits {
    Limits {
        tokens: b.tokens.and_then(|t| u64::try_from(t).ok()),
        cost_micros: b.cost_micros,
        turns: b.turns.and_then(|t| u64::try_from(t).ok()),
    }
}

/// Decides what to do for `task`.
pub fn decide(task: &HermesTask, obs: &Observed, now: &Time) -> Plan {
    let old = task.status.clone().unwrap_or_default();
    let mut d = Decider {
        task,
        obs,
        now,
        generation: task.metadata.generation,
        old_phase: old.phase,
        plan: Plan {
            status: old,
            ..Plan::default()
        },
    };
    d.plan.status.observed_generation = d.generation;
    d.run();
    d.finish();
    d.plan
}

impl Decider<'_> {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.task
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(|s| s.trim())
    }

    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: impl Into<String>) {
        conditions::set(
            &mut self.plan.status.conditions,
            type_,
            ok,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    fn event(&mut self, warning: bool, reason: &'static str, note: impl Into<String>) {
        self.plan.events.push(PlannedEvent {
            warning,
            reason,
            note: note.into(),
        });
    }

    fn end(&mut self, phase: TaskPhase, reason: &str, message: impl Into<String>) {
        let message = message.into();
        self.plan.status.phase = Some(phase);
        self.plan.status.completion_time = Some(self.now.clone());
        self.set(types::READY, phase == TaskPhase::Succeeded, reason, message);
    }

    fn fail(&mut self, phase: RunPhase, reason: &str, message: impl Into<String>) {
        let message = message.into();
        self.set(condition_of(phase), false, reason, message.clone());
        self.end(TaskPhase::Failed, reason, message);
    }

    fn finish(&mut self) {
        let new_phase = self.plan.status.phase;
        if new_phase != self.old_phase
            && let Some(p) = new_phase
        {
            if !p.is_terminal() {
                let message = format!("{p:?}");
                self.set(types::READY, false, reasons::RUNNING, message);
            }
            let from = self
                .old_phase
                .map_or_else(|| "new".to_owned(), |o| format!("{o:?}"));
            // The reason is the phase entered: Events with the same reason
            // on one object are folded into one series by the recorder. The
            // end is one Event too, saying why (a Warning unless it succeeded).
            let note = match conditions::get(&self.plan.status.conditions, types::READY) {
                Some(ready) if p.is_terminal() => format!("{from} → {p:?}: {}", ready.message),
                _ => format!("{from} → {p:?}"),
            };
            self.event(
                p.is_terminal() && p != TaskPhase::Succeeded,
                phase_reason(p),
                note,
            );
        }
        if self.plan.requeue_after.is_none()
            && !self.plan.status.phase.is_some_and(TaskPhase::is_terminal)
        {
            // A safety net only: progress is driven by watch events.
            self.plan.requeue_after = Some(Duration::from_secs(300));
        }
    }

    fn run(&mut self) {
        let status_phase = self.plan.status.phase;
        if status_phase.is_some_and(TaskPhase::is_terminal) && !self.retry_publish() {
            self.after_end();
            return;
        }
        if self.annotation(ANNOTATION_CANCEL).is_some() {
            self.cancel();
            return;
        }
        let Some(profile) = self.obs.profile.as_ref() else {
            let name = self.task.spec.profile.0.clone();
            self.set(
                types::ADMITTED,
                false,
                reasons::PROFILE_NOT_FOUND,
                format!(
                    "HermesProfile {name:?} does not exist in this namespace; the task waits for it"
                ),
            );
            if self.plan.status.phase.is_none() {
                self.plan.status.phase = Some(TaskPhase::Pending);
            }
            return;
        };
        let effective = match narrowing::effective(&self.task.spec, profile) {
            Ok(e) => e,
            Err(v) => {
                let message = format!("the task asks for more than its profile allows: {v}");
                self.set(
                    types::ADMITTED,
                    false,
                    reasons::PROFILE_VIOLATION,
                    message.clone(),
                );
                self.end(TaskPhase::Failed, reasons::PROFILE_VIOLATION, message);
                return;
            }
        };
        match &self.obs.task_text {
            Some(TaskText::Ready(text)) => {
                self.plan.task_text = Some(text.clone());
                if self.plan.status.task_file_sha256.is_none() {
                    self.plan.status.task_file_sha256 =
                        Some(crate::builders::task_file_sha256(text));
                }
            }
            Some(TaskText::InRepo) => {}
            missing => {
                let why = match missing {
                    Some(TaskText::Missing(w)) => w.clone(),
                    _ => "the task file could not be resolved".to_owned(),
                };
                self.set(types::ADMITTED, false, reasons::TASK_FILE_NOT_FOUND, why);
                if self.plan.status.phase.is_none() {
                    self.plan.status.phase = Some(TaskPhase::Pending);
                }
                // Other people's ConfigMaps are not watched: look again soon.
                self.plan.requeue_after = Some(Duration::from_secs(5));
                return;
            }
        }
        if profile.model.is_some() {
            let Some(view) = self.obs.gateway.as_ref() else {
                let message = "the profile sends model requests through the Hermes gateway (spec.model), but this operator runs without one (install the chart with gateway.enabled=true)";
                self.set(
                    types::ADMITTED,
                    false,
                    reasons::GATEWAY_NOT_CONFIGURED,
                    message,
                );
                self.end(TaskPhase::Failed, reasons::GATEWAY_NOT_CONFIGURED, message);
                return;
            };
            let Some(endpoint) = view.endpoint.clone() else {
                self.set(
                    types::ADMITTED,
                    false,
                    reasons::GATEWAY_UNAVAILABLE,
                    "the Hermes gateway's Service could not be read yet; the task waits for it",
                );
                if self.plan.status.phase.is_none() {
                    self.plan.status.phase = Some(TaskPhase::Pending);
                }
                self.plan.requeue_after = Some(Duration::from_secs(5));
                return;
            };
            self.plan.gateway = Some(endpoint);
            self.record_gateway_usage(&view.usage);
        }
        self.set(
            types::ADMITTED,
            true,
            reasons::ADMITTED,
            "the task fits its profile",
        );
        self.plan.effective = Some(effective);
        self.plan.profile = Some(profile.clone());
        if self.obs.jobs.is_empty() && !self.admitted_to_start() {
            return;
        }
        if self.plan.status.start_time.is_none() {
            self.plan.status.start_time = Some(self.now.clone());
        }
        self.pipeline(profile);
    }

    /// Before the first Job: whether the task may start now under its
    /// profile's caps and its dependencies; if not, it waits in `Queued`
    /// (or fails, when a dependency failed or dependsOn cycles).
    fn admitted_to_start(&mut self) -> bool {
        match self.obs.admission.clone() {
            Admission::Granted => {
                let name = self.task.spec.profile.0.clone();
                self.set(
                    types::SCHEDULED,
                    true,
                    reasons::STARTED,
                    format!("started under profile {name}"),
                );
                true
            }
            Admission::Waiting { reason, message } => {
                self.set(types::SCHEDULED, false, reason, message);
                self.plan.status.phase = Some(TaskPhase::Queued);
                false
            }
            Admission::Blocked { reason, message } => {
                self.set(types::SCHEDULED, false, reason, message.clone());
                self.end(TaskPhase::Failed, reason, message);
                false
            }
        }
    }

    /// After a person approved: whether publish may start now under the
    /// profile's `maxRunning`; if not, the task stays in `AwaitingApproval`.
    fn admitted_to_publish(&mut self) -> bool {
        let publishing = self.obs.jobs.keys().any(|(p, _)| *p == RunPhase::Publish);
        if publishing || self.task.spec.review.mode != ReviewMode::Manual {
            return true;
        }
        match self.obs.admission.clone() {
            Admission::Granted => {
                if conditions::get(&self.plan.status.conditions, types::SCHEDULED)
                    .is_some_and(|c| c.status != "True")
                {
                    let name = self.task.spec.profile.0.clone();
                    self.set(
                        types::SCHEDULED,
                        true,
                        reasons::STARTED,
                        format!("publishing under profile {name}"),
                    );
                }
                true
            }
            Admission::Waiting { reason, message } | Admission::Blocked { reason, message } => {
                self.set(types::SCHEDULED, false, reason, message);
                self.plan.status.phase = Some(TaskPhase::AwaitingApproval);
                false
            }
        }
    }

    fn pipeline(&mut self, profile: &HermesProfileSpec) {
        let retries = u32::try_from(profile.infrastructure_retries.max(0)).unwrap_or(0);
        for phase in [RunPhase::Prepare, RunPhase::Implement, RunPhase::Review] {
            if conditions::is_true(&self.plan.status.conditions, condition_of(phase)) {
                continue;
            }
            match self.stage(phase, retries) {
                Stage::InProgress | Stage::Ended => return,
                Stage::Done(main, context) => {
                    if !self.record(phase, *main, context.map(|c| *c)) {
                        return;
                    }
                }
            }
        }
        if !self.decided_to_publish() || !self.admitted_to_publish() {
            return;
        }
        if self.task.spec.publish.mode == PublishMode::None {
            self.set(
                types::PUBLISHED,
                true,
                reasons::NOTHING_TO_PUBLISH,
                "publish: none; the change stays on the task branch in the volume",
            );
            self.end(
                TaskPhase::Succeeded,
                reasons::SUCCEEDED,
                "approved; nothing to publish",
            );
            return;
        }
        if conditions::is_true(&self.plan.status.conditions, types::PUBLISHED) {
            return;
        }
        if let Stage::Done(main, _) = self.stage(RunPhase::Publish, retries) {
            self.record(RunPhase::Publish, *main, None);
        }
    }

    /// The attempt of `phase` to look at: the recorded one while the task is
    /// in that phase, else the first.
    fn attempt(&self, phase: RunPhase) -> u32 {
        if self.plan.status.phase == Some(phase_of(phase)) {
            self.plan
                .status
                .attempt
                .and_then(|a| u32::try_from(a).ok())
                .unwrap_or(1)
                .max(1)
        } else {
            1
        }
    }

    fn start(&mut self, phase: RunPhase, attempt: u32) {
        self.plan.ensure_children = true;
        self.plan.create_job = Some((phase, attempt));
        self.plan.status.phase = Some(phase_of(phase));
        self.plan.status.attempt = i32::try_from(attempt).ok();
    }

    fn stage(&mut self, phase: RunPhase, retries: u32) -> Stage {
        let attempt = self.attempt(phase);
        let Some(job) = self.obs.jobs.get(&(phase, attempt)) else {
            self.start(phase, attempt);
            return Stage::InProgress;
        };
        self.record_images(phase, &job.images);
        if phase == RunPhase::Implement
            && !matches!(job.state, JobState::Running | JobState::Lost { .. })
            && let Some(message) = self.budget_spent()
        {
            self.fail(phase, reasons::BUDGET_EXCEEDED, message);
            return Stage::Ended;
        }
        match &job.state {
            JobState::Running => {
                self.plan.status.phase = Some(phase_of(phase));
                self.plan.status.attempt = i32::try_from(attempt).ok();
                Stage::InProgress
            }
            JobState::Lost { why } => {
                if attempt <= retries {
                    self.plan.delete_jobs.push(job.name.clone());
                    self.event(
                        true,
                        "InfrastructureRetry",
                        format!(
                            "{} attempt {attempt} lost ({why}); starting attempt {}",
                            phase.as_str(),
                            attempt + 1
                        ),
                    );
                    self.start(phase, attempt + 1);
                    Stage::InProgress
                } else {
                    self.fail(
                        phase,
                        reasons::INFRASTRUCTURE_RETRIES_EXHAUSTED,
                        format!(
                            "{} lost to the infrastructure {attempt} times; last: {why}",
                            phase.as_str()
                        ),
                    );
                    Stage::Ended
                }
            }
            JobState::Exhausted {
                resource,
                why,
                running,
            } => {
                if *running {
                    self.plan.delete_jobs.push(job.name.clone());
                }
                self.fail(
                    phase,
                    reasons::RESOURCE_EXHAUSTED,
                    format!(
                        "{} ran out of {resource} at its limit ({why}); not retried: the task's own use",
                        phase.as_str()
                    ),
                );
                Stage::Ended
            }
            JobState::TimedOut => {
                let limit = self
                    .plan
                    .effective
                    .as_ref()
                    .map(|e| e.timeout(phase).as_secs())
                    .unwrap_or_default();
                self.fail(
                    phase,
                    reasons::TIMEOUT,
                    format!("{} exceeded its time limit of {limit}s", phase.as_str()),
                );
                Stage::Ended
            }
            JobState::Failed { message, why } => {
                match message.as_deref().map(decode) {
                    Some(Ok(StepResult::Failed(f))) => {
                        let reason = failure_reason(f.reason);
                        self.fail(phase, reason, format!("{}: {}", phase.as_str(), f.message));
                    }
                    Some(Ok(_)) => self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        format!("{} failed but reported success", phase.as_str()),
                    ),
                    Some(Err(hermes_results::Error::Empty)) | None => self.fail(
                        phase,
                        reasons::STEP_FAILED,
                        format!("{} failed without a result ({why})", phase.as_str()),
                    ),
                    Some(Err(e)) => self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        format!(
                            "{} failed and its result is unreadable: {e}",
                            phase.as_str()
                        ),
                    ),
                }
                Stage::Ended
            }
            JobState::Succeeded { main, context } => {
                let main = match decode(main.as_deref().unwrap_or_default()) {
                    Ok(r) => r,
                    Err(e) => {
                        self.fail(
                            phase,
                            reasons::RESULT_INVALID,
                            format!("{} result rejected: {e}", phase.as_str()),
                        );
                        return Stage::Ended;
                    }
                };
                let context = if phase == RunPhase::Review {
                    match decode(context.as_deref().unwrap_or_default()) {
                        Ok(r) => Some(r),
                        Err(e) => {
                            self.fail(
                                phase,
                                reasons::RESULT_INVALID,
                                format!("review context result rejected: {e}"),
                            );
                            return Stage::Ended;
                        }
                    }
                } else {
                    None
                };
                Stage::Done(Box::new(main), context.map(Box::new))
            }
        }
    }

    /// Takes the gateway's counts into `status.usage`: each instance's
    /// meter per phase (an instance's count only grows, so a smaller one is
    /// an older read and ignored), then the figures as their sum.
    fn record_gateway_usage(&mut self, counted: &crate::gateway::TaskUsage) {
        if counted.is_empty() && self.plan.status.usage.is_none() {
            // Nothing counted yet: no usage to show (a queued task has none).
            return;
        }
        let usage = self.plan.status.usage.get_or_insert_with(Usage::default);
        for ((instance, phase), c) in counted {
            let meter = UsageMeter::new(instance, *phase, &c.figures, c.refused);
            let full = usage.meters.len() >= 32;
            match usage
                .meters
                .iter_mut()
                .find(|m| &m.instance == instance && m.phase == *phase)
            {
                Some(old) => {
                    let o = old.figures();
                    if c.figures.turns >= o.turns && c.figures.tokens() >= o.tokens() {
                        *old = meter;
                    }
                }
                None if !full => usage.meters.push(meter),
                None => {}
            }
        }
        usage
            .meters
            .sort_by(|a, b| (a.phase, &a.instance).cmp(&(b.phase, &b.instance)));
        let implement = meters_total(&usage.meters, RunPhase::Implement, None);
        usage.turns = clamp(implement.turns);
        usage.input_tokens = clamp(implement.input_tokens);
        usage.output_tokens = clamp(implement.output_tokens);
        usage.cache_read_tokens = clamp(implement.cache_read_tokens);
        usage.cache_creation_tokens = clamp(implement.cache_creation_tokens);
        usage.cost_usd = Some(implement.cost_usd());
        usage.source = Some(UsageSource::Gateway);
        let review = meters_total(&usage.meters, RunPhase::Review, None);
        usage.review = (review != Figures::default()).then(|| UsageFigures::from(&review));
    }

    /// Why the implement phase ended on its budget, when the gateway refused
    /// a request for it.
    fn budget_spent(&self) -> Option<String> {
        let usage = self.plan.status.usage.as_ref()?;
        if usage.source != Some(UsageSource::Gateway) {
            return None;
        }
        let refused: i64 = usage
            .meters
            .iter()
            .filter(|m| m.phase == RunPhase::Implement)
            .map(|m| m.refused_for_budget)
            .sum();
        if refused == 0 {
            return None;
        }
        let used = meters_total(&usage.meters, RunPhase::Implement, None);
        let limits = self
            .plan
            .effective
            .as_ref()
            .map(|e| limits(&e.budget))
            .unwrap_or_default();
        let spent = match limits.reached(&used) {
            Some(s) => limits.describe(s, &used),
            None => "a limit".to_owned(),
        };
        Some(format!(
            "the agent's budget is spent ({spent}; {} tokens, {} turns, {} USD in all); the gateway refused {refused} further model request(s)",
            used.tokens(),
            used.turns,
            used.cost_usd()
        ))
    }

    fn record_images(&mut self, phase: RunPhase, images: &[PhaseImage]) {
        if images.is_empty() {
            return;
        }
        let list = &mut self.plan.status.images;
        list.retain(|i| i.phase != phase);
        list.extend(images.iter().cloned());
        list.sort_by_key(|i| i.phase);
    }

    /// Records a phase's facts; false when the result was not acceptable.
    fn record(&mut self, phase: RunPhase, main: StepResult, context: Option<StepResult>) -> bool {
        match (phase, main) {
            (RunPhase::Prepare, StepResult::Prepared(p)) => {
                let expected = self.task.work_branch().0;
                if p.branch != expected {
                    self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        format!(
                            "prepare reported branch {:?}, expected {expected:?}",
                            p.branch
                        ),
                    );
                    return false;
                }
                if let Some(sha) = p.task_file_sha256 {
                    self.plan.status.task_file_sha256 = Some(sha);
                }
                let message = format!(
                    "cloned {} at {}",
                    self.task.spec.repo.base_ref,
                    short(&p.base_commit)
                );
                self.plan.status.base_commit = Some(p.base_commit);
                self.plan.status.branch = Some(p.branch);
                self.set(types::PREPARED, true, reasons::DONE, message);
                true
            }
            (RunPhase::Implement, StepResult::Collected(c)) => {
                let Some(agent) = c.agent else {
                    self.fail(
                        phase,
                        reasons::AGENT_FAILED,
                        "the agent left no report of its run",
                    );
                    return false;
                };
                if let Some(ignored) = agent.ignored {
                    // Never copied: the figures may be as false as the form.
                    self.event(
                        true,
                        "AgentReportIgnored",
                        format!(
                            "the agent's own report of its run was ignored: {}",
                            ignored.why()
                        ),
                    );
                }
                let reported = (agent.ignored.is_none()).then(|| UsageFigures {
                    turns: clamp(agent.turns),
                    input_tokens: clamp(agent.input_tokens),
                    output_tokens: clamp(agent.output_tokens),
                    cache_read_tokens: clamp(agent.cache_read_tokens),
                    cache_creation_tokens: clamp(agent.cache_creation_tokens),
                    cost_usd: agent.cost_usd.clone(),
                });
                let gateway_counts = self.plan.gateway.is_some();
                let usage = self.plan.status.usage.get_or_insert_with(Usage::default);
                if gateway_counts {
                    // The gateway counts (even nothing, if no request got
                    // through): the agent's word is kept, never used.
                    usage.source = Some(UsageSource::Gateway);
                    usage.cost_usd.get_or_insert_with(|| "0".to_owned());
                    usage.reported = reported;
                } else if let Some(reported) = reported {
                    *usage = Usage {
                        turns: reported.turns,
                        input_tokens: reported.input_tokens,
                        output_tokens: reported.output_tokens,
                        cache_read_tokens: reported.cache_read_tokens,
                        cache_creation_tokens: reported.cache_creation_tokens,
                        cost_usd: reported.cost_usd.clone(),
                        source: Some(UsageSource::Agent),
                        reported: Some(reported),
                        ..Usage::default()
                    };
                }
                self.plan.status.agent_version = agent.version.clone();
                if agent.exit_code != 0 || agent.is_error {
                    self.fail(
                        phase,
                        reasons::AGENT_FAILED,
                        format!(
                            "the agent ended with an error (exit code {})",
                            agent.exit_code
                        ),
                    );
                    return false;
                }
                self.set(
                    types::IMPLEMENTED,
                    true,
                    reasons::DONE,
                    format!(
                        "the agent's work is on the task branch: {} commit(s), {} file(s) changed (as the implement pod reported; review recomputes)",
                        c.commits, c.diff.files
                    ),
                );
                true
            }
            (RunPhase::Review, StepResult::Verdict(v)) => {
                let Some(StepResult::Context(ctx)) = context else {
                    self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        "review context result missing",
                    );
                    return false;
                };
                if v.reviewed_commit != ctx.head_commit {
                    self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        "the verdict is about another commit than the one review recomputed",
                    );
                    return false;
                }
                if self.plan.status.base_commit.as_deref() != Some(ctx.base_commit.as_str()) {
                    self.fail(
                        phase,
                        reasons::RESULT_INVALID,
                        "review used another base commit than prepare recorded",
                    );
                    return false;
                }
                self.plan.status.head_commit = Some(ctx.head_commit.clone());
                self.plan.status.diff = Some(DiffSummary {
                    files: clamp(ctx.diff.files),
                    insertions: clamp(ctx.diff.insertions),
                    deletions: clamp(ctx.diff.deletions),
                    out_of_scope: ctx.out_of_scope.clone(),
                });
                let verdict = match v.verdict {
                    hermes_results::Verdict::Approve => Verdict::Approve,
                    hermes_results::Verdict::Reject => Verdict::Reject,
                };
                // The policy findings that count are context's, from its own
                // termination message, written before the reviewer ran: a
                // verdict that drops them does not make them go away.
                let mut findings: Vec<Finding> = ctx.findings.iter().map(finding).collect();
                for f in v.findings.iter().map(finding) {
                    if !findings.contains(&f) {
                        findings.push(f);
                    }
                }
                findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
                findings.truncate(50);
                let verdict = if ctx
                    .findings
                    .iter()
                    .any(|f| f.severity == hermes_results::Severity::Reject)
                {
                    Verdict::Reject
                } else {
                    verdict
                };
                self.plan.status.review = Some(ReviewOutcome {
                    verdict,
                    summary: (!v.summary.is_empty()).then(|| v.summary.clone()),
                    findings,
                    reviewed_commit: v.reviewed_commit.clone(),
                    decided_by: None,
                });
                self.plan.status.task_file_notes = v.task_file_notes.clone();
                self.set(
                    types::REVIEWED,
                    true,
                    reasons::DONE,
                    format!("verdict {verdict:?} on {}", short(&v.reviewed_commit)),
                );
                true
            }
            (RunPhase::Publish, StepResult::Published(p)) => {
                let retried_for = self
                    .plan
                    .status
                    .publish
                    .as_ref()
                    .and_then(|o| o.retried_for.clone());
                self.plan.status.publish = Some(PublishOutcome {
                    merge_commit: p.merge_commit.clone(),
                    pushed: p.pushed,
                    push_error: p.push_error.clone(),
                    retried_for,
                });
                if p.pushed {
                    conditions::remove(&mut self.plan.status.conditions, types::PUSH_FAILED);
                    self.set(
                        types::PUBLISHED,
                        true,
                        reasons::PUSHED,
                        "pushed to the remote",
                    );
                } else {
                    let why = p.push_error.unwrap_or_else(|| "the push failed".into());
                    self.set(types::PUSH_FAILED, true, reasons::PUSH_FAILED, why.clone());
                    self.set(
                        types::PUBLISHED,
                        true,
                        reasons::PUSH_FAILED,
                        "published locally; the push failed",
                    );
                    self.event(true, "PushFailed", why);
                }
                self.end(
                    TaskPhase::Succeeded,
                    reasons::SUCCEEDED,
                    "approved and published",
                );
                true
            }
            (phase, _) => {
                self.fail(
                    phase,
                    reasons::RESULT_INVALID,
                    format!("{} reported a result of another step", phase.as_str()),
                );
                false
            }
        }
    }

    /// After review: whether the change may be published now.
    fn decided_to_publish(&mut self) -> bool {
        let Some(review) = self.plan.status.review.clone() else {
            return false;
        };
        let policy_reject = review
            .findings
            .iter()
            .any(|f| f.source == FindingSource::Policy && f.severity == Severity::Reject);
        match self.task.spec.review.mode {
            ReviewMode::Auto => {
                if let Some(r) = &mut self.plan.status.review {
                    r.decided_by = Some(hermes_crds::task::Decider::Reviewer);
                }
                if review.verdict == Verdict::Approve && !policy_reject {
                    self.set(
                        types::APPROVED,
                        true,
                        reasons::REVIEWER_APPROVED,
                        "the reviewer approved",
                    );
                    true
                } else {
                    let reason = if policy_reject {
                        reasons::POLICY_REJECTED
                    } else {
                        reasons::REVIEWER_REJECTED
                    };
                    self.set(
                        types::APPROVED,
                        false,
                        reason,
                        review.summary.clone().unwrap_or_default(),
                    );
                    self.end(
                        TaskPhase::Rejected,
                        reason,
                        "the review rejected the change",
                    );
                    false
                }
            }
            ReviewMode::Manual => {
                if policy_reject {
                    if let Some(r) = &mut self.plan.status.review {
                        r.decided_by = Some(hermes_crds::task::Decider::Reviewer);
                    }
                    self.set(
                        types::APPROVED,
                        false,
                        reasons::POLICY_REJECTED,
                        "a policy check rejected the change",
                    );
                    self.end(
                        TaskPhase::Rejected,
                        reasons::POLICY_REJECTED,
                        "a policy check rejected the change",
                    );
                    return false;
                }
                if conditions::get(&self.plan.status.conditions, types::APPROVED)
                    .is_some_and(|c| c.status == "True" && c.reason == reasons::PERSON_APPROVED)
                {
                    return true;
                }
                let reviewed = review.reviewed_commit.clone();
                let approve = self.annotation(ANNOTATION_APPROVE).map(str::to_owned);
                let reject = self.annotation(ANNOTATION_REJECT).map(str::to_owned);
                if reject.as_deref() == Some(reviewed.as_str()) {
                    if let Some(r) = &mut self.plan.status.review {
                        r.decided_by = Some(hermes_crds::task::Decider::Person);
                    }
                    self.set(
                        types::APPROVED,
                        false,
                        reasons::PERSON_REJECTED,
                        format!("rejected {}", short(&reviewed)),
                    );
                    self.end(
                        TaskPhase::Rejected,
                        reasons::PERSON_REJECTED,
                        "a person rejected the change",
                    );
                    return false;
                }
                if approve.as_deref() == Some(reviewed.as_str()) {
                    if let Some(r) = &mut self.plan.status.review {
                        r.decided_by = Some(hermes_crds::task::Decider::Person);
                    }
                    self.set(
                        types::APPROVED,
                        true,
                        reasons::PERSON_APPROVED,
                        format!("approved {}", short(&reviewed)),
                    );
                    return true;
                }
                let stale = [(ANNOTATION_APPROVE, approve), (ANNOTATION_REJECT, reject)]
                    .into_iter()
                    .find_map(|(k, v)| v.map(|v| (k, v)));
                if let Some((key, value)) = stale {
                    let message = format!(
                        "{key} names {:?}, but the reviewed commit is {reviewed}: a decision applies to the reviewed commit only",
                        value.chars().take(64).collect::<String>()
                    );
                    let already = conditions::get(&self.plan.status.conditions, types::APPROVED)
                        .is_some_and(|c| {
                            c.reason == reasons::APPROVAL_MISMATCH && c.message == message
                        });
                    if !already {
                        self.event(true, "ApprovalMismatch", message.clone());
                    }
                    self.set(types::APPROVED, false, reasons::APPROVAL_MISMATCH, message);
                } else {
                    self.set(
                        types::APPROVED,
                        false,
                        reasons::AWAITING_APPROVAL,
                        format!("annotate hermes.dev/approve={reviewed} to publish, or hermes.dev/reject={reviewed}"),
                    );
                }
                self.plan.status.phase = Some(TaskPhase::AwaitingApproval);
                false
            }
        }
    }

    fn cancel(&mut self) {
        for job in self.obs.jobs.values() {
            if job.state == JobState::Running {
                self.plan.delete_jobs.push(job.name.clone());
            }
        }
        self.end(
            TaskPhase::Cancelled,
            reasons::CANCELLED,
            "cancelled by the hermes.dev/cancel annotation",
        );
    }

    /// A `hermes.dev/retry-publish` value not seen before, on a task whose
    /// push failed, runs publish again. True when it does.
    fn retry_publish(&mut self) -> bool {
        let Some(token) = self.annotation(ANNOTATION_RETRY_PUBLISH).map(str::to_owned) else {
            return false;
        };
        let Some(outcome) = self.plan.status.publish.clone() else {
            return false;
        };
        if outcome.pushed || outcome.retried_for.as_deref() == Some(token.as_str()) {
            return false;
        }
        if self.plan.status.phase != Some(TaskPhase::Succeeded) {
            return false;
        }
        if !self.obs.repo_volume_exists {
            let message = "the repo volume is gone: set the profile's volume.retainAfterCompletion to retry a failed push";
            let already = conditions::get(&self.plan.status.conditions, types::PUSH_FAILED)
                .is_some_and(|c| c.reason == reasons::RETRY_REFUSED);
            if !already {
                self.event(true, "RetryRefused", message);
            }
            self.set(types::PUSH_FAILED, true, reasons::RETRY_REFUSED, message);
            if let Some(o) = &mut self.plan.status.publish {
                o.retried_for = Some(token);
            }
            return false;
        }
        let next = self
            .obs
            .jobs
            .keys()
            .filter(|(p, _)| *p == RunPhase::Publish)
            .map(|(_, a)| *a)
            .max()
            .unwrap_or(0)
            + 1;
        if let Some(o) = &mut self.plan.status.publish {
            o.retried_for = Some(token);
        }
        conditions::remove(&mut self.plan.status.conditions, types::PUBLISHED);
        self.plan.status.completion_time = None;
        self.plan.status.phase = Some(TaskPhase::Publishing);
        self.plan.status.attempt = i32::try_from(next).ok();
        self.event(
            false,
            "RetryPublish",
            "publishing again after a failed push",
        );
        true
    }

    /// After the end: delete the repo volume once its retention has passed.
    fn after_end(&mut self) {
        if !self.obs.repo_volume_exists {
            return;
        }
        let retain = self
            .obs
            .profile
            .as_ref()
            .and_then(|p| p.volume.retain_after_completion.as_ref())
            .and_then(|t| t.duration("profile spec.volume.retainAfterCompletion").ok())
            .unwrap_or_default();
        let ended = self
            .plan
            .status
            .completion_time
            .as_ref()
            .map_or(self.now.0, |t| t.0);
        let elapsed = self.now.0.duration_since(ended);
        let elapsed = Duration::try_from(elapsed).unwrap_or_default();
        if elapsed >= retain {
            self.plan.delete_volume = true;
        } else {
            self.plan.requeue_after = Some(retain - elapsed);
        }
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The condition reason of a step's failure: its stable identifier.
fn failure_reason(r: hermes_results::FailureReason) -> &'static str {
    use hermes_results::FailureReason as F;
    match r {
        F::InvalidInput => "InvalidInput",
        F::AuthenticationFailed => "AuthenticationFailed",
        F::CloneFailed => "CloneFailed",
        F::BaseRefNotFound => "BaseRefNotFound",
        F::TaskFileNotFound => "TaskFileNotFound",
        F::AgentFailed => "AgentFailed",
        F::VolumeUnsafe => "VolumeUnsafe",
        F::BranchMissing => "BranchMissing",
        F::CommitMismatch => "CommitMismatch",
        F::ObjectsInvalid => "ObjectsInvalid",
        F::MergeConflict => "MergeConflict",
        F::VolumeFull => reasons::RESOURCE_EXHAUSTED,
        F::Internal => reasons::STEP_FAILED,
    }
}

fn finding(f: &hermes_results::Finding) -> Finding {
    Finding {
        severity: match f.severity {
            hermes_results::Severity::Info => Severity::Info,
            hermes_results::Severity::Warn => Severity::Warn,
            hermes_results::Severity::Reject => Severity::Reject,
        },
        source: match f.source {
            hermes_results::FindingSource::Policy => FindingSource::Policy,
            hermes_results::FindingSource::Reviewer => FindingSource::Reviewer,
        },
        path: f.path.clone(),
        message: f.message.clone(),
    }
}

#[cfg(test)]
mod tests;
