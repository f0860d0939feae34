//! `HermesTask`: one job for an agent, and the record of how it went.

use kube::CustomResource;
use schemars::{JsonSchema, Schema};
use serde::{Deserialize, Serialize};

use crate::rules::{CelRule, add_cel};
use crate::shared::{Budget, EgressRule, RunPhase};
use crate::validation::{BranchName, ObjectName, RepoPath, RepoUrl, ScopeGlob, Timeout};

/// The longest inline task file accepted, in characters (64 KiB).
pub const MAX_TASK_CHARS: usize = 65_536;

/// Annotation by which a person approves the reviewed commit: its value must be
/// the full commit id in `status.review.reviewedCommit`.
pub const ANNOTATION_APPROVE: &str = "hermes.dev/approve";
/// Annotation by which a person rejects the reviewed commit (value: its full id).
pub const ANNOTATION_REJECT: &str = "hermes.dev/reject";
/// Annotation that stops a task: running Jobs are deleted and it ends `Cancelled`.
pub const ANNOTATION_CANCEL: &str = "hermes.dev/cancel";
/// Annotation that runs publish again after a failed push.
pub const ANNOTATION_RETRY_PUBLISH: &str = "hermes.dev/retry-publish";

/// One job for a coding agent: the repository, the task file, what the change
/// may touch, and how it is reviewed and published. Hermes runs it as a chain
/// of Jobs (prepare, implement, review, publish) under a HermesProfile and
/// records every outcome in `status`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "hermes.dev",
    version = "v1alpha1",
    kind = "HermesTask",
    plural = "hermestasks",
    shortname = "ht",
    category = "hermes",
    namespaced,
    status = "HermesTaskStatus",
    derive = "PartialEq",
    doc = "A HermesTask is one job for a coding agent, run contained as a chain of Jobs (prepare, implement, review, publish) under a HermesProfile. Its status is the audit record of the run.",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase","description":"Where the task is in its run."}"#,
    printcolumn = r#"{"name":"Verdict","type":"string","jsonPath":".status.review.verdict","description":"The review's verdict."}"#,
    printcolumn = r#"{"name":"Branch","type":"string","jsonPath":".status.branch","description":"The branch the agent's change is on."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".spec.profile","priority":1,"description":"The HermesProfile the task runs under."}"#,
    printcolumn = r#"{"name":"Head","type":"string","jsonPath":".status.headCommit","priority":1,"description":"The head commit of the task branch."}"#
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = task_spec_rules)]
pub struct HermesTaskSpec {
    /// The repository to work on. Immutable once the task is created.
    pub repo: RepoSpec,

    /// The task file, inline: markdown saying what to build, which files are in
    /// scope, what done looks like, and the constraints. It is the agent's
    /// prompt. Exactly one of `task` and `taskRef` is set; at most 64 KiB;
    /// immutable once the task is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.matches(r'\\S')",
        "message": "must not be empty or only whitespace"
    }]))]
    pub task: Option<String>,

    /// Where to read the task file instead of inline: a ConfigMap key, or a
    /// path inside the repository at `repo.baseRef` (the GitOps way). Exactly
    /// one of `task` and `taskRef` is set; immutable once the task is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_ref: Option<TaskRef>,

    /// Globs of the paths the change may touch, relative to the repository
    /// root (`src/parser/**`, `docs/*.md`). A change outside them is a review
    /// finding, rejected or warned about as the profile's policy says.
    /// At least one; no absolute paths, no `..`; immutable once created.
    #[schemars(length(min = 1, max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub scope: Vec<ScopeGlob>,

    /// The HermesProfile (same namespace) that draws this task's boundary:
    /// images, egress, credentials, budgets and caps. Immutable once created.
    #[serde(default = "default_profile")]
    pub profile: ObjectName,

    /// How the change is reviewed.
    #[serde(default)]
    pub review: ReviewSpec,

    /// What happens to an approved change.
    #[serde(default)]
    pub publish: PublishSpec,

    /// Per-phase time limits; each may only be lower than the profile's cap.
    /// A missing value takes the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<PhaseTimeouts>,

    /// Limits on the agent's spending; each may only be lower than the
    /// profile's cap. A missing value takes the profile's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,

    /// Narrows the implement phase's egress: each rule must lie inside the
    /// profile's implement allowlist. Unset means the profile's allowlist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub egress: Option<Vec<EgressRule>>,

    /// Narrows the implement phase's host allowlist (the profile's
    /// `egress.hosts.implement`): each rule must lie inside one of the
    /// profile's (same or narrower name, a subset of its ports). Unset means
    /// the profile's list; an empty list allows no host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub egress_hosts: Option<Vec<crate::hosts::HostRule>>,

    /// Admission order among queued tasks of the same profile: higher first,
    /// then older first. From -1000 to 1000; default 0.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,

    /// Names of HermesTasks in this namespace that must have `Succeeded`
    /// first; this task's base then includes their merges. A failed
    /// dependency fails this task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub depends_on: Vec<ObjectName>,
}

fn default_profile() -> ObjectName {
    ObjectName("default".into())
}

