//! `HermesTask.status`: the audit record of a run. Written only by the operator,
//! with server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::shared::RunPhase;

/// A full git commit id (SHA-1, or SHA-256 in a SHA-256 repository).
const COMMIT_PATTERN: &str = r"^[0-9a-f]{40}([0-9a-f]{24})?$";

/// What the task has done so far, and how it ended. Six weeks later, the task
/// file hash, the images, the verdict and the commits here explain the change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HermesTaskStatus {
    /// Where the task is: Pending, Queued, Preparing, Implementing, Reviewing,
    /// AwaitingApproval, Publishing, or one of the ends Succeeded, Rejected,
    /// Failed, Cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TaskPhase>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Detailed state, one entry per condition type (Ready, ProfileNotFound,
    /// ProfileViolation, PushFailed, ...), with the generation each was
    /// computed for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Infrastructure attempt of the current phase, from 1; it grows only when
    /// a pod was lost to the infrastructure (eviction, node loss, missing image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,

    /// The commit of `spec.repo.baseRef` the run started from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub base_commit: Option<String>,

    /// The branch the agent's change is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub branch: Option<String>,

    /// The head commit of the task branch after the agent's run, as recomputed
    /// by review (the implement pod's own report is advisory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub head_commit: Option<String>,

    /// Size and reach of the change between base and head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffSummary>,

    /// The review's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewOutcome>,

    /// The publish phase's outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishOutcome>,

    /// What the agent used, as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,

    /// sha256 (hex) of the task file the agent was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^[0-9a-f]{64}$"))]
    pub task_file_sha256: Option<String>,

    /// The image each phase's containers ran, with the digest the node
    /// resolved (from the pod status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub images: Vec<PhaseImage>,

    /// The agent CLI's version, as it reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub agent_version: Option<String>,

    /// The reviewer's notes on the task file itself: what it did not
    /// anticipate, so the next task is better shaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub task_file_notes: Option<String>,

    /// When the first phase started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the task reached its end phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}

/// Where a task is in its run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TaskPhase {
    /// Accepted, not yet admitted (for example, its profile does not exist yet).
    Pending,
    /// Waiting for room under its profile's concurrency caps, or for dependencies.
    Queued,
    /// Cloning the repository.
    Preparing,
    /// The agent is working.
    Implementing,
    /// The change is being reviewed.
    Reviewing,
    /// Reviewed; waiting for a person to approve or reject the reviewed commit.
    AwaitingApproval,
    /// Merging and pushing.
    Publishing,
    /// Approved and published (a failed push still ends here, with a warning condition).
    Succeeded,
    /// The review (or a person) rejected the change; nothing was published.
    Rejected,
    /// The run could not complete; the reason is in the conditions.
    Failed,
    /// Stopped by the `hermes.dev/cancel` annotation.
    Cancelled,
}

impl TaskPhase {
    /// Whether the task has ended.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskPhase::Succeeded | TaskPhase::Rejected | TaskPhase::Failed | TaskPhase::Cancelled
        )
    }
}

/// Size and reach of a change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiffSummary {
    /// Files changed.
    pub files: i64,
    /// Lines added.
    pub insertions: i64,
    /// Lines removed.
    pub deletions: i64,
    /// Changed paths outside `spec.scope` (the first 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub out_of_scope: Vec<String>,
}

/// The review's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewOutcome {
    /// `approve` or `reject`. With `review: manual` this is advice until a
    /// person decides.
    pub verdict: Verdict,
    /// The reviewer's summary of the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub summary: Option<String>,
    /// What the review found: deterministic policy findings and the
    /// reviewer's own (the first 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50))]
    pub findings: Vec<Finding>,
    /// The commit the verdict is about. An approval applies to this commit only.
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub reviewed_commit: String,
    /// Who made the decision that counts: `reviewer` (auto) or `person` (manual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<Decider>,
}

/// A review verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Safe to keep.
    Approve,
    /// Not safe to keep.
    Reject,
}

/// Who decided on a reviewed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decider {
    /// The review Job (`review: auto`).
    Reviewer,
    /// A person, by annotation (`review: manual`).
    Person,
}

