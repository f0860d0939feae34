//! Hermes end to end on a real node (Tier B): the operator deployed from its
//! image, the real Claude Code CLI in the agent and reviewer images against
//! the scripted model server, a real git remote, NetworkPolicies enforced by
//! kube-router. Every test asserts on the remote, the status and (for egress
//! and the pod's shape) what the agent's own Bash tool saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hermes_e2e::tier_b::{KERNEL_SCENARIO, PROBE_SCENARIO, ProfileOptions, TierB, probe_results};
use serde_json::{Value, json};

const TASK_TIMEOUT: Duration = Duration::from_secs(300);

fn task(name: &str, url: &str, review: Value, publish: Value) -> Value {
    json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": name},
        "spec": {
            "repo": {"url": url, "baseRef": "main"},
            "task": "# Punctuate the greeting\n\n`src/greet.sh` prints `Hello NAME`. Make it print `Hello, NAME!` and run the tests (`sh test.sh`).\n",
            "scope": ["src/**"],
            "review": review,
            "publish": publish,
        }
    })
}

fn status(t: &hermes_crds::task::HermesTask) -> Value {
    serde_json::to_value(&t.status).unwrap()
}

fn condition<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

#[tokio::test]
async fn happy_path_merges_the_agents_edit_and_records_every_outcome() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-happy",
            ProfileOptions::scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("happy.git", "greeter").unwrap();
    let base = b.remote_rev("happy.git", "refs/heads/main").unwrap();
    f.apply_task(task(
        "greet",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase("greet", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", f.pod_logs());

    // The remote's main is a merge of the base and the agent's commit.
    let merged = b.remote_rev("happy.git", "refs/heads/main").unwrap();
    assert_ne!(merged, base);
    assert_eq!(s["baseCommit"], base.as_str(), "{s:#}");
    assert_eq!(s["publish"]["mergeCommit"], merged.as_str(), "{s:#}");
    let head = s["headCommit"].as_str().unwrap();
    let parents = b
        .remote_git("happy.git", &["rev-list", "--parents", "-n", "1", &merged])
        .unwrap();
    let parents: Vec<&str> = parents.split_whitespace().skip(1).collect();
    assert!(
        parents.contains(&head),
        "merge {merged} parents {parents:?}, head {head}"
    );
    let greet = b
        .remote_git("happy.git", &["show", &format!("{merged}:src/greet.sh")])
        .unwrap();
    assert!(greet.contains(r#"echo "Hello, $name!""#), "{greet}");
    // Verdict and push; the implementer's usage and cost exactly as
    // implementer-happy scripts them (4 turns; 1670 in, 180 out, 3000 cache
    // creation, 13100 cache read, priced by the CLI at claude-sonnet-4-5's
    // $3 / $15 / $3.75 / $0.30 per million tokens: $0.02289).
    assert_eq!(s["review"]["verdict"], "approve", "{s:#}");
    assert_eq!(s["review"]["reviewedCommit"], head, "{s:#}");
    assert_eq!(s["publish"]["pushed"], true, "{s:#}");
    assert!(
        condition(&s, "PushFailed").is_none_or(|c| c["status"] == "False"),
        "{s:#}"
    );
    let usage = &s["usage"];
    assert_eq!(usage["turns"], 4, "{s:#}");
    assert_eq!(usage["inputTokens"], 1670, "{s:#}");
    assert_eq!(usage["outputTokens"], 180, "{s:#}");
    assert_eq!(usage["cacheCreationTokens"], 3000, "{s:#}");
    assert_eq!(usage["cacheReadTokens"], 13100, "{s:#}");
    let cost: f64 = usage["costUsd"].as_str().unwrap().parse().unwrap();
    assert!((cost - 0.02289).abs() < 1e-9, "{s:#}");
}

#[tokio::test]
async fn a_rejecting_reviewer_leaves_the_remote_untouched() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-reject",
            ProfileOptions::scenarios("implementer-happy", "reviewer-reject"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("reject.git", "greeter").unwrap();
    let before = b.remote_git("reject.git", &["for-each-ref"]).unwrap();
    f.apply_task(task(
        "greet",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase("greet", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "Rejected", "{s:#}");
    assert_eq!(s["review"]["verdict"], "reject", "{s:#}");
    assert_eq!(
        b.remote_git("reject.git", &["for-each-ref"]).unwrap(),
        before
    );
}

#[tokio::test]
async fn a_refused_push_ends_succeeded_with_a_push_failed_warning() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-refused",
            ProfileOptions::scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("refused.git", "greeter").unwrap();
    hermes_git_server::refuse_pushes(&b.services.git.root().join("refused.git")).unwrap();
    let before = b.remote_git("refused.git", &["for-each-ref"]).unwrap();
    f.apply_task(task(
        "greet",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase("greet", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    assert_eq!(s["publish"]["pushed"], false, "{s:#}");
    let warning = condition(&s, "PushFailed").expect("a PushFailed condition");
    assert_eq!(warning["status"], "True", "{s:#}");
    assert_eq!(
        b.remote_git("refused.git", &["for-each-ref"]).unwrap(),
        before
    );
}

#[tokio::test]
async fn manual_review_publishes_only_the_approved_commit() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-manual",
            ProfileOptions::scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("manual.git", "greeter").unwrap();
    let base = b.remote_rev("manual.git", "refs/heads/main").unwrap();
    f.apply_task(task(
        "greet",
        &url,
        json!({"mode": "manual"}),
        json!({"mode": "merge"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase(
            "greet",
            &["AwaitingApproval", "Failed", "Rejected"],
            TASK_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "AwaitingApproval", "{s:#}");
    let reviewed = s["review"]["reviewedCommit"].as_str().unwrap().to_owned();

    // Another sha: nothing happens.
    let tasks = f.tasks();
    let annotate = |sha: &str| json!({"apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask", "metadata": {"name": "greet", "annotations": {"hermes.dev/approve": sha}}});
    tasks
        .patch(
            "greet",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(annotate(&base)),
        )
        .await
        .unwrap();
    let t = f
        .wait_task("greet", Duration::from_secs(30), |t| {
            let s = serde_json::to_value(&t.status).unwrap();
            condition(&s, "Approved").is_some_and(|c| c["reason"] == "ApprovalMismatch")
        })
        .await
        .unwrap();
    assert_eq!(status(&t)["phase"], "AwaitingApproval");
    assert_eq!(b.remote_rev("manual.git", "refs/heads/main").unwrap(), base);

    // The reviewed sha: published.
    tasks
        .patch(
            "greet",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(annotate(&reviewed)),
        )
        .await
        .unwrap();
    let t = f
        .wait_phase("greet", &["Succeeded", "Failed"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    let merged = b.remote_rev("manual.git", "refs/heads/main").unwrap();
    assert_eq!(s["publish"]["mergeCommit"], merged.as_str(), "{s:#}");
    let parents = b
        .remote_git("manual.git", &["rev-list", "--parents", "-n", "1", &merged])
        .unwrap();
    assert!(parents.contains(&reviewed), "{parents}");
}

/// Egress, driven through the real agent's Bash tool, and the agent pod's
/// shape as the agent itself sees it.
#[tokio::test]
async fn the_agent_reaches_only_what_the_profile_allows_and_holds_no_credentials() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-egress",
            ProfileOptions::scenarios(PROBE_SCENARIO, "reviewer-approve"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("egress.git", "greeter").unwrap();
    f.apply_task(task(
        "probe",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "none"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase("probe", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let records = b.services.model_records();
    let seen = probe_results(&records, PROBE_SCENARIO);
    let s = status(&t);
    assert!(
        !seen.is_empty(),
        "the probe did not run: {s:#}\n{}",
        f.pod_logs()
    );
    // The model server answers (it is the allowlisted address).
    assert!(seen["probe allowed"].starts_with("reachable"), "{seen:#?}");
    // Nothing else does: a listener on the node, the API server (by its
    // Service address and on the node), the metadata address. curl exits 28
    // on a timeout: the packets are dropped.
    for label in ["node-other", "api-service", "api-node", "metadata"] {
        let got = &seen[&format!("probe {label}")];
        assert!(
            got.starts_with("unreachable"),
            "{label}: {got} (all: {seen:#?})"
        );
    }
    assert_eq!(seen["uid"], "65532", "{seen:#?}");
    assert_eq!(seen["sa-token"], "absent", "{seen:#?}");
    assert_eq!(seen["rootfs"], "read-only", "{seen:#?}");
    assert_eq!(seen["git-credentials"], "files [] env 0", "{seen:#?}");
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
}

/// A profile with gVisor's RuntimeClass: every task pod runs under gVisor
/// (gVisor's own runsc and shim, built from its Go module), and the agent's
/// Bash tool sees gVisor's kernel.
#[tokio::test]
async fn a_gvisor_profile_runs_every_phase_under_gvisor() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let mut options = ProfileOptions::scenarios(KERNEL_SCENARIO, "reviewer-approve");
    options.runtime_class = Some("gvisor".into());
    let f = b.fixture("b-gvisor", options).await.unwrap();
    let url = b.seed_repo("gvisor.git", "greeter").unwrap();
    f.apply_task(task(
        "greet",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "branch"}),
    ))
    .await
    .unwrap();
    let t = f
        .wait_phase("greet", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&t);
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", f.pod_logs());
    let seen = probe_results(&b.services.model_records(), KERNEL_SCENARIO);
    assert!(
        seen.get("kernel").is_some_and(|k| k.contains("gvisor")),
        "{seen:#?}"
    );
    // Every pod of the task asked for gVisor.
    let out = f.ns_kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={.items[*].spec.runtimeClassName}",
    ]);
    let classes: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(classes.len(), 4, "{out}");
    assert!(classes.iter().all(|c| *c == "gvisor"), "{out}");
    // Branch mode: the reviewed commit on the task branch, main untouched.
    assert_eq!(
        b.remote_rev("gvisor.git", "refs/heads/hermes/greet")
            .as_deref(),
        s["review"]["reviewedCommit"].as_str()
    );
}
