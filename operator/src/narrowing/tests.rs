use super::*;
use hermes_crds::HermesTask;
use hermes_crds::profile::HermesProfile;
use serde_json::json;

fn profile(extra: serde_json::Value) -> HermesProfileSpec {
    let mut spec = json!({
        "agent": {"image": "hermes/agent:1", "command": ["claude", "-p"]},
        "reviewer": {"image": "hermes/reviewer:1", "command": ["claude", "-p"]},
        "runner": {"image": "hermes/runner:1"},
        "egress": {"implement": [
            {"cidr": "10.0.0.0/8", "except": ["10.9.0.0/16"], "ports": [{"port": 443}, {"port": 80}]}
        ]},
        "timeouts": {"implement": {"default": "30m", "max": "1h"}},
        "budget": {"default": {"tokens": 1000, "costUsd": "1"}, "max": {"tokens": 5000, "costUsd": "5", "turns": 50}},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let p: HermesProfile = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile", "metadata": {"name": "p"}, "spec": spec
    }))
    .expect("profile");
    p.spec
}

fn task(extra: serde_json::Value) -> HermesTaskSpec {
    let mut spec = json!({
        "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
        "task": "do it",
        "scope": ["src/**"],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let t: HermesTask = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask", "metadata": {"name": "t"}, "spec": spec
    }))
    .expect("task");
    t.spec
}

fn field_of(v: Violation) -> String {
    match v {
        Violation::Widens { field, .. } => field,
        Violation::Invalid(e) => panic!("expected a widening, got {e}"),
    }
}

#[test]
fn a_task_without_limits_gets_the_profile_defaults_and_builtins() {
    let e = effective(&task(json!({})), &profile(json!({}))).expect("fits");
    assert_eq!(e.timeout(RunPhase::Implement), Duration::from_secs(1800));
    assert_eq!(
        e.timeout(RunPhase::Prepare),
        builtin_timeout(RunPhase::Prepare).0
    );
    assert_eq!(
        e.budget,
        EffectiveBudget {
            tokens: Some(1000),
            cost_micros: Some(1_000_000),
            turns: Some(50)
        }
    );
    assert_eq!(e.egress(RunPhase::Implement).len(), 1);
    assert!(e.egress(RunPhase::Review).is_empty());
}

#[test]
fn a_task_may_lower_timeouts_and_budgets() {
    let e = effective(
        &task(json!({"timeouts": {"implement": "10m"}, "budget": {"tokens": 200, "costUsd": "0.5", "turns": 5}})),
        &profile(json!({})),
    )
    .expect("narrower is fine");
    assert_eq!(e.timeout(RunPhase::Implement), Duration::from_secs(600));
    assert_eq!(
        e.budget,
        EffectiveBudget {
            tokens: Some(200),
            cost_micros: Some(500_000),
            turns: Some(5)
        }
    );
}

#[test]
fn a_task_asking_for_a_longer_timeout_is_a_violation_naming_the_field() {
    let v = effective(
        &task(json!({"timeouts": {"implement": "2h"}})),
        &profile(json!({})),
    )
    .expect_err("wider");
    assert_eq!(
        v.to_string(),
        "spec.timeouts.implement: asks for 2h, the profile allows at most 1h"
    );
    // Without profile bounds the built-in cap applies.
    let v = effective(
        &task(json!({"timeouts": {"publish": "1h"}})),
        &profile(json!({})),
    )
    .expect_err("wider");
    assert_eq!(field_of(v), "spec.timeouts.publish");
}

#[test]
fn a_task_asking_for_more_budget_is_a_violation_naming_the_field() {
    for (budget, field) in [
        (json!({"tokens": 5001}), "spec.budget.tokens"),
        (json!({"costUsd": "5.01"}), "spec.budget.costUsd"),
        (json!({"turns": 51}), "spec.budget.turns"),
    ] {
        let v =
            effective(&task(json!({"budget": budget})), &profile(json!({}))).expect_err("wider");
        assert_eq!(field_of(v), field);
    }
}

