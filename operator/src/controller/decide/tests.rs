use super::*;
use hermes_crds::profile::HermesProfile;
use hermes_results::{
    AgentReport, Collected, ContextReport, DiffStats, FindingSource as RS, Prepared,
    PublishMode as RM, Published, Severity as RSev, VerdictReport, encode,
};
use serde_json::json;

const BASE: &str = "89abcdef0123456789abcdef0123456789abcdef";
const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

fn t(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).expect("a time"))
}

fn task(extra: serde_json::Value, annotations: serde_json::Value) -> HermesTask {
    let mut spec = json!({
        "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
        "task": "do it",
        "scope": ["src/**"],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u", "generation": 1, "annotations": annotations},
        "spec": spec,
    }))
    .expect("task")
}

fn profile(extra: serde_json::Value) -> HermesProfileSpec {
    let mut spec = json!({
        "agent": {"image": "a:1", "command": ["claude"]},
        "reviewer": {"image": "r:1", "command": ["claude"]},
        "runner": {"image": "x:1"},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    let p: HermesProfile = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile", "metadata": {"name": "default"}, "spec": spec,
    }))
    .expect("profile");
    p.spec
}

fn observed(jobs: Vec<((RunPhase, u32), JobState)>) -> Observed {
    Observed {
        profile: Some(profile(json!({}))),
        task_text: Some(TaskText::Ready("do it".into())),
        jobs: jobs
            .into_iter()
            .map(|(k, state)| {
                (
                    k,
                    JobView {
                        name: format!("t-{}-{}", k.0.as_str(), k.1),
                        state,
                        images: vec![],
                    },
                )
            })
            .collect(),
        repo_volume_exists: true,
        admission: Admission::Granted,
        gateway: None,
    }
}

fn ok(main: StepResult) -> JobState {
    JobState::Succeeded {
        main: Some(encode(&main).expect("fits")),
        context: None,
    }
}

fn prepared() -> JobState {
    ok(StepResult::Prepared(Prepared {
        base_commit: BASE.into(),
        branch: "hermes/t".into(),
        task_file_sha256: None,
    }))
}

fn collected(exit_code: i32) -> JobState {
    ok(StepResult::Collected(Collected {
        head_commit: HEAD.into(),
        commits: 1,
        diff: DiffStats::default(),
        out_of_scope: vec![],
        agent: Some(AgentReport {
            exit_code,
            ..AgentReport::default()
        }),
        truncated: false,
    }))
}

fn reviewed(approve: bool, policy_reject: bool) -> JobState {
    let findings = if policy_reject {
        vec![hermes_results::Finding {
            severity: RSev::Reject,
            source: RS::Policy,
            code: "protectedPath".into(),
            path: Some(".github/workflows/ci.yml".into()),
            message: "changes CI configuration".into(),
        }]
    } else {
        vec![]
    };
    let ctx = StepResult::Context(ContextReport {
        base_commit: BASE.into(),
        head_commit: HEAD.into(),
        diff: DiffStats::default(),
        out_of_scope: vec![],
        findings: findings.clone(),
        truncated: false,
    });
    let verdict = StepResult::Verdict(VerdictReport {
        verdict: if approve {
            hermes_results::Verdict::Approve
        } else {
            hermes_results::Verdict::Reject
        },
        reviewed_commit: HEAD.into(),
        summary: "s".into(),
        findings,
        task_file_notes: None,
        reviewer: None,
        truncated: false,
    });
    JobState::Succeeded {
        main: Some(encode(&verdict).expect("fits")),
        context: Some(encode(&ctx).expect("fits")),
    }
}

/// Runs decide repeatedly, feeding the status back, as successive reconciles would.
fn settle(mut task: HermesTask, obs: &Observed, now: &Time) -> (HermesTask, Vec<Plan>) {
    let mut plans = Vec::new();
    for _ in 0..6 {
        let plan = decide(&task, obs, now);
        let changed = task.status.as_ref() != Some(&plan.status);
        task.status = Some(plan.status.clone());
        plans.push(plan);
        if !changed {
            break;
        }
    }
    (task, plans)
}

fn phase(t: &HermesTask) -> Option<TaskPhase> {
    t.status.as_ref().and_then(|s| s.phase)
}

