//! Conditions in the `metav1.Condition` shape: reasons are constants, the
//! transition time changes only when the status flips, and each carries the
//! generation it was computed for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition types the operator sets.
pub mod types {
    /// The task is done and published (or had nothing to publish).
    pub const READY: &str = "Ready";
    /// The profile exists, the task fits it, and the task file is readable.
    pub const ADMITTED: &str = "Admitted";
    /// The repository was cloned.
    pub const PREPARED: &str = "Prepared";
    /// The agent ran and its work was collected.
    pub const IMPLEMENTED: &str = "Implemented";
    /// The review ran and reached a verdict.
    pub const REVIEWED: &str = "Reviewed";
    /// The change may be published (by the reviewer, or by a person).
    pub const APPROVED: &str = "Approved";
    /// The publish phase ran.
    pub const PUBLISHED: &str = "Published";
    /// The push failed; the task still succeeded (a warning).
    pub const PUSH_FAILED: &str = "PushFailed";
    /// The task got a place under its profile's caps (False: it waits in
    /// `Queued`, or approved in `AwaitingApproval`, and the reason says why).
    pub const SCHEDULED: &str = "Scheduled";
}

/// Condition reasons.
pub mod reasons {
    #![allow(missing_docs)]
    pub const PROFILE_NOT_FOUND: &str = "ProfileNotFound";
    pub const PROFILE_VIOLATION: &str = "ProfileViolation";
    pub const TASK_FILE_NOT_FOUND: &str = "TaskFileNotFound";
    pub const ADMITTED: &str = "Admitted";
    pub const RUNNING: &str = "Running";
    pub const DONE: &str = "Done";
    pub const TIMEOUT: &str = "Timeout";
    pub const RESULT_INVALID: &str = "ResultInvalid";
    pub const STEP_FAILED: &str = "StepFailed";
    pub const AGENT_FAILED: &str = "AgentFailed";
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    /// A phase's pod ran out of memory or ephemeral storage at its limits.
    pub const RESOURCE_EXHAUSTED: &str = "ResourceExhausted";
    pub const GATEWAY_NOT_CONFIGURED: &str = "GatewayNotConfigured";
    pub const GATEWAY_UNAVAILABLE: &str = "GatewayUnavailable";
    pub const INFRASTRUCTURE_RETRIES_EXHAUSTED: &str = "InfrastructureRetriesExhausted";
    pub const REVIEWER_APPROVED: &str = "ReviewerApproved";
    pub const REVIEWER_REJECTED: &str = "ReviewerRejected";
    pub const POLICY_REJECTED: &str = "PolicyRejected";
    pub const AWAITING_APPROVAL: &str = "AwaitingApproval";
    pub const PERSON_APPROVED: &str = "PersonApproved";
    pub const PERSON_REJECTED: &str = "PersonRejected";
    pub const APPROVAL_MISMATCH: &str = "ApprovalMismatch";
    pub const PUSHED: &str = "Pushed";
    pub const PUSH_FAILED: &str = "PushFailed";
    pub const NOTHING_TO_PUBLISH: &str = "NothingToPublish";
    pub const RETRY_REFUSED: &str = "RetryRefused";
    pub const CANCELLED: &str = "Cancelled";
    pub const SUCCEEDED: &str = "Succeeded";
    pub const REJECTED: &str = "Rejected";
    pub const FAILED: &str = "Failed";
    pub const STARTED: &str = "Started";
    pub const MAX_RUNNING: &str = "MaxRunning";
    pub const MAX_AWAITING_REVIEW: &str = "MaxAwaitingReview";
    pub const WAITING_FOR_DEPENDENCIES: &str = "WaitingForDependencies";
    pub const DEPENDENCY_FAILED: &str = "DependencyFailed";
    pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";
}

/// Sets a condition, keeping its transition time unless its status flips.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.clone();
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Removes a condition.
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether a condition is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// A condition, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
