//! The operator's state machine against a real API server, Job controller and
//! garbage collector (Tier A). The tests play the kubelet: they end each
//! Job's pod with the termination message a runner step would write.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use hermes_crds::TaskPhase;
use hermes_crds::task::{Decider, Verdict};
use hermes_results::{Failure, FailureReason, Step, StepResult, encode};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn happy_path_runs_every_phase_once_and_records_the_outcome() {
    let Some(w) = World::new("happy").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("flag", json!({})).await;

    w.wait_phase("flag", TaskPhase::Preparing).await;
    // The children exist before the first Job runs.
    let client = w.cluster.client.clone();
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &w.ns.name)
        .get("flag-task")
        .await
        .expect("task ConfigMap");
    assert_eq!(cm.immutable, Some(true));
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &w.ns.name)
        .get("flag-repo")
        .await
        .expect("repo volume");
    // The namespace's deny, and the prepare pod's allow list, shared by the
    // profile's tasks: owned by the profile, selected by the pod's label.
    let policies = Api::<NetworkPolicy>::namespaced(client.clone(), &w.ns.name);
    policies
        .get("hermes-deny")
        .await
        .expect("the namespace's deny");
    let prepare = w.wait_job("flag-prepare").await;
    let hash = prepare
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.as_ref())
        .and_then(|l| l.get("hermes.dev/egress").cloned())
        .expect("the pod's allow list label");
    let allow = policies
        .get(&format!("hermes-egress-{hash}"))
        .await
        .expect("the prepare pod's allow list");
    let owners = allow.metadata.owner_references.unwrap_or_default();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("HermesProfile", "default")
    );
    assert_ne!(owners[0].block_owner_deletion, Some(true));

    w.through_review("flag", true).await;
    w.finish("flag-publish", "publish", &published(true)).await;
    let t = w.wait_phase("flag", TaskPhase::Succeeded).await;

    let s = t.status.clone().expect("status");
    assert_eq!(s.base_commit.as_deref(), Some(BASE));
    assert_eq!(s.head_commit.as_deref(), Some(HEAD));
    assert_eq!(s.branch.as_deref(), Some("hermes/flag"));
    let review = s.review.as_ref().expect("review");
    assert_eq!(review.verdict, Verdict::Approve);
    assert_eq!(review.reviewed_commit, HEAD);
    assert_eq!(review.decided_by, Some(Decider::Reviewer));
    let publish = s.publish.as_ref().expect("publish");
    assert!(publish.pushed);
    assert_eq!(publish.merge_commit.as_deref(), Some(MERGE));
    let usage = s.usage.as_ref().expect("usage");
    assert_eq!(
        (usage.turns, usage.input_tokens, usage.output_tokens),
        (4, 1200, 340)
    );
    assert_eq!(usage.cost_usd.as_deref(), Some("0.0123"));
    assert_eq!(s.agent_version.as_deref(), Some("2.1.197"));
    assert_eq!(
        s.diff
            .as_ref()
            .map(|d| (d.files, d.insertions, d.deletions)),
        Some((1, 3, 1))
    );
    assert_eq!(
        s.task_file_notes.as_deref(),
        Some("The task did not name the flag's help text.")
    );
    assert_eq!(s.task_file_sha256.as_ref().map(String::len), Some(64));
    assert!(s.start_time.is_some() && s.completion_time.is_some());
    assert!(
        s.images
            .iter()
            .any(|i| i.container == "verdict" && i.image_id.is_some())
    );
    assert_eq!(
        condition(&t, "Ready").map(|c| c.status.as_str()),
        Some("True")
    );
    assert!(
        s.conditions
            .iter()
            .all(|c| c.observed_generation == t.metadata.generation)
    );

    assert_eq!(
        w.job_names().await,
        [
            "flag-implement",
            "flag-prepare",
            "flag-publish",
            "flag-review"
        ]
    );
}

#[tokio::test]
async fn a_rejecting_review_ends_rejected_and_publishes_nothing() {
    let Some(w) = World::new("reject").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("bad", json!({})).await;
    w.through_review("bad", false).await;
    let t = w.wait_phase("bad", TaskPhase::Rejected).await;
    assert_eq!(
        t.status
            .as_ref()
            .and_then(|s| s.review.as_ref())
            .map(|r| r.verdict),
        Some(Verdict::Reject)
    );
    assert_eq!(
        condition(&t, "Approved").map(|c| c.reason.as_str()),
        Some("ReviewerRejected")
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!w.job_names().await.contains(&"bad-publish".to_owned()));
}