#[test]
fn a_new_task_starts_prepare_with_its_children() {
    let plan = decide(&task(json!({}), json!({})), &observed(vec![]), &t(0));
    assert_eq!(plan.create_job, Some((RunPhase::Prepare, 1)));
    assert!(plan.ensure_children);
    assert_eq!(plan.status.phase, Some(TaskPhase::Preparing));
    assert_eq!(plan.task_text.as_deref(), Some("do it"));
    assert!(
        plan.events
            .iter()
            .any(|e| e.reason == "Preparing" && e.note == "new → Preparing")
    );
}

#[test]
fn deciding_again_on_the_same_world_changes_nothing() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), JobState::Running),
    ]);
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Implementing));
    let last = plans.last().expect("a plan");
    assert!(last.events.is_empty(), "{:?}", last.events);
    assert_eq!(last.create_job, None);
}

#[test]
fn an_agent_error_fails_the_task_without_retry() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(1)),
    ]);
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Failed));
    let c = conditions::get(
        &task.status.as_ref().expect("status").conditions,
        types::IMPLEMENTED,
    )
    .expect("cond");
    assert_eq!(c.reason, reasons::AGENT_FAILED);
}

#[test]
fn a_timeout_fails_without_retry() {
    let obs = observed(vec![((RunPhase::Prepare, 1), JobState::TimedOut)]);
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Failed));
    assert!(
        plans
            .iter()
            .all(|p| p.create_job.is_none() || p.create_job == Some((RunPhase::Prepare, 1)))
    );
}

#[test]
fn a_policy_rejection_rejects_even_in_manual_mode_and_even_if_the_model_approved() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, true)),
    ]);
    for mode in ["auto", "manual"] {
        let (task, _) = settle(
            task(
                json!({"review": {"mode": mode}}),
                json!({"hermes.dev/approve": HEAD}),
            ),
            &obs,
            &t(0),
        );
        assert_eq!(phase(&task), Some(TaskPhase::Rejected), "{mode}");
        let c = conditions::get(
            &task.status.as_ref().expect("status").conditions,
            types::APPROVED,
        )
        .expect("cond");
        assert_eq!(c.reason, reasons::POLICY_REJECTED, "{mode}");
    }
}

#[test]
fn an_approval_mismatch_warns_once_not_on_every_reconcile() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, false)),
    ]);
    let (task, plans) = settle(
        task(
            json!({"review": {"mode": "manual"}}),
            json!({"hermes.dev/approve": BASE}),
        ),
        &obs,
        &t(0),
    );
    assert_eq!(phase(&task), Some(TaskPhase::AwaitingApproval));
    let warnings: usize = plans
        .iter()
        .map(|p| {
            p.events
                .iter()
                .filter(|e| e.reason == "ApprovalMismatch")
                .count()
        })
        .sum();
    assert_eq!(warnings, 1);
    let again = decide(&task, &obs, &t(10));
    assert!(again.events.is_empty());
    assert_eq!(again.status, task.status.clone().expect("status"));
}

#[test]
fn publish_none_succeeds_without_a_publish_job() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, false)),
    ]);
    let (task, plans) = settle(
        task(json!({"publish": {"mode": "none"}}), json!({})),
        &obs,
        &t(0),
    );
    assert_eq!(phase(&task), Some(TaskPhase::Succeeded));
    assert!(
        plans
            .iter()
            .all(|p| p.create_job.map(|j| j.0) != Some(RunPhase::Publish))
    );
}

#[test]
fn the_volume_is_deleted_after_its_retention() {
    let push_failed = ok(StepResult::Published(Published {
        mode: RM::Merge,
        merge_commit: None,
        pushed: false,
        push_error: Some("denied".into()),
    }));
    let mut obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, false)),
        ((RunPhase::Publish, 1), push_failed),
    ]);
    obs.profile = Some(profile(json!({"volume": {"retainAfterCompletion": "1h"}})));
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Succeeded));
    let early = decide(&task, &obs, &t(600));
    assert!(!early.delete_volume);
    assert_eq!(early.requeue_after, Some(Duration::from_secs(3000)));
    assert!(decide(&task, &obs, &t(3600)).delete_volume);
}

