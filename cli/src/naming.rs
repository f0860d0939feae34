//! The operator's naming and labelling contract, as the plugin needs it to
//! find a task's pods and volume. A test holds each function equal to the
//! operator's own (`hermes_operator::builders`), so the two cannot drift.

use sha2::{Digest, Sha256};

/// Label naming the task on its children and pods.
pub const LABEL_TASK: &str = "hermes.dev/task";
/// Label naming a pod's phase.
pub const LABEL_PHASE: &str = "hermes.dev/phase";
/// Label carrying a pod's infrastructure attempt.
pub const LABEL_ATTEMPT: &str = "hermes.dev/attempt";
/// Annotation on pods with the task's full name (labels are length-bound).
pub const ANNOTATION_TASK_NAME: &str = "hermes.dev/task-name";
/// The field manager the plugin writes with.
pub const FIELD_MANAGER: &str = "kubectl-hermes";
/// Annotation where `reject --reason` records why (read by people only).
pub const ANNOTATION_REJECT_REASON: &str = "hermes.dev/reject-reason";

const MAX_NAME: usize = 63;

fn short_hash(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `<task>-<suffix>`, shortened to `limit` with a hash of the task's name.
pub fn child_name(task: &str, suffix: &str, limit: usize) -> String {
    let full = format!("{task}-{suffix}");
    if full.len() <= limit {
        return full;
    }
    let hash = short_hash(task);
    let keep = limit.saturating_sub(suffix.len() + hash.len() + 2);
    let prefix = task
        .get(..keep.min(task.len()))
        .unwrap_or_default()
        .trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{suffix}")
}

/// The task's label value: its name, or a shortened form with a hash.
pub fn task_label(task: &str) -> String {
    if task.len() <= MAX_NAME {
        return task.to_owned();
    }
    let hash = short_hash(task);
    let prefix = task
        .get(..MAX_NAME - hash.len() - 1)
        .unwrap_or_default()
        .trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}")
}

/// The repo volume's claim.
pub fn repo_pvc_name(task: &str) -> String {
    child_name(task, "repo", MAX_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_operator::builders;

    #[test]
    fn names_and_labels_are_the_operators() {
        let long = "a".repeat(70);
        let dotted = format!("{}.-{}", "b".repeat(50), "c".repeat(20));
        for name in [
            "t",
            "add-flag",
            long.as_str(),
            dotted.as_str(),
            &"x".repeat(253),
        ] {
            assert_eq!(task_label(name), builders::task_label(name), "{name}");
            assert_eq!(repo_pvc_name(name), builders::repo_pvc_name(name), "{name}");
        }
        assert_eq!(LABEL_TASK, builders::LABEL_TASK);
        assert_eq!(LABEL_PHASE, builders::LABEL_PHASE);
        assert_eq!(LABEL_ATTEMPT, builders::LABEL_ATTEMPT);
        assert_eq!(ANNOTATION_TASK_NAME, builders::ANNOTATION_TASK_NAME);
    }
}