#[tokio::test]
async fn manual_review_publishes_only_on_approval_of_the_reviewed_commit() {
    let Some(w) = World::new("manual").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("m", json!({"review": {"mode": "manual"}}))
        .await;
    w.through_review("m", true).await;
    w.wait_phase("m", TaskPhase::AwaitingApproval).await;

    // A stale or wrong sha is refused with a condition and an Event.
    w.annotate("m", "hermes.dev/approve", MERGE).await;
    let t = w
        .wait_task("m", "ApprovalMismatch", |t| {
            condition(t, "Approved").is_some_and(|c| c.reason == "ApprovalMismatch")
        })
        .await;
    assert_eq!(
        t.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::AwaitingApproval)
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !w.job_names().await.contains(&"m-publish".to_owned()),
        "no publish on a wrong sha"
    );

    w.annotate("m", "hermes.dev/approve", HEAD).await;
    w.wait_phase("m", TaskPhase::Publishing).await;
    w.finish("m-publish", "publish", &published(true)).await;
    let t = w.wait_phase("m", TaskPhase::Succeeded).await;
    assert_eq!(
        t.status
            .as_ref()
            .and_then(|s| s.review.as_ref())
            .and_then(|r| r.decided_by),
        Some(Decider::Person)
    );
}

#[tokio::test]
async fn manual_rejection_of_the_reviewed_commit_rejects() {
    let Some(w) = World::new("manualno").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("m", json!({"review": {"mode": "manual"}}))
        .await;
    w.through_review("m", true).await;
    w.wait_phase("m", TaskPhase::AwaitingApproval).await;
    w.annotate("m", "hermes.dev/reject", HEAD).await;
    let t = w.wait_phase("m", TaskPhase::Rejected).await;
    assert_eq!(
        condition(&t, "Approved").map(|c| c.reason.as_str()),
        Some("PersonRejected")
    );
}

#[tokio::test]
async fn a_failed_push_succeeds_with_a_warning_and_retry_publish_runs_it_again() {
    let Some(w) = World::new("push").await else {
        return;
    };
    // Retrying a push needs the volume: keep it after the task ends.
    w.create_profile(json!({"volume": {"retainAfterCompletion": "1h"}}))
        .await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("p", json!({})).await;
    w.through_review("p", true).await;
    w.finish("p-publish", "publish", &published(false)).await;
    let t = w.wait_phase("p", TaskPhase::Succeeded).await;
    let warn = condition(&t, "PushFailed").expect("PushFailed condition");
    assert_eq!(warn.status, "True");
    assert!(
        warn.message.contains("protected branch"),
        "{}",
        warn.message
    );
    assert!(
        !t.status
            .as_ref()
            .and_then(|s| s.publish.as_ref())
            .expect("publish")
            .pushed
    );

    w.annotate("p", "hermes.dev/retry-publish", "1").await;
    w.wait_job("p-publish-2").await;
    w.finish("p-publish-2", "publish", &published(true)).await;
    let t = w
        .wait_task("p", "a successful retry", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.publish.as_ref())
                .is_some_and(|p| p.pushed)
        })
        .await;
    assert_eq!(
        t.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Succeeded)
    );
    assert!(condition(&t, "PushFailed").is_none());
    // The same annotation value does not run publish a third time.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!w.job_names().await.contains(&"p-publish-3".to_owned()));
}

#[tokio::test]
async fn a_missing_profile_leaves_the_task_pending_until_it_appears() {
    let Some(w) = World::new("noprofile").await else {
        return;
    };
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("wait", json!({})).await;
    let t = w.wait_phase("wait", TaskPhase::Pending).await;
    assert_eq!(
        condition(&t, "Admitted").map(|c| c.reason.as_str()),
        Some("ProfileNotFound")
    );
    assert!(w.job_names().await.is_empty());
    w.create_profile(json!({})).await;
    w.wait_job("wait-prepare").await;
    w.wait_phase("wait", TaskPhase::Preparing).await;
}

#[tokio::test]
async fn a_task_that_widens_its_profile_fails_without_jobs() {
    let Some(w) = World::new("widen").await else {
        return;
    };
    w.create_profile(json!({"timeouts": {"implement": {"default": "10m", "max": "20m"}}}))
        .await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("greedy", json!({"timeouts": {"implement": "1h"}}))
        .await;
    let t = w.wait_phase("greedy", TaskPhase::Failed).await;
    let ready = condition(&t, "Ready").expect("Ready");
    assert_eq!(ready.reason, "ProfileViolation");
    assert!(
        ready.message.contains("spec.timeouts.implement"),
        "{}",
        ready.message
    );
    assert!(w.job_names().await.is_empty());
}