#[test]
fn retry_publish_without_the_volume_is_refused_clearly() {
    let push_failed = ok(StepResult::Published(Published {
        mode: RM::Merge,
        merge_commit: None,
        pushed: false,
        push_error: Some("denied".into()),
    }));
    let mut obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, false)),
        ((RunPhase::Publish, 1), push_failed),
    ]);
    let (mut task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    obs.repo_volume_exists = false;
    task.metadata.annotations =
        Some([("hermes.dev/retry-publish".to_owned(), "now".to_owned())].into());
    let plan = decide(&task, &obs, &t(5));
    assert_eq!(plan.create_job, None);
    assert_eq!(plan.status.phase, Some(TaskPhase::Succeeded));
    let c = conditions::get(&plan.status.conditions, types::PUSH_FAILED).expect("cond");
    assert_eq!(c.reason, reasons::RETRY_REFUSED);
}

#[test]
fn a_result_for_the_wrong_step_is_refused() {
    let obs = observed(vec![((RunPhase::Prepare, 1), collected(0))]);
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Failed));
    let c = conditions::get(
        &task.status.as_ref().expect("status").conditions,
        types::PREPARED,
    )
    .expect("cond");
    assert_eq!(c.reason, reasons::RESULT_INVALID);
}

#[test]
fn a_verdict_about_another_commit_than_the_recomputed_head_is_refused() {
    let verdict = StepResult::Verdict(VerdictReport {
        verdict: hermes_results::Verdict::Approve,
        reviewed_commit: BASE.into(),
        summary: "s".into(),
        findings: vec![],
        task_file_notes: None,
        reviewer: None,
        truncated: false,
    });
    let JobState::Succeeded { context, .. } = reviewed(true, false) else {
        unreachable!()
    };
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        (
            (RunPhase::Review, 1),
            JobState::Succeeded {
                main: Some(encode(&verdict).expect("fits")),
                context,
            },
        ),
    ]);
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Failed));
}

#[test]
fn transition_times_change_only_when_a_condition_flips() {
    let obs = observed(vec![((RunPhase::Prepare, 1), JobState::Running)]);
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    let later = decide(&task, &obs, &t(100));
    let admitted = |s: &HermesTaskStatus| {
        conditions::get(&s.conditions, types::ADMITTED).map(|c| c.last_transition_time.clone())
    };
    assert_eq!(
        admitted(&later.status),
        admitted(task.status.as_ref().expect("status"))
    );
    assert_eq!(
        Some(&later.status),
        task.status.as_ref(),
        "no status write when nothing changed"
    );
}

#[test]
fn policy_findings_count_even_when_the_verdict_drops_them() {
    // context found a reject-severity policy problem; the verdict (which the
    // reviewer could have influenced) approves and lists nothing.
    let JobState::Succeeded { context, .. } = reviewed(true, true) else {
        unreachable!()
    };
    let verdict = StepResult::Verdict(VerdictReport {
        verdict: hermes_results::Verdict::Approve,
        reviewed_commit: HEAD.into(),
        summary: "Looks fine.".into(),
        findings: vec![],
        task_file_notes: None,
        reviewer: None,
        truncated: false,
    });
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        (
            (RunPhase::Review, 1),
            JobState::Succeeded {
                main: Some(encode(&verdict).expect("fits")),
                context,
            },
        ),
    ]);
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Rejected));
    let review = task
        .status
        .as_ref()
        .and_then(|s| s.review.as_ref())
        .expect("review");
    assert_eq!(review.verdict, Verdict::Reject);
    assert!(
        review
            .findings
            .iter()
            .any(|f| f.path.as_deref() == Some(".github/workflows/ci.yml"))
    );
    assert!(
        plans
            .iter()
            .all(|p| p.create_job.map(|j| j.0) != Some(RunPhase::Publish))
    );
}

