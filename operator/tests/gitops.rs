//! GitOps on Tier A, with the operator as a real process: the same manifests
//! applied over and over by server-side apply, as Argo CD
//! (`argocd-controller`) and Flux (`kustomize-controller`) do on every sync,
//! while the task runs; and a manifest's deletion (a prune) taking the task
//! and every child with it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use hermes_crds::task::ANNOTATION_APPROVE;
use hermes_crds::{HermesProfile, HermesTask, TaskPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use support::kubelet::Kubelet;
use support::*;

/// The field managers the two GitOps controllers apply with, and what each
/// adds to the objects it manages.
const GITOPS: [(&str, &str); 2] = [
    ("argocd-controller", "argo"),
    ("kustomize-controller", "flux"),
];

fn tracking(tool: &str, name: &str) -> Value {
    match tool {
        "argo" => {
            json!({"annotations": {"argocd.argoproj.io/tracking-id": format!("tasks:hermes.dev/HermesTask:ns/{name}")}})
        }
        _ => {
            json!({"labels": {"kustomize.toolkit.fluxcd.io/name": "tasks", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}})
        }
    }
}

fn task_manifest(tool: &str, name: &str) -> Value {
    let mut meta = tracking(tool, name);
    meta["name"] = json!(name);
    json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": meta,
        "spec": {
            "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
            "task": "# Add a flag\nDone when the tests pass.",
            "scope": ["src/**"],
            "review": {"mode": "manual"},
        }
    })
}

fn profile_manifest(tool: &str) -> Value {
    let mut meta = tracking(tool, "default");
    meta["name"] = json!("default");
    json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile",
        "metadata": meta,
        "spec": {
            "agent": {"image": "hermes/agent:test", "command": ["claude", "-p"]},
            "reviewer": {"image": "hermes/reviewer:test", "command": ["claude", "-p"]},
            "runner": {"image": "hermes/runner:test"},
            "egress": {"implement": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}]}]},
            "secrets": {"model": "model-key", "gitRead": "git-read", "gitPush": "git-push"},
        }
    })
}