#[tokio::test]
async fn a_malformed_result_fails_the_task_and_trusts_nothing() {
    let Some(w) = World::new("malformed").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("junk", json!({})).await;
    w.finish_pod(
        "junk-prepare",
        &[],
        (
            "prepare",
            0,
            "{\"v\":1,\"result\":{\"prepared\":{\"baseCommit\":\"HEAD\",\"branch\":\"x\"}}}".into(),
        ),
    )
    .await;
    let t = w.wait_phase("junk", TaskPhase::Failed).await;
    assert_eq!(
        condition(&t, "Prepared").map(|c| c.reason.as_str()),
        Some("ResultInvalid")
    );
    assert!(
        t.status
            .as_ref()
            .and_then(|s| s.base_commit.as_ref())
            .is_none(),
        "nothing recorded from a bad result"
    );
}

#[tokio::test]
async fn a_failed_step_fails_the_task_with_its_reason() {
    let Some(w) = World::new("conflict").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("c", json!({})).await;
    w.through_review("c", true).await;
    let failure = StepResult::Failed(Failure {
        step: Step::Publish,
        reason: FailureReason::MergeConflict,
        message: "conflict in src/lib.rs".into(),
    });
    w.finish_pod(
        "c-publish",
        &[],
        ("publish", 1, encode(&failure).expect("fits")),
    )
    .await;
    let t = w.wait_phase("c", TaskPhase::Failed).await;
    let c = condition(&t, "Published").expect("Published condition");
    assert_eq!(c.reason, "MergeConflict");
    assert!(c.message.contains("src/lib.rs"));
}