#[test]
fn a_task_without_a_place_waits_in_queued_without_jobs() {
    let task = task(json!({}), json!({}));
    let mut obs = observed(vec![]);
    obs.admission = Admission::Waiting {
        reason: reasons::MAX_RUNNING,
        message: "all taken".into(),
    };
    let plan = decide(&task, &obs, &t(0));
    assert_eq!(plan.status.phase, Some(TaskPhase::Queued));
    assert!(plan.create_job.is_none() && !plan.ensure_children);
    assert!(
        plan.status.start_time.is_none(),
        "a queued task has not started"
    );
    let c = conditions::get(&plan.status.conditions, types::SCHEDULED).expect("Scheduled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::MAX_RUNNING)
    );
    // Once granted, it starts and says so.
    let mut queued = task.clone();
    queued.status = Some(plan.status);
    obs.admission = Admission::Granted;
    let plan = decide(&queued, &obs, &t(5));
    assert_eq!(plan.create_job, Some((RunPhase::Prepare, 1)));
    assert_eq!(plan.status.phase, Some(TaskPhase::Preparing));
    let c = conditions::get(&plan.status.conditions, types::SCHEDULED).expect("Scheduled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", reasons::STARTED)
    );
}

#[test]
fn a_blocked_task_fails_with_the_dependency_reason() {
    let task = task(json!({"dependsOn": ["a"]}), json!({}));
    let mut obs = observed(vec![]);
    obs.admission = Admission::Blocked {
        reason: reasons::DEPENDENCY_FAILED,
        message: "dependency a ended Rejected".into(),
    };
    let plan = decide(&task, &obs, &t(0));
    assert_eq!(plan.status.phase, Some(TaskPhase::Failed));
    assert!(plan.create_job.is_none());
    let ready = conditions::get(&plan.status.conditions, types::READY).expect("Ready");
    assert_eq!(ready.reason, reasons::DEPENDENCY_FAILED);
    assert!(ready.message.contains("dependency a ended Rejected"));
}

#[test]
fn an_approved_task_waits_for_a_place_to_publish() {
    let task = task(json!({"review": {"mode": "manual"}}), json!({}));
    let jobs = vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
        ((RunPhase::Review, 1), reviewed(true, false)),
    ];
    let obs = observed(jobs.clone());
    let (awaiting, _) = settle(task, &obs, &t(0));
    assert_eq!(phase(&awaiting), Some(TaskPhase::AwaitingApproval));
    let mut approved = awaiting.clone();
    approved
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(ANNOTATION_APPROVE.into(), HEAD.into());
    let mut full = observed(jobs);
    full.admission = Admission::Waiting {
        reason: reasons::MAX_RUNNING,
        message: "all taken".into(),
    };
    let plan = decide(&approved, &full, &t(10));
    assert_eq!(plan.status.phase, Some(TaskPhase::AwaitingApproval));
    assert!(plan.create_job.is_none());
    assert!(conditions::is_true(
        &plan.status.conditions,
        types::APPROVED
    ));
    let c = conditions::get(&plan.status.conditions, types::SCHEDULED).expect("Scheduled");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", reasons::MAX_RUNNING)
    );
    full.admission = Admission::Granted;
    let mut waiting = approved.clone();
    waiting.status = Some(plan.status);
    let plan = decide(&waiting, &full, &t(20));
    assert_eq!(plan.create_job, Some((RunPhase::Publish, 1)));
    assert_eq!(plan.status.phase, Some(TaskPhase::Publishing));
}

fn gateway_profile() -> HermesProfileSpec {
    profile(json!({
        "model": {"agent": {"url": "https://api.example.com", "credential": "anthropic"}},
        "budget": {"default": {"tokens": 1000}},
    }))
}

fn endpoint() -> crate::gateway::Endpoint {
    crate::gateway::Endpoint {
        address: "10.96.0.40".into(),
        model_port: 8080,
        proxy_port: 3128,
        namespace: "hermes-system".into(),
        pod_labels: BTreeMap::from([("app".to_owned(), "gw".to_owned())]),
        model_target_port: 8080,
        proxy_target_port: 3128,
    }
}

fn counted(
    instance: &str,
    phase: RunPhase,
    turns: u64,
    tokens: u64,
    refused: u64,
) -> ((String, RunPhase), crate::gateway::Counted) {
    (
        (instance.to_owned(), phase),
        crate::gateway::Counted {
            figures: Figures {
                turns,
                input_tokens: tokens / 2,
                output_tokens: tokens - tokens / 2,
                cost_pico_usd: tokens * 3_000_000,
                ..Figures::default()
            },
            refused,
        },
    )
}