fn phase(t: &HermesTask) -> Option<TaskPhase> {
    t.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_and_flux_applying_a_hundred_times_while_tasks_run_change_nothing() {
    for (manager, tool) in GITOPS {
        let Some(w) = World::new(&format!("gitops-{tool}")).await else {
            return;
        };
        let _operator = Operator::start(&w.cluster, &w.ns.name);
        let _kubelet = Kubelet::start(w.cluster.client.clone(), &w.ns.name, 4);
        let profiles: Api<HermesProfile> = Api::namespaced(w.cluster.client.clone(), &w.ns.name);
        let name = format!("sync-{tool}");
        // Strict: a sync that conflicted with the operator's fields would fail.
        let apply = PatchParams::apply(manager);
        let mut approved_at = None;
        let mut seen_phases = Vec::new();
        for i in 0..100 {
            profiles
                .patch("default", &apply, &Patch::Apply(profile_manifest(tool)))
                .await
                .unwrap_or_else(|e| panic!("{manager} sync {i}: profile: {e}"));
            let t = w
                .tasks
                .patch(&name, &apply, &Patch::Apply(task_manifest(tool, &name)))
                .await
                .unwrap_or_else(|e| panic!("{manager} sync {i}: task: {e}"));
            if seen_phases.last() != Some(&phase(&t)) {
                seen_phases.push(phase(&t));
            }
            // A person approves the reviewed commit between two syncs.
            if approved_at.is_none()
                && phase(&t) == Some(TaskPhase::AwaitingApproval)
                && let Some(commit) = t
                    .status
                    .as_ref()
                    .and_then(|s| s.review.as_ref())
                    .map(|r| r.reviewed_commit.clone())
            {
                w.tasks
                    .patch(
                        &name,
                        &PatchParams {
                            field_manager: Some("kubectl-annotate".into()),
                            ..PatchParams::default()
                        },
                        &Patch::Merge(
                            &json!({"metadata": {"annotations": {ANNOTATION_APPROVE: commit}}}),
                        ),
                    )
                    .await
                    .expect("approve");
                approved_at = Some(i);
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let done = w.wait_phase(&name, TaskPhase::Succeeded).await;
        assert!(
            approved_at.is_some(),
            "{manager}: the task never awaited approval during the syncs: {seen_phases:?}"
        );
        assert!(
            seen_phases.len() >= 3,
            "{manager}: the syncs saw the task run: {seen_phases:?}"
        );

        // Syncs after the end: no write at all (the same resourceVersion).
        let before = w.tasks.get(&name).await.expect("task");
        for i in 0..10 {
            let t = w
                .tasks
                .patch(&name, &apply, &Patch::Apply(task_manifest(tool, &name)))
                .await
                .expect("sync after the end");
            assert_eq!(
                t.metadata.resource_version, before.metadata.resource_version,
                "{manager}: sync {i} after the end wrote the task"
            );
        }

        // No re-run: one Job per phase, first attempt only; the spec never changed.
        assert_eq!(
            done.metadata.generation,
            Some(1),
            "{manager}: the spec changed"
        );
        let mut jobs: Vec<String> = Api::<Job>::namespaced(w.cluster.client.clone(), &w.ns.name)
            .list(&ListParams::default())
            .await
            .expect("jobs")
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        jobs.sort();
        let expected: Vec<String> = ["implement", "prepare", "publish", "review"]
            .iter()
            .map(|p| format!("{name}-{p}"))
            .collect();
        assert_eq!(jobs, expected, "{manager}: Jobs");
        // The approval (another manager's field) survived every sync.
        assert!(
            done.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(ANNOTATION_APPROVE))
        );
        // The GitOps manager owns spec and its tracking metadata, never status;
        // the operator owns status only.
        let fields = done.metadata.managed_fields.clone().unwrap_or_default();
        let gitops = fields
            .iter()
            .find(|f| f.manager.as_deref() == Some(manager))
            .expect("the GitOps manager's entry");
        assert_eq!(gitops.operation.as_deref(), Some("Apply"));
        assert_eq!(gitops.subresource.as_deref(), None);
        let owned = serde_json::to_string(&gitops.fields_v1).unwrap();
        assert!(
            owned.contains("f:spec") && !owned.contains("f:status"),
            "{manager} owns: {owned}"
        );
        for f in fields.iter().filter(|f| {
            f.manager.as_deref() != Some(manager)
                && f.manager.as_deref() != Some("kubectl-annotate")
        }) {
            assert_eq!(
                f.subresource.as_deref(),
                Some("status"),
                "{:?} wrote outside status",
                f.manager
            );
        }
        let status = done.status.clone().expect("status");
        assert_eq!(
            status.review.as_ref().map(|r| r.reviewed_commit.as_str()),
            Some(HEAD)
        );
        assert!(status.publish.as_ref().is_some_and(|p| p.pushed));
    }
}

#[tokio::test]
async fn deleting_the_manifest_deletes_the_task_and_every_child() {
    let Some(w) = World::new("gitops-prune").await else {
        return;
    };
    w.create_profile(json!({})).await;
    let _operator = Operator::start(&w.cluster, &w.ns.name);
    let name = "pruned";
    w.tasks
        .patch(
            name,
            &PatchParams::apply("argocd-controller"),
            &Patch::Apply(task_manifest("argo", name)),
        )
        .await
        .expect("sync");
    // No kubelet: the task stays in prepare with all its children.
    w.wait_job(&format!("{name}-prepare")).await;
    let client = w.cluster.client.clone();
    let ns = w.ns.name.as_str();
    let selector = format!("hermes.dev/task={name}");
    let lp = ListParams::default().labels(&selector);
    let count = || async {
        let jobs = Api::<Job>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .expect("jobs")
            .items
            .len();
        let cms = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .expect("cms")
            .items
            .len();
        let pvcs = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .list(&lp)
            .await
            .expect("pvcs")
            .items
            .len();
        (jobs, cms, pvcs)
    };
    let (jobs, cms, pvcs) = count().await;
    assert!(
        jobs == 1 && cms >= 1 && pvcs == 1,
        "children before: {:?}",
        (jobs, cms, pvcs)
    );

    // Argo CD prunes with foreground deletion: the task goes once its children have.
    w.tasks
        .delete(name, &DeleteParams::foreground())
        .await
        .expect("prune");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let gone = w.tasks.get_opt(name).await.expect("read task").is_none();
        let left = count().await;
        if gone && left == (0, 0, 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the prune: task gone {gone}, children left {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
