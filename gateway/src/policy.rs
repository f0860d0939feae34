//! The pure rules: when a credential's phase is live, and which hosts a
//! phase of a task may reach.

use hermes_crds::gateway::Claims;
use hermes_crds::hosts::HostRule;
use hermes_crds::{HermesProfileSpec, HermesTask, HermesTaskSpec, RunPhase, TaskPhase};
use kube::ResourceExt;

/// The task phase during which a run phase's pod runs.
pub fn running_phase(phase: RunPhase) -> TaskPhase {
    match phase {
        RunPhase::Prepare => TaskPhase::Preparing,
        RunPhase::Implement => TaskPhase::Implementing,
        RunPhase::Review => TaskPhase::Reviewing,
        RunPhase::Publish => TaskPhase::Publishing,
    }
}

/// Whether `task` (as read) shows the claims' phase and attempt running:
/// the same uid (not a task recreated under the name), the phase's running
/// phase, the same infrastructure attempt.
pub fn phase_live(task: &HermesTask, claims: &Claims) -> bool {
    let Some(status) = task.status.as_ref() else {
        return false;
    };
    task.uid().as_deref() == Some(claims.uid.as_str())
        && task.namespace().as_deref() == Some(claims.namespace.as_str())
        && task.name_any() == claims.task
        && status.phase == Some(running_phase(claims.phase))
        && i64::from(status.attempt.unwrap_or(1)) == i64::from(claims.attempt)
}

/// Whether the task has ended (or is gone: `None`).
pub fn ended(task: Option<&HermesTask>, uid: &str) -> bool {
    match task {
        None => true,
        Some(t) => {
            t.uid().as_deref() != Some(uid)
                || t.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(TaskPhase::is_terminal)
        }
    }
}

/// The host rules of a task's phase: the profile's list, and for implement
/// narrowed by the task's own `egressHosts` (its rules that lie within a
/// profile rule; the others are ignored, the operator having refused such a
/// task already).
pub fn effective_hosts(
    profile: &HermesProfileSpec,
    task: &HermesTaskSpec,
    phase: RunPhase,
) -> Vec<HostRule> {
    let base = profile.egress.hosts.get(phase);
    match (phase, &task.egress_hosts) {
        (RunPhase::Implement, Some(own)) => own
            .iter()
            .filter(|r| base.iter().any(|outer| r.within(outer)))
            .cloned()
            .collect(),
        _ => base.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hermes_crds::hosts::{HostPattern, allowed};

    fn rule(name: &str, ports: &[i32]) -> HostRule {
        HostRule {
            name: HostPattern(name.into()),
            ports: ports.to_vec(),
        }
    }

    fn profile(implement: Vec<HostRule>, review: Vec<HostRule>) -> HermesProfileSpec {
        let mut p: HermesProfileSpec = serde_json::from_value(serde_json::json!({
            "agent": {"image": "agent@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["claude"]},
            "reviewer": {"image": "agent@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["claude"]},
            "runner": {"image": "runner@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        p.egress.hosts.implement = implement;
        p.egress.hosts.review = review;
        p
    }

    fn task(egress_hosts: Option<Vec<HostRule>>) -> HermesTaskSpec {
        let mut t: HermesTaskSpec = serde_json::from_value(serde_json::json!({
            "repo": {"url": "https://git.example/r.git", "baseRef": "main"},
            "task": "do it",
            "scope": ["src/**"],
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        t.egress_hosts = egress_hosts;
        t
    }

    #[test]
    fn without_task_rules_the_profile_list_applies() {
        let p = profile(vec![rule("*.npmjs.org", &[443])], vec![]);
        let hosts = effective_hosts(&p, &task(None), RunPhase::Implement);
        assert!(allowed(&hosts, "registry.npmjs.org", 443));
        assert!(effective_hosts(&p, &task(None), RunPhase::Review).is_empty());
    }

    #[test]
    fn task_rules_narrow_implement_and_wider_ones_are_ignored() {
        let p = profile(
            vec![rule("*.npmjs.org", &[443]), rule("github.com", &[443, 22])],
            vec![rule("docs.rs", &[443])],
        );
        let t = task(Some(vec![
            rule("registry.npmjs.org", &[443]),
            rule("evil.com", &[443]),
            rule("github.com", &[80]),
        ]));
        let hosts = effective_hosts(&p, &t, RunPhase::Implement);
        assert!(allowed(&hosts, "registry.npmjs.org", 443));
        assert!(!allowed(&hosts, "other.npmjs.org", 443), "narrowed");
        assert!(!allowed(&hosts, "evil.com", 443), "outside the profile");
        assert!(
            !allowed(&hosts, "github.com", 80),
            "port outside the profile"
        );
        assert!(
            !allowed(&hosts, "github.com", 443),
            "not in the task's list"
        );
        // Only implement is narrowed.
        assert!(allowed(
            &effective_hosts(&p, &t, RunPhase::Review),
            "docs.rs",
            443
        ));
        // An empty list allows nothing.
        assert!(effective_hosts(&p, &task(Some(vec![])), RunPhase::Implement).is_empty());
    }

    #[test]
    fn prepare_and_publish_get_their_own_lists_and_the_task_does_not_narrow_them() {
        let mut p = profile(vec![rule("packages.example.com", &[443])], vec![]);
        p.egress.hosts.prepare = vec![rule("git.example", &[443])];
        p.egress.hosts.publish = vec![rule("push.git.example", &[443])];
        let t = task(Some(vec![rule("packages.example.com", &[443])]));
        let prepare = effective_hosts(&p, &t, RunPhase::Prepare);
        assert!(allowed(&prepare, "git.example", 443));
        assert!(!allowed(&prepare, "push.git.example", 443));
        assert!(!allowed(&prepare, "packages.example.com", 443));
        let publish = effective_hosts(&p, &t, RunPhase::Publish);
        assert!(allowed(&publish, "push.git.example", 443));
        assert!(!allowed(&publish, "git.example", 443));
        let implement = effective_hosts(&p, &t, RunPhase::Implement);
        assert!(!allowed(&implement, "git.example", 443));
    }
}