#[test]
fn a_gateway_profile_without_a_gateway_fails_clearly_and_starts_nothing() {
    let mut obs = observed(vec![]);
    obs.profile = Some(gateway_profile());
    let plan = decide(&task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(plan.status.phase, Some(TaskPhase::Failed));
    assert!(plan.create_job.is_none());
    let ready = conditions::get(&plan.status.conditions, types::READY).expect("ready");
    assert_eq!(ready.reason, reasons::GATEWAY_NOT_CONFIGURED);
}

#[test]
fn a_gateway_whose_service_is_unknown_makes_the_task_wait() {
    let mut obs = observed(vec![]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView::default());
    let plan = decide(&task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(plan.status.phase, Some(TaskPhase::Pending));
    assert!(plan.create_job.is_none());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(5)));
}

#[test]
fn usage_is_the_gateways_count_summed_over_instances_and_the_agents_report_is_only_kept() {
    let mut obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
    ]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: [
            counted("a", RunPhase::Implement, 3, 300, 0),
            counted("b", RunPhase::Implement, 1, 100, 0),
            counted("a", RunPhase::Review, 1, 50, 0),
        ]
        .into_iter()
        .collect(),
    });
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Reviewing));
    assert!(plans.iter().all(|p| p.gateway == Some(endpoint())));
    let usage = task
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .expect("usage");
    assert_eq!(usage.source, Some(UsageSource::Gateway));
    assert_eq!(
        (usage.turns, usage.input_tokens, usage.output_tokens),
        (4, 200, 200)
    );
    assert_eq!(usage.cost_usd.as_deref(), Some("0.0012"));
    assert_eq!(usage.meters.len(), 3);
    assert_eq!(usage.review.as_ref().map(|r| r.turns), Some(1));
    // The agent reported zeros; kept beside, never used.
    assert_eq!(usage.reported.as_ref().map(|r| r.turns), Some(0));
}

#[test]
fn an_older_read_of_an_instance_never_lowers_its_meter() {
    let mut obs = observed(vec![((RunPhase::Prepare, 1), prepared())]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: [counted("a", RunPhase::Implement, 5, 500, 0)]
            .into_iter()
            .collect(),
    });
    let (mut task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: [counted("a", RunPhase::Implement, 4, 400, 0)]
            .into_iter()
            .collect(),
    });
    let plan = decide(&task, &obs, &t(1));
    task.status = Some(plan.status);
    let usage = task
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .expect("usage");
    assert_eq!(usage.turns, 5);
}

#[test]
fn a_budget_refusal_fails_implement_with_budget_exceeded_and_the_figures() {
    for exit_code in [0, 1] {
        let mut obs = observed(vec![
            ((RunPhase::Prepare, 1), prepared()),
            ((RunPhase::Implement, 1), collected(exit_code)),
        ]);
        obs.profile = Some(gateway_profile());
        obs.gateway = Some(GatewayView {
            endpoint: Some(endpoint()),
            usage: [counted("a", RunPhase::Implement, 7, 1200, 1)]
                .into_iter()
                .collect(),
        });
        let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
        assert_eq!(
            phase(&task),
            Some(TaskPhase::Failed),
            "exit code {exit_code}"
        );
        assert!(
            plans
                .iter()
                .all(|p| p.create_job != Some((RunPhase::Review, 1)))
        );
        let c = conditions::get(
            &task.status.as_ref().expect("status").conditions,
            types::IMPLEMENTED,
        )
        .expect("cond");
        assert_eq!(c.reason, reasons::BUDGET_EXCEEDED);
        assert!(c.message.contains("tokens 1200 of 1000"), "{}", c.message);
        assert!(c.message.contains("refused 1"), "{}", c.message);
    }
}

#[test]
fn reaching_the_budget_on_the_last_turn_without_a_refusal_is_not_a_failure() {
    let mut obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
    ]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: [counted("a", RunPhase::Implement, 7, 1000, 0)]
            .into_iter()
            .collect(),
    });
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Reviewing));
}

#[test]
fn without_the_gateway_usage_is_the_agents_report() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
    ]);
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    let usage = task
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .expect("usage");
    assert_eq!(usage.source, Some(UsageSource::Agent));
    assert!(usage.meters.is_empty());
}