#[test]
fn task_egress_must_lie_inside_a_profile_rule() {
    let ok = effective(
        &task(json!({"egress": [{"cidr": "10.1.0.0/16", "ports": [{"port": 443}]}]})),
        &profile(json!({})),
    )
    .expect("inside");
    assert_eq!(ok.egress(RunPhase::Implement)[0].cidr.0, "10.1.0.0/16");

    for (rule, field) in [
        (
            json!({"cidr": "11.0.0.0/8", "ports": [{"port": 443}]}),
            "spec.egress[0]",
        ),
        (
            json!({"cidr": "0.0.0.0/0", "ports": [{"port": 443}]}),
            "spec.egress[0]",
        ),
        (
            json!({"cidr": "10.1.0.0/16", "ports": [{"port": 22}]}),
            "spec.egress[0]",
        ),
        (
            json!({"cidr": "10.9.1.0/24", "ports": [{"port": 443}]}),
            "spec.egress[0].cidr",
        ),
    ] {
        let v =
            effective(&task(json!({"egress": [rule]})), &profile(json!({}))).expect_err("wider");
        assert_eq!(field_of(v), field);
    }
}

#[test]
fn profile_exceptions_inside_a_narrowed_rule_are_kept() {
    let e = effective(
        &task(json!({"egress": [{"cidr": "10.0.0.0/12", "ports": [{"port": 80}]}]})),
        &profile(json!({})),
    )
    .expect("inside");
    assert_eq!(
        e.egress(RunPhase::Implement)[0].except,
        vec![Cidr::from("10.9.0.0/16")]
    );
}

#[test]
fn a_task_may_narrow_its_hosts_but_never_add_one() {
    let p = profile(json!({"egress": {"hosts": {"implement": [
        {"name": "*.npmjs.org", "ports": [443]},
        {"name": "github.com", "ports": [443, 22]},
    ]}}}));
    let ok = task(json!({"egressHosts": [
        {"name": "registry.npmjs.org"},
        {"name": "GitHub.com.", "ports": [22]},
    ]}));
    assert!(effective(&ok, &p).is_ok());
    for (hosts, field) in [
        (json!([{"name": "pypi.org"}]), "spec.egressHosts[0]"),
        (
            json!([{"name": "github.com"}, {"name": "github.com", "ports": [80]}]),
            "spec.egressHosts[1]",
        ),
        (json!([{"name": "npmjs.org"}]), "spec.egressHosts[0]"),
    ] {
        let t = task(json!({"egressHosts": hosts}));
        assert_eq!(field_of(effective(&t, &p).expect_err("widens")), field);
    }
}

#[test]
fn a_git_phase_through_the_proxy_needs_an_https_remote_the_profile_lists() {
    let p = profile(json!({"egress": {"hosts": {
        "prepare": [{"name": "git.example.com"}],
        "publish": [{"name": "*.example.com", "ports": [443, 8443]}],
    }}}));
    for url in [
        "https://git.example.com/o/r.git",
        "https://bot@GIT.example.com:443/o/r.git",
    ] {
        let t = task(json!({"repo": {"url": url, "baseRef": "main"}}));
        assert!(effective(&t, &p).is_ok(), "{url}");
    }
    for url in [
        "http://git.example.com/o/r.git",
        "ssh://git@git.example.com/o/r.git",
        "https://other.example.org/o/r.git",
        "https://git.example.com:8443/o/r.git",
        "https://[2001:db8::1]/o/r.git",
    ] {
        let t = task(json!({"repo": {"url": url, "baseRef": "main"}}));
        assert_eq!(
            field_of(effective(&t, &p).expect_err(url)),
            "spec.repo.url",
            "{url}"
        );
    }
    // Without hosts for the git phases, any remote goes (by CIDR rules).
    let t = task(json!({"repo": {"url": "http://git.example.com/o/r.git", "baseRef": "main"}}));
    assert!(effective(&t, &profile(json!({}))).is_ok());
}