#[tokio::test]
async fn cancel_deletes_the_running_job_and_ends_cancelled() {
    let Some(w) = World::new("cancel").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("stop", json!({})).await;
    w.finish("stop-prepare", "prepare", &prepared("stop")).await;
    w.wait_job("stop-implement").await;
    w.annotate("stop", "hermes.dev/cancel", "true").await;
    w.wait_phase("stop", TaskPhase::Cancelled).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while w
        .jobs
        .get_opt("stop-implement")
        .await
        .expect("read")
        .is_some_and(|j| j.metadata.deletion_timestamp.is_none())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the implement Job was not deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_lost_pod_is_retried_as_a_new_attempt_until_the_budget_is_spent() {
    let Some(w) = World::new("retry").await else {
        return;
    };
    w.create_profile(json!({"infrastructureRetries": 1})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("flaky", json!({})).await;
    // The node "loses" the pod: the test deletes it, as an eviction would.
    let pod = w.wait_pod("flaky-prepare").await;
    w.pods
        .delete(
            pod.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .expect("delete pod");
    w.wait_job("flaky-prepare-2").await;
    let t = w
        .wait_task("flaky", "attempt 2", |t| {
            t.status.as_ref().and_then(|s| s.attempt) == Some(2)
        })
        .await;
    assert_eq!(
        t.status.as_ref().and_then(|s| s.phase),
        Some(TaskPhase::Preparing)
    );
    let pod = w.wait_pod("flaky-prepare-2").await;
    w.pods
        .delete(
            pod.metadata.name.as_deref().unwrap(),
            &DeleteParams::default(),
        )
        .await
        .expect("delete pod");
    let t = w.wait_phase("flaky", TaskPhase::Failed).await;
    assert_eq!(
        condition(&t, "Prepared").map(|c| c.reason.as_str()),
        Some("InfrastructureRetriesExhausted")
    );
}

#[tokio::test]
async fn deleting_the_task_removes_every_child() {
    let Some(w) = World::new("delete").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("gone", json!({})).await;
    w.wait_job("gone-prepare").await;
    w.tasks
        .delete("gone", &DeleteParams::foreground())
        .await
        .expect("delete task");
    let client = w.cluster.client.clone();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let jobs = w.job_names().await;
        let cms = Api::<ConfigMap>::namespaced(client.clone(), &w.ns.name)
            .get_opt("gone-task")
            .await
            .expect("cm");
        let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &w.ns.name)
            .get_opt("gone-repo")
            .await
            .expect("pvc");
        // The NetworkPolicies are the profile's and the namespace's, shared
        // by tasks: none goes with one task.
        let nps = Api::<NetworkPolicy>::namespaced(client.clone(), &w.ns.name)
            .list(&ListParams::default())
            .await
            .expect("nps");
        assert!(
            nps.items.iter().all(|n| n
                .metadata
                .owner_references
                .iter()
                .flatten()
                .all(|o| o.kind != "HermesTask")),
            "a NetworkPolicy owned by a task"
        );
        // The PVC has the pvc-protection finalizer; a deletion timestamp is enough.
        let pvc_going = pvc.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
        if jobs.is_empty() && cms.is_none() && pvc_going {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "children left after 180 s: jobs {jobs:?}, ConfigMap {}, claim going {pvc_going}",
            cms.is_some(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_killed_operator_resumes_without_duplicating_anything() {
    let Some(w) = World::new("crash").await else {
        return;
    };
    w.create_profile(json!({})).await;
    w.create_task("k", json!({})).await;
    // In every phase: an operator starts the phase, is SIGKILLed, the phase's
    // pod finishes while no operator runs, and a fresh operator carries on.
    let review = |approve| {
        (
            vec![("context", 0, encode(&context(vec![])).expect("fits"))],
            ("verdict", 0, encode(&verdict(approve)).expect("fits")),
        )
    };
    let steps: Vec<(&str, Vec<Outcome>, Outcome)> = vec![
        (
            "k-prepare",
            vec![],
            ("prepare", 0, encode(&prepared("k")).expect("fits")),
        ),
        (
            "k-implement",
            vec![],
            ("collect", 0, encode(&collected()).expect("fits")),
        ),
        ("k-review", review(true).0, review(true).1),
        (
            "k-publish",
            vec![],
            ("publish", 0, encode(&published(true)).expect("fits")),
        ),
    ];
    for (job, init, main) in steps {
        let mut op = Operator::start(&w.cluster, &w.ns.name);
        w.wait_job(job).await;
        op.kill();
        w.finish_pod(job, &init, main).await;
    }
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.wait_phase("k", TaskPhase::Succeeded).await;
    assert_eq!(
        w.job_names().await,
        ["k-implement", "k-prepare", "k-publish", "k-review"]
    );
    let pods = w.pods.list(&ListParams::default()).await.expect("pods");
    assert_eq!(pods.items.len(), 4, "one pod per Job");
}

#[tokio::test]
async fn two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    let Some(w) = World::new("leader").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let (pa, pb) = (free_port(), free_port());
    let mut a = Operator::start_with(&w.cluster, &w.ns.name, "replica-a", pa);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while http_get(pa, "/metrics").and_then(|m| metric(&m, "hermes_leader")) != Some(1.0) {
        assert!(std::time::Instant::now() < deadline, "replica a never led");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let _b = Operator::start_with(&w.cluster, &w.ns.name, "replica-b", pb);
    w.create_task("l", json!({})).await;
    w.wait_job("l-prepare").await;
    w.wait_phase("l", TaskPhase::Preparing).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let standby = loop {
        if let Some(m) = http_get(pb, "/metrics") {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "replica b never served metrics"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(metric(&standby, "hermes_leader"), Some(0.0), "{standby}");
    assert_eq!(
        metric(&standby, "hermes_reconciles_total"),
        Some(0.0),
        "the standby must not act:\n{standby}"
    );
    assert!(
        http_get(pb, "/readyz").is_some_and(|r| r.starts_with("HTTP/1.1 200")),
        "a standby is ready"
    );
    let leader = http_get(pa, "/metrics").expect("leader metrics");
    assert!(
        metric(&leader, "hermes_reconciles_total").is_some_and(|n| n >= 1.0),
        "{leader}"
    );

    // The leader dies; its lease expires; the standby carries the task on.
    a.kill();
    w.finish("l-prepare", "prepare", &prepared("l")).await;
    w.wait_job("l-implement").await;
    let m = http_get(pb, "/metrics").expect("metrics");
    assert_eq!(metric(&m, "hermes_leader"), Some(1.0), "{m}");
    let lease = kube::api::Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(
        w.cluster.client.clone(),
        &w.ns.name,
    )
    .get("hermes-operator")
    .await
    .expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-b")
    );
}

#[tokio::test]
async fn fifty_tasks_at_once_complete_with_no_duplicate_child() {
    let Some(w) = World::new("fifty").await else {
        return;
    };
    w.create_profile(json!({"concurrency": {"maxRunning": 100}}))
        .await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    let names: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
    for n in &names {
        w.create_task(n, json!({"publish": {"mode": "none"}})).await;
    }
    for n in &names {
        w.finish(&format!("{n}-prepare"), "prepare", &prepared(n))
            .await;
    }
    for n in &names {
        w.finish(&format!("{n}-implement"), "collect", &collected())
            .await;
    }
    for n in &names {
        w.finish_pod(
            &format!("{n}-review"),
            &[("context", 0, encode(&context(vec![])).expect("fits"))],
            ("verdict", 0, encode(&verdict(true)).expect("fits")),
        )
        .await;
    }
    for n in &names {
        w.wait_phase(n, TaskPhase::Succeeded).await;
    }
    let jobs = w.job_names().await;
    assert_eq!(jobs.len(), 150, "three Jobs per task, no more");
    let pods = w.pods.list(&ListParams::default()).await.expect("pods");
    assert_eq!(pods.items.len(), 150, "one pod per Job");
    // Fifty tasks of one profile share its allow lists: the namespace's
    // deny and one per distinct phase egress (four phases at most).
    let nps = Api::<NetworkPolicy>::namespaced(w.cluster.client.clone(), &w.ns.name)
        .list(&ListParams::default())
        .await
        .expect("nps");
    assert!(
        (2..=5).contains(&nps.items.len()),
        "{} NetworkPolicies for fifty tasks",
        nps.items.len()
    );
}

#[tokio::test]
async fn a_task_file_from_a_configmap_is_copied_once_and_waits_for_its_configmap() {
    let Some(w) = World::new("cmref").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task(
        "c",
        json!({"task": null, "taskRef": {"configMapKeyRef": {"name": "tasks", "key": "c.md"}}}),
    )
    .await;
    let t = w.wait_phase("c", TaskPhase::Pending).await;
    let admitted = condition(&t, "Admitted").expect("Admitted");
    assert_eq!(admitted.reason, "TaskFileNotFound");
    assert!(admitted.message.contains("tasks"), "{}", admitted.message);

    let maps: Api<ConfigMap> = Api::namespaced(w.cluster.client.clone(), &w.ns.name);
    let source: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "tasks"},
        "data": {"c.md": "# From a ConfigMap\nDo the thing."},
    }))
    .unwrap();
    maps.create(&kube::api::PostParams::default(), &source)
        .await
        .expect("create source");
    // Other people's ConfigMaps are not watched; the operator looks again every few seconds.
    w.wait_job("c-prepare").await;
    let copy = maps.get("c-task").await.expect("the task's copy");
    assert_eq!(
        copy.data
            .as_ref()
            .and_then(|d| d.get("task.md"))
            .map(String::as_str),
        Some("# From a ConfigMap\nDo the thing.")
    );
    let t = w
        .wait_task("c", "a task file hash", |t| {
            t.status
                .as_ref()
                .and_then(|s| s.task_file_sha256.as_ref())
                .is_some()
        })
        .await;
    let sha = t
        .status
        .as_ref()
        .and_then(|s| s.task_file_sha256.clone())
        .unwrap();
    assert_eq!(
        sha,
        hermes_operator::builders::task_file_sha256("# From a ConfigMap\nDo the thing.")
    );
}

#[tokio::test]
async fn every_phase_transition_is_one_event() {
    let Some(w) = World::new("events").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _op = Operator::start(&w.cluster, &w.ns.name);
    w.create_task("e", json!({})).await;
    w.through_review("e", true).await;
    w.finish("e-publish", "publish", &published(true)).await;
    w.wait_phase("e", TaskPhase::Succeeded).await;
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(w.cluster.client.clone(), &w.ns.name);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let list = events.list(&ListParams::default()).await.expect("events");
        let notes: Vec<String> = list
            .items
            .iter()
            .filter(|e| e.note.as_deref().is_some_and(|n| n.contains(" → ")))
            .filter_map(|e| e.note.clone())
            .collect();
        let wanted = [
            "new → Preparing",
            "Preparing → Implementing",
            "Implementing → Reviewing",
            "Reviewing → Publishing",
            "Publishing → Succeeded: approved and published",
        ];
        if wanted.iter().all(|w| notes.iter().any(|n| n == w)) {
            // One Event per transition, the end included (no second one for it).
            assert_eq!(notes.len(), wanted.len(), "events seen: {notes:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events seen: {notes:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