#[test]
fn with_the_gateway_an_agent_whose_requests_never_got_through_does_not_report_its_own_usage() {
    let mut obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), collected(0)),
    ]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: Default::default(),
    });
    let (task, _) = settle(task(json!({}), json!({})), &obs, &t(0));
    let usage = task
        .status
        .as_ref()
        .and_then(|s| s.usage.clone())
        .expect("usage");
    assert_eq!(usage.source, Some(UsageSource::Gateway));
    assert_eq!((usage.turns, usage.cost_usd.as_deref()), (0, Some("0")));
    assert!(usage.reported.is_some());
}

#[test]
fn a_queued_gateway_task_shows_no_usage() {
    let mut obs = observed(vec![]);
    obs.profile = Some(gateway_profile());
    obs.gateway = Some(GatewayView {
        endpoint: Some(endpoint()),
        usage: Default::default(),
    });
    let plan = decide(&task(json!({}), json!({})), &obs, &t(0));
    assert!(plan.status.usage.is_none());
}

/// An agent's report out of form (its version or cost) is recorded
/// nowhere: no version, no reported usage, a warning Event
/// saying why; the phase goes on.
#[test]
fn an_ignored_agent_report_is_recorded_nowhere_and_warned_about() {
    let ignored = ok(StepResult::Collected(Collected {
        head_commit: HEAD.into(),
        commits: 1,
        diff: DiffStats::default(),
        out_of_scope: vec![],
        agent: Some(AgentReport {
            turns: 9,
            // Decoded as the operator reads it: out of form, so ignored.
            version: Some("2.1.197; curl http://evil".into()),
            ..AgentReport::default()
        }),
        truncated: false,
    }));
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        ((RunPhase::Implement, 1), ignored),
    ]);
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Reviewing));
    let status = task.status.as_ref().expect("status");
    assert_eq!(status.agent_version, None);
    assert!(
        status
            .usage
            .as_ref()
            .is_none_or(|u| u.reported.is_none() && u.turns == 0),
        "{:?}",
        status.usage
    );
    let warned: Vec<_> = plans
        .iter()
        .flat_map(|p| &p.events)
        .filter(|e| e.reason == "AgentReportIgnored")
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].warning && warned[0].note.contains("its version is not a version"));
}

/// A phase that ran out of a resource at its own limits fails at once with
/// `ResourceExhausted`, naming it: no second attempt (a disk-filling agent
/// would fill the next one too).
#[test]
fn a_phase_that_exhausts_its_resources_fails_without_a_retry() {
    let obs = observed(vec![
        ((RunPhase::Prepare, 1), prepared()),
        (
            (RunPhase::Implement, 1),
            JobState::Exhausted {
                resource: "ephemeral-storage",
                why: "Usage of EmptyDir volume \"scratch\" exceeds the limit \"256Mi\".".into(),
                running: false,
            },
        ),
    ]);
    let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
    assert_eq!(phase(&task), Some(TaskPhase::Failed));
    assert!(
        plans
            .iter()
            .all(|p| p.create_job != Some((RunPhase::Implement, 2)))
    );
    let status = task.status.as_ref().expect("status");
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(failed.reason, "ResourceExhausted", "{failed:?}");
    assert!(failed.message.contains("ephemeral-storage"), "{failed:?}");
}

/// An exhaustion seen while the pod is still in its course (an init
/// container OOM-killed with exit code 0 leaves it Pending) ends the task
/// and deletes the Job, which would otherwise hold the node until its
/// deadline; one already ended keeps its pod for the logs.
#[test]
fn an_exhaustion_seen_while_the_pod_is_in_its_course_deletes_the_job() {
    for running in [true, false] {
        let obs = observed(vec![
            ((RunPhase::Prepare, 1), prepared()),
            (
                (RunPhase::Implement, 1),
                JobState::Exhausted {
                    resource: "memory",
                    why: "container agent was OOM-killed".into(),
                    running,
                },
            ),
        ]);
        let (task, plans) = settle(task(json!({}), json!({})), &obs, &t(0));
        assert_eq!(phase(&task), Some(TaskPhase::Failed));
        let deleted = plans.iter().any(|p| !p.delete_jobs.is_empty());
        assert_eq!(deleted, running, "{plans:?}");
    }
}