fn task_spec_rules(schema: &mut Schema) {
    add_cel(
        schema,
        &[
            CelRule::new(
                "has(self.task) != has(self.taskRef)",
                "exactly one of spec.task (the task file, inline) and spec.taskRef must be set",
            )
            .at(".task"),
            CelRule::new(
                "self.repo == oldSelf.repo",
                "spec.repo is immutable: create a new HermesTask to work on another repository or branch",
            )
            .at(".repo"),
            CelRule::new(
                "has(self.task) == has(oldSelf.task) && (!has(self.task) || self.task == oldSelf.task)",
                "spec.task is immutable: create a new HermesTask for a new task file",
            )
            .at(".task"),
            CelRule::new(
                "has(self.taskRef) == has(oldSelf.taskRef) && (!has(self.taskRef) || self.taskRef == oldSelf.taskRef)",
                "spec.taskRef is immutable: create a new HermesTask for a new task file",
            )
            .at(".taskRef"),
            CelRule::new(
                "self.scope == oldSelf.scope",
                "spec.scope is immutable: create a new HermesTask for a different scope",
            )
            .at(".scope"),
            CelRule::new(
                "self.profile == oldSelf.profile",
                "spec.profile is immutable: create a new HermesTask to run under another profile",
            )
            .at(".profile"),
        ],
    );
}

/// The repository a task works on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = repo_spec_rules)]
pub struct RepoSpec {
    /// Git URL of the repository: `https://`, `http://`, `ssh://`, or scp-like
    /// `git@host:org/repo.git`. No credentials in the URL: the profile's git
    /// Secrets carry them. No `file://`, `ext::` or option-like values.
    pub url: RepoUrl,
    /// The branch the work starts from, and that `publish: merge` merges into.
    /// A valid git branch name (the rules of `git check-ref-format --branch`).
    pub base_ref: BranchName,
    /// The branch the agent's change goes on. Default `hermes/<task name>`.
    /// A valid git branch name, different from `baseRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<BranchName>,
}

fn repo_spec_rules(schema: &mut Schema) {
    add_cel(
        schema,
        &[CelRule::new(
            "!has(self.branch) || self.branch != self.baseRef",
            "spec.repo.branch must differ from spec.repo.baseRef: the agent never works on the base branch",
        )
        .at(".branch")],
    );
}

impl HermesTask {
    /// The branch the change goes on: `spec.repo.branch`, or `hermes/<name>`.
    pub fn work_branch(&self) -> BranchName {
        match &self.spec.repo.branch {
            Some(b) => b.clone(),
            None => BranchName(format!(
                "hermes/{}",
                self.metadata.name.as_deref().unwrap_or_default()
            )),
        }
    }
}

/// Where the task file is read from, when it is not inline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.configMapKeyRef) != has(self.repoPath)",
    "message": "spec.taskRef: exactly one of configMapKeyRef and repoPath must be set"
}]))]
pub struct TaskRef {
    /// A key of a ConfigMap in the task's namespace holding the markdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<ConfigMapKey>,
    /// A path inside the repository, read at `repo.baseRef` when the task
    /// starts (the GitOps way: the task file lives in git). The commit it was
    /// read at and its sha256 are recorded in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_path: Option<RepoPath>,
}

/// A key in a ConfigMap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKey {
    /// The ConfigMap's name, in the task's namespace.
    pub name: ObjectName,
    /// The key whose value is the task file.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// How a change is reviewed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewSpec {
    /// `auto`: the review Job's verdict decides. `manual`: the review Job
    /// advises, and a person decides with the `hermes.dev/approve` or
    /// `hermes.dev/reject` annotation naming the reviewed commit.
    #[serde(default)]
    pub mode: ReviewMode,
    /// Extra instructions for the reviewer, added to its fixed prompt (they
    /// cannot remove the deterministic policy checks). At most 8 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub instructions: Option<String>,
}

/// Who decides on a reviewed change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ReviewMode {
    /// The review Job's verdict decides.
    #[default]
    Auto,
    /// A person decides, bound to the reviewed commit.
    Manual,
}

/// What happens to an approved change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PublishSpec {
    /// `merge`: merge the reviewed commit into `repo.baseRef` and push it.
    /// `branch`: push the task branch only, for a pull-request flow.
    /// `none`: push nothing; the result stays on the volume and in status.
    #[serde(default)]
    pub mode: PublishMode,
}

/// How an approved change is published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PublishMode {
    /// Merge into the base branch and push.
    #[default]
    Merge,
    /// Push the task branch only.
    Branch,
    /// Push nothing.
    None,
}

/// Time limits per phase, as durations (`90s`, `30m`, `1h30m`), each more
/// than 0 and at most 24h.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseTimeouts {
    /// Limit for cloning the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prepare: Option<Timeout>,
    /// Limit for the agent's run, including collecting its result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub implement: Option<Timeout>,
    /// Limit for the review Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<Timeout>,
    /// Limit for merging and pushing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Timeout>,
}

impl PhaseTimeouts {
    /// The timeout of one phase, if set.
    pub fn get(&self, phase: RunPhase) -> Option<&Timeout> {
        match phase {
            RunPhase::Prepare => self.prepare.as_ref(),
            RunPhase::Implement => self.implement.as_ref(),
            RunPhase::Review => self.review.as_ref(),
            RunPhase::Publish => self.publish.as_ref(),
        }
    }
}

pub use crate::status::*;
