//! The contract between the Hermes operator and the pods it runs: each step's
//! result, as versioned JSON in the final container's termination message.
//!
//! ```text
//!   pod (runner step) ── encode(), ≤ 4096 bytes ──> /dev/termination-log
//!                                                        │ kubelet copies it into
//!                                                        ▼ pod.status...terminated.message
//!   operator ── decode(): size bound, strict parse, value checks ──> status
//! ```
//!
//! The Tekton pattern: small results travel in the termination message,
//! size-checked in the pod against the kubelet's 4096-byte limit; larger
//! artefacts (the review bundle, the agent's transcript) stay in files in the
//! pod's emptyDir. The operator trusts nothing it cannot parse: an empty,
//! oversized, unknown-version or malformed message is an error, never a
//! default. Implement's own report ([`Collected`]) is advisory; decisions are
//! taken on what review recomputes ([`ContextReport`], [`VerdictReport`]).
//!
//! This crate has no Kubernetes dependency, so the runner stays small.

use serde::{Deserialize, Serialize};

/// The version of the result schema this crate writes and reads.
pub const VERSION: u32 = 1;
/// The kubelet keeps at most this many bytes of a termination message.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Where a container writes its termination message (the Kubernetes default).
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Longest free-text field (messages, summaries, notes), in bytes.
pub const MAX_TEXT_BYTES: usize = 1024;
/// Longest path reported in a finding or a list of paths, in bytes.
pub const MAX_PATH_BYTES: usize = 512;

/// Errors of encoding and decoding results.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The termination message was empty: the step did not write a result
    /// (it crashed, was killed, or never ran).
    #[error("the container wrote no result")]
    Empty,
    /// The message is longer than a termination message can be.
    #[error("result is {bytes} bytes; at most {MAX_MESSAGE_BYTES} fit in a termination message")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// The message is not a result of this schema.
    #[error("result does not parse: {0}")]
    Malformed(String),
    /// The message is a result of another schema version.
    #[error("result has schema version {found}; this build reads version {VERSION}")]
    UnsupportedVersion {
        /// The version the message claims.
        found: u64,
    },
    /// A value in the result is out of bounds or not of its form.
    #[error("result field {field}: {problem}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        problem: &'static str,
    },
    /// The result could not be serialized.
    #[error("serializing the result: {0}")]
    Serialize(String),
}

/// A step's result with its schema version: the whole termination message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// Schema version; always [`VERSION`] when written by this crate.
    pub v: u32,
    /// What the step reports.
    pub result: StepResult,
}

/// What one step reports, by step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum StepResult {
    /// `prepare` cloned the base and created the task branch.
    Prepared(Prepared),
    /// `collect` committed what the agent left. Advisory.
    Collected(Collected),
    /// `context` recomputed the change from the volume, read as data.
    Context(ContextReport),
    /// `verdict` decided (or advised) on the reviewed commit.
    Verdict(VerdictReport),
    /// `publish` merged and pushed, or tried to.
    Published(Published),
    /// The step could not do its work.
    Failed(Failure),
}

/// The steps that write results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Step {
    /// Clone the base branch; create the task branch.
    Prepare,
    /// Commit what the agent left; summarize (advisory).
    Collect,
    /// Recompute the change and run the policy checks, for the reviewer.
    Context,
    /// Turn the reviewer's output and the policy findings into a verdict.
    Verdict,
    /// Merge and push the reviewed commit.
    Publish,
}

/// The result of `prepare`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Prepared {
    /// The commit of the base branch that was cloned.
    pub base_commit: String,
    /// The task branch created at `base_commit`.
    pub branch: String,
    /// sha256 (hex) of the task file, when prepare read it from the
    /// repository (`taskRef.repoPath`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_file_sha256: Option<String>,
}

/// Lines and files changed between two commits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DiffStats {
    /// Files changed.
    pub files: u64,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
}

/// What the agent CLI reported about its own run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentReport {
    /// The agent process's exit code.
    pub exit_code: i32,
    /// Whether the CLI reported an error.
    pub is_error: bool,
    /// Turns (model round trips).
    pub turns: u64,
    /// Input tokens, cache excluded.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation_tokens: u64,
    /// Cost in US dollars, as a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<String>,
    /// The CLI's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Set by [`decode`] when the report's free-form fields (version, cost)
    /// are not of their strict form: why. They are then dropped, and the
    /// operator records nothing of the report. Carried on the wire like the
    /// rest, so a decoded result encodes and decodes to itself (a pod that
    /// sets it only has its own report ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<Ignored>,
}

/// Why an agent's report was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Ignored {
    /// Its cost is not a decimal amount.
    CostNotAnAmount,
    /// Its version is not a version (or carries a credential).
    VersionNotAVersion,
}