/// One thing the review found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// `reject` (the change cannot be kept), `warn` or `info`.
    pub severity: Severity,
    /// Where it comes from: `policy` (deterministic checks, which reject on
    /// their own whatever the model says) or `reviewer` (the model).
    pub source: FindingSource,
    /// The path concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub path: Option<String>,
    /// What was found.
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// How serious a finding is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look; does not reject by itself.
    Warn,
    /// The change cannot be kept.
    Reject,
}

/// Where a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FindingSource {
    /// A deterministic check of the runner.
    Policy,
    /// The reviewer model.
    Reviewer,
}

/// The publish phase's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishOutcome {
    /// The merge commit made on the base branch (`publish: merge`); equal to
    /// the reviewed commit when the merge was a fast-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = COMMIT_PATTERN))]
    pub merge_commit: Option<String>,
    /// Whether the push reached the remote.
    pub pushed: bool,
    /// Why the push failed, scrubbed of credentials. A failed push is a
    /// warning: the task still ends `Succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub push_error: Option<String>,
    /// The `hermes.dev/retry-publish` value the last publish ran for: each
    /// new value runs publish once more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub retried_for: Option<String>,
}

/// What the agent used. With the gateway (a profile with `model`), the top
/// figures are the gateway's count of the implement phase, updated while it
/// runs and final when it ends; the agent's own report is kept beside them
/// as `reported`, never trusted. Without the gateway they are the agent's
/// report (`source: Agent`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Agent turns (model round trips).
    #[serde(default)]
    pub turns: i64,
    /// Input tokens, cache reads and writes excluded.
    #[serde(default)]
    pub input_tokens: i64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: i64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_tokens: i64,
    /// Cost in US dollars as a decimal string: priced by the gateway from the
    /// profile's table, or as the agent CLI computed it (`source: Agent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub cost_usd: Option<String>,
    /// Who counted the figures above: `Gateway` (authoritative) or `Agent`
    /// (the agent's own report, when the profile has no gateway).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<UsageSource>,
    /// The implementing agent's own report of its usage, kept for
    /// comparison; never used for a decision when the gateway counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported: Option<UsageFigures>,
    /// The reviewer's usage, as the gateway counted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<UsageFigures>,
    /// The raw counts the figures are summed from: one per gateway instance
    /// and phase (an instance's count only grows; a restarted gateway is a
    /// new instance).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub meters: Vec<UsageMeter>,
}

/// Who counted a task's usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum UsageSource {
    /// The Hermes gateway, which forwarded every model request.
    Gateway,
    /// The agent CLI's own report.
    Agent,
}

/// Usage figures of one agent CLI.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageFigures {
    /// Model requests (turns).
    #[serde(default)]
    pub turns: i64,
    /// Input tokens, cache reads and writes excluded.
    #[serde(default)]
    pub input_tokens: i64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_tokens: i64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_tokens: i64,
    /// Cost in US dollars as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(\.[0-9]{1,9})?$"))]
    pub cost_usd: Option<String>,
}

/// What one gateway instance counted for one phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageMeter {
    /// The gateway instance (random per gateway start).
    #[schemars(length(min = 1, max = 64))]
    pub instance: String,
    /// The phase counted.
    pub phase: RunPhase,
    /// Model requests.
    #[serde(default)]
    pub turns: i64,
    /// Input tokens, cache excluded.
    #[serde(default)]
    pub input_tokens: i64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// Cache reads.
    #[serde(default)]
    pub cache_read_tokens: i64,
    /// Cache writes.
    #[serde(default)]
    pub cache_creation_tokens: i64,
    /// Cost in picodollars (10⁻¹² USD), exact.
    #[serde(default)]
    pub cost_pico_usd: i64,
    /// Tokens of models the profile's price table lacks.
    #[serde(default)]
    pub unpriced_tokens: i64,
    /// Requests the gateway refused because the budget was spent.
    #[serde(default)]
    pub refused_for_budget: i64,
}

/// The image one container of a phase ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseImage {
    /// The phase.
    pub phase: RunPhase,
    /// The container's name in the phase's pod.
    #[schemars(length(max = 63))]
    pub container: String,
    /// The image as the pod spec named it.
    #[schemars(length(max = 512))]
    pub image: String,
    /// The image id the node resolved (its digest), from the pod status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image_id: Option<String>,
}