impl Ignored {
    /// Why, for a person.
    pub fn why(self) -> &'static str {
        match self {
            Ignored::CostNotAnAmount => "its cost is not a decimal amount",
            Ignored::VersionNotAVersion => "its version is not a version",
        }
    }
}

/// The result of `collect` (implement pod). Advisory: the operator records it
/// but decides on what review recomputes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Collected {
    /// Head of the task branch after collecting.
    pub head_commit: String,
    /// Commits on the task branch since the base.
    pub commits: u64,
    /// The change's size.
    pub diff: DiffStats,
    /// Changed paths outside the scope (the first few; see `truncated`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_scope: Vec<String>,
    /// The agent's own report, when it produced one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentReport>,
    /// Whether lists were cut to fit the message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// For the record.
    Info,
    /// Worth a look.
    Warn,
    /// The change cannot be kept.
    Reject,
}

/// Where a finding comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FindingSource {
    /// A deterministic check of the runner.
    Policy,
    /// The reviewer model.
    Reviewer,
}

/// One thing a review found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Finding {
    /// How serious it is.
    pub severity: Severity,
    /// Who found it.
    pub source: FindingSource,
    /// A stable identifier of the check (`outOfScope`, `protectedPath`,
    /// `symlinkOutside`, ...), or `reviewer`.
    pub code: String,
    /// The path concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What was found.
    pub message: String,
}

/// The result of `context` (review pod, first step).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContextReport {
    /// The base commit the operator passed in (never read from the volume).
    pub base_commit: String,
    /// Head of the task branch, recomputed from the volume's objects.
    pub head_commit: String,
    /// The change's size, recomputed.
    pub diff: DiffStats,
    /// Changed paths outside the scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub out_of_scope: Vec<String>,
    /// Deterministic policy findings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// Whether lists were cut to fit the message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// A verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Verdict {
    /// Safe to keep.
    Approve,
    /// Not safe to keep.
    Reject,
}

/// The result of `verdict` (review pod, last step): the decision that counts
/// with `review: auto`, the advice with `review: manual`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerdictReport {
    /// Approve or reject. Any reject-severity policy finding, and reviewer
    /// output that does not parse, reject whatever the model said.
    pub verdict: Verdict,
    /// The commit the verdict is about.
    pub reviewed_commit: String,
    /// The reviewer's summary.
    pub summary: String,
    /// Policy and reviewer findings (the most severe first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// The reviewer's notes on the task file itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_file_notes: Option<String>,
    /// What the reviewer CLI reported about its own run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<AgentReport>,
    /// Whether lists or texts were cut to fit the message.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// How publish published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PublishMode {
    /// Merged into the base branch.
    Merge,
    /// Pushed the task branch.
    Branch,
    /// Pushed nothing.
    None,
}

/// The result of `publish`. A failed push is not a failed step: `pushed` is
/// false and `push_error` says why, scrubbed of credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Published {
    /// What was done.
    pub mode: PublishMode,
    /// The commit pushed to the base branch (`merge`): a merge commit, or the
    /// reviewed commit itself after a fast-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_commit: Option<String>,
    /// Whether the push reached the remote.
    pub pushed: bool,
    /// Why the push failed, scrubbed of credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_error: Option<String>,
}

/// Why a step could not do its work. Stable identifiers: the operator turns
/// them into condition reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// The step's inputs (arguments, mounted files) were missing or invalid.
    InvalidInput,
    /// The remote refused the credentials.
    AuthenticationFailed,
    /// The remote could not be reached or the clone failed.
    CloneFailed,
    /// The base branch does not exist on the remote.
    BaseRefNotFound,
    /// The task file named by `taskRef.repoPath` is not in the repository.
    TaskFileNotFound,
    /// The agent exited with an error.
    AgentFailed,
    /// The volume is not safe to read (for example `.git` is a symlink).
    VolumeUnsafe,
    /// The task branch is missing from the volume.
    BranchMissing,
    /// The reviewed commit is not the approved one, or does not descend from the base.
    CommitMismatch,
    /// Objects copied from the volume failed verification.
    ObjectsInvalid,
    /// The change does not merge cleanly into the base branch.
    MergeConflict,
    /// A filesystem the step writes to is full (ENOSPC, EDQUOT): the repo
    /// volume, or the step's own scratch space. The task's own use: a
    /// repository larger than the volume, or an agent that filled it.
    VolumeFull,
    /// Anything else; the message says what.
    Internal,
}

/// A failed step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Failure {
    /// The step that failed.
    pub step: Step,
    /// Why, as a stable identifier.
    pub reason: FailureReason,
    /// What happened, for a person; scrubbed of credentials.
    pub message: String,
}

mod codec;
pub mod secrets;
pub use codec::{decode, encode, encode_fitting};
