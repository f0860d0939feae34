//! Hermes end to end on a real node (Tier B): the operator deployed from its
//! image, the real Claude Code CLI in the agent and reviewer images against
//! the scripted model server, a real git remote, NetworkPolicies enforced by
//! kube-router. Every test asserts on the remote, the status and (for egress
//! and the pod's shape) what the agent's own Bash tool saw.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hermes_e2e::tier_b::{
    DISK_FILL_SCENARIO, FORK_BOMB_SCENARIO, Fixture, GATEWAY_PROBE_SCENARIO,
    GATEWAY_RESTART_SCENARIO, KERNEL_SCENARIO, MEMORY_SCENARIO, PLANTED_KEY, PLANTED_KEY_SCENARIO,
    PROBE_SCENARIO, ProfileOptions, TierB, VOLUME_FILL_SCENARIO, WIDE_PROBE_SCENARIO,
    probe_results,
};
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

/// One test's run: its namespace and profile, a fresh copy of the greeter
/// repository on the remote, and the task `greet` applied against it.
struct Run {
    b: TierB,
    f: Fixture,
    /// The remote repository's name.
    repo: &'static str,
    /// The remote's main before the task.
    base: String,
}

impl Run {
    /// `None` when there is no Tier B (and it is not required).
    async fn start(
        repo: &'static str,
        options: ProfileOptions,
        review: Value,
        publish: Value,
        before_apply: impl FnOnce(&TierB),
    ) -> Option<Self> {
        Self::start_task(repo, options, review, publish, before_apply, |_| {}).await
    }

    /// [`Run::start`], with `edit` changing the task before it is applied.
    async fn start_task(
        repo: &'static str,
        options: ProfileOptions,
        review: Value,
        publish: Value,
        before_apply: impl FnOnce(&TierB),
        edit: impl FnOnce(&mut Value),
    ) -> Option<Self> {
        let b = TierB::connect().await?;
        let prefix = format!("b-{}", repo.trim_end_matches(".git"));
        let by_name = options.git_by_name;
        let f = b.fixture(&prefix, options).await.unwrap();
        let mut url = b.seed_repo(repo, "greeter").unwrap();
        if by_name {
            url = b.https_url(repo);
        }
        let base = b.remote_rev(repo, "refs/heads/main").unwrap();
        before_apply(&b);
        let mut task = task("greet", &url, review, publish);
        edit(&mut task);
        f.apply_task(task).await.unwrap();
        Some(Self { b, f, repo, base })
    }

    /// Waits for one of `phases`; the status then.
    async fn wait(&self, phases: &[&str]) -> Value {
        let t = self
            .f
            .wait_phase("greet", phases, TASK_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.f.pod_logs()));
        status(&t)
    }

    /// Waits for the task to end; its status.
    async fn end(&self) -> Value {
        self.wait(&["Succeeded", "Failed", "Rejected", "Cancelled"])
            .await
    }

    fn remote_main(&self) -> String {
        self.b.remote_rev(self.repo, "refs/heads/main").unwrap()
    }

    fn remote_refs(&self) -> String {
        self.b.remote_git(self.repo, &["for-each-ref"]).unwrap()
    }

    fn parents(&self, commit: &str) -> Vec<String> {
        self.b
            .remote_git(self.repo, &["rev-list", "--parents", "-n", "1", commit])
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(str::to_owned)
            .collect()
    }
}

impl Run {
    /// What `scenario`'s probe printed (`probe <label> ...` and `key value`
    /// lines); fails, with the status and the pods' logs, when it did not run.
    fn probes(&self, scenario: &str, s: &Value) -> std::collections::BTreeMap<String, String> {
        let seen = probe_results(&self.b.services.model_records(), scenario);
        assert!(
            !seen.is_empty(),
            "the probe did not run: {s:#}\n{}",
            self.f.pod_logs()
        );
        seen
    }
}

/// Asserts that the probe of each label got an answer starting with `want`
/// (`reachable`, `unreachable`).
fn expect_probes(seen: &std::collections::BTreeMap<String, String>, want: &str, labels: &[&str]) {
    for label in labels {
        let got = &seen[&format!("probe {label}")];
        assert!(got.starts_with(want), "{label}: {got} (all: {seen:#?})");
    }
}

fn condition<'a>(s: &'a Value, kind: &str) -> Option<&'a Value> {
    s["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn scenarios(implementer: &str, reviewer: &str) -> ProfileOptions {
    ProfileOptions::scenarios(implementer, reviewer)
}

#[tokio::test]
async fn happy_path_merges_the_agents_edit_and_records_every_outcome() {
    let Some(r) = Run::start(
        "happy.git",
        scenarios("implementer-happy", "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", r.f.pod_logs());

    // The remote's main is a merge of the base and the agent's commit.
    let merged = r.remote_main();
    assert_ne!(merged, r.base);
    assert_eq!(s["baseCommit"], r.base.as_str(), "{s:#}");
    assert_eq!(s["publish"]["mergeCommit"], merged.as_str(), "{s:#}");
    let head = s["headCommit"].as_str().unwrap();
    assert_eq!(r.parents(&merged), [r.base.as_str(), head], "{s:#}");
    let greet =
        r.b.remote_git(r.repo, &["show", &format!("{merged}:src/greet.sh")])
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
    let Some(r) = Run::start(
        "reject.git",
        scenarios("implementer-happy", "reviewer-reject"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Rejected", "{s:#}");
    assert_eq!(s["review"]["verdict"], "reject", "{s:#}");
    assert_eq!(
        r.remote_refs(),
        format!("{} commit\trefs/heads/main", r.base)
    );
}

#[tokio::test]
async fn a_refused_push_ends_succeeded_with_a_push_failed_warning() {
    let Some(r) = Run::start(
        "refused.git",
        scenarios("implementer-happy", "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |b| hermes_git_server::refuse_pushes(&b.services.git.root().join("refused.git")).unwrap(),
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    assert_eq!(s["publish"]["pushed"], false, "{s:#}");
    let warning = condition(&s, "PushFailed").expect("a PushFailed condition");
    assert_eq!(warning["status"], "True", "{s:#}");
    assert_eq!(
        r.remote_refs(),
        format!("{} commit\trefs/heads/main", r.base)
    );
}

#[tokio::test]
async fn manual_review_publishes_only_the_approved_commit() {
    let Some(r) = Run::start(
        "manual.git",
        scenarios("implementer-happy", "reviewer-approve"),
        json!({"mode": "manual"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.wait(&["AwaitingApproval", "Failed", "Rejected"]).await;
    assert_eq!(s["phase"], "AwaitingApproval", "{s:#}");
    let reviewed = s["review"]["reviewedCommit"].as_str().unwrap().to_owned();

    let approve = |sha: &str| {
        kube::api::Patch::Merge(json!({"metadata": {"annotations": {"hermes.dev/approve": sha}}}))
    };
    let tasks = r.f.tasks();
    // Another sha: nothing happens.
    tasks
        .patch(
            "greet",
            &kube::api::PatchParams::default(),
            &approve(&r.base),
        )
        .await
        .unwrap();
    let t =
        r.f.wait_task("greet", Duration::from_secs(30), |t| {
            condition(&status(t), "Approved").is_some_and(|c| c["reason"] == "ApprovalMismatch")
        })
        .await
        .unwrap();
    assert_eq!(status(&t)["phase"], "AwaitingApproval");
    assert_eq!(r.remote_main(), r.base);

    // The reviewed sha: published.
    tasks
        .patch(
            "greet",
            &kube::api::PatchParams::default(),
            &approve(&reviewed),
        )
        .await
        .unwrap();
    let s = r.wait(&["Succeeded", "Failed"]).await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    let merged = r.remote_main();
    assert_eq!(s["publish"]["mergeCommit"], merged.as_str(), "{s:#}");
    assert_eq!(r.parents(&merged), [r.base.as_str(), reviewed.as_str()]);
}

/// Egress, driven through the real agent's Bash tool, and the agent pod's
/// shape as the agent itself sees it.
#[tokio::test]
async fn the_agent_reaches_only_what_the_profile_allows_and_holds_no_credentials() {
    let Some(r) = Run::start(
        "egress.git",
        scenarios(PROBE_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "none"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    let seen = r.probes(PROBE_SCENARIO, &s);
    // The model server answers (it is the allowlisted address).
    expect_probes(&seen, "reachable", &["allowed"]);
    // Nothing else does: a listener on the node, the API server (by its
    // Service address and on the node), the metadata address. curl exits 28
    // on a timeout: the packets are dropped.
    expect_probes(
        &seen,
        "unreachable",
        &["node-other", "api-service", "api-node", "metadata"],
    );
    assert_eq!(seen["uid"], "65532", "{seen:#?}");
    assert_eq!(seen["sa-token"], "absent", "{seen:#?}");
    assert_eq!(seen["rootfs"], "read-only", "{seen:#?}");
    assert_eq!(seen["git-credentials"], "files [] env 0", "{seen:#?}");
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
}

/// A CIDR rule open to every address (`0.0.0.0/0`, on the ports of every
/// listener here and 443) reaches an outside address, but neither the node,
/// nor the API server (by its Service address or on the node), nor a
/// link-local listener: the operator excepts them from the rule.
#[tokio::test]
async fn a_rule_open_to_every_address_reaches_neither_the_node_nor_the_api_server_nor_link_local() {
    let mut options = scenarios(WIDE_PROBE_SCENARIO, "reviewer-approve");
    options.wide_egress = true;
    let Some(r) = Run::start(
        "wide.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "none"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    let seen = r.probes(WIDE_PROBE_SCENARIO, &s);
    // The rule is in force: an address outside the cluster answers.
    assert!(
        seen["probe outside"].starts_with("reachable"),
        "{seen:#?}\n{}",
        r.f.ns_kubectl(&["get", "networkpolicies", "-o", "yaml"])
    );
    expect_probes(
        &seen,
        "unreachable",
        &["node", "api-service", "api-node", "link-local"],
    );
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
}

/// A key the agent plants in file names and contents, through the real
/// CLI's Bash tool: review rejects the change by policy (a credential in a
/// path, in an added line), and the key is in neither the task's status
/// nor its Events, where the names are shown redacted.
#[tokio::test]
async fn a_key_the_agent_plants_is_rejected_and_reaches_neither_status_nor_events() {
    let Some(r) = Run::start(
        "planted.git",
        scenarios(PLANTED_KEY_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Rejected", "{s:#}\n{}", r.f.pod_logs());
    let found = |path: &str, says: &str| {
        s["review"]["findings"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| {
                f["path"] == path
                    && f["severity"] == "reject"
                    && f["message"].as_str().is_some_and(|m| m.contains(says))
            })
    };
    assert!(
        found("src/[redacted].txt", "looks like a credential"),
        "{s:#}"
    );
    assert!(found("src/leak.env", "(anthropic-api-key)"), "{s:#}");
    assert!(
        found("docs/[redacted].md", "outside the task's scope"),
        "{s:#}"
    );
    assert!(
        s["diff"]["outOfScope"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p == "docs/[redacted].md")),
        "{s:#}"
    );
    let status = serde_json::to_string(&s).unwrap();
    assert!(!status.contains(PLANTED_KEY), "{status}");
    let events = r.f.ns_kubectl(&["get", "events", "-o", "json"]);
    assert!(events.contains("greet"), "no events read: {events}");
    assert!(!events.contains(PLANTED_KEY), "{events}");
    // Nothing was pushed.
    assert_eq!(r.remote_main(), r.base);
}

impl Run {
    /// The implement Jobs the task has (one per attempt, unless deleted).
    fn implement_jobs(&self) -> Vec<String> {
        self.f
            .ns_kubectl(&[
                "get",
                "jobs",
                "-l",
                "hermes.dev/phase=implement",
                "-o",
                "name",
            ])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Asserts that no phase ran a second attempt: no Job of one, no
    /// `InfrastructureRetry` Event.
    fn expect_no_retry(&self, s: &Value) {
        let retries = self.f.ns_kubectl(&[
            "get",
            "jobs",
            "-l",
            "hermes.dev/attempt notin (1)",
            "-o",
            "name",
        ]);
        assert_eq!(retries.trim(), "", "{s:#}");
        let events = self.f.ns_kubectl(&["get", "events", "-o", "json"]);
        assert!(events.contains("greet"), "no events read: {events}");
        assert!(!events.contains("InfrastructureRetry"), "{events}");
    }

    /// Asserts that the task failed in implement, on its first attempt,
    /// with `reason`; that nothing reached the remote; and that the node is
    /// still Ready.
    fn expect_implement_failed(&self, s: &Value, reason: &str) {
        assert_eq!(s["phase"], "Failed", "{s:#}\n{}", self.f.pod_logs());
        let implemented = condition(s, "Implemented").unwrap_or(&Value::Null);
        assert_eq!(implemented["reason"], reason, "{s:#}");
        assert_eq!(condition(s, "Ready").unwrap()["reason"], reason, "{s:#}");
        assert_eq!(s["attempt"], 1, "{s:#}");
        self.expect_no_retry(s);
        assert_eq!(self.remote_main(), self.base);
        node_ready(&self.b);
    }
}

/// The message of the task's `Implemented` condition.
fn implemented_message(s: &Value) -> String {
    condition(s, "Implemented").unwrap()["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Asserts that the node is Ready.
fn node_ready(b: &TierB) {
    let out = b.cluster.kubectl([
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    let ready = String::from_utf8_lossy(&out.stdout);
    assert_eq!(ready.trim(), "True", "the node is not Ready afterwards");
}

/// A memory blow-up through the real CLI's Bash tool: the kernel kills the
/// allocating process at the agent container's limit (1Gi here); the CLI
/// goes on and makes its edit, and the phase still ends
/// `ResourceExhausted` (memory), once, with nothing published.
#[tokio::test]
async fn a_memory_blowup_ends_the_task_resource_exhausted_once() {
    let Some(r) = Run::start(
        "memory.git",
        scenarios(MEMORY_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    r.expect_implement_failed(&s, "ResourceExhausted");
    let message = implemented_message(&s);
    assert!(
        message.contains("ran out of memory") && message.contains("OOM-killed"),
        "{message}"
    );
    // The agent's container was an init container: the kubelet left the
    // pod Pending, and the operator deleted the Job rather than let it hold
    // the node until its deadline.
    assert_eq!(r.implement_jobs(), Vec::<String>::new(), "{s:#}");
}

/// A disk fill of the agent's scratch space (its 1Gi `/tmp` emptyDir)
/// through the real CLI's Bash tool: the kubelet evicts the pod for its own
/// use, and the task ends `ResourceExhausted` (ephemeral-storage) with no
/// infrastructure retry.
#[tokio::test]
async fn a_scratch_disk_fill_is_evicted_and_ends_the_task_resource_exhausted_once() {
    let Some(r) = Run::start(
        "diskfill.git",
        scenarios(DISK_FILL_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    r.expect_implement_failed(&s, "ResourceExhausted");
    let message = implemented_message(&s);
    assert!(
        message.contains("ran out of ephemeral-storage") && message.contains("EmptyDir"),
        "{message}"
    );
}

/// A disk fill of the repo volume (64Mi here, enforced by the test
/// provisioner as a real volume's size is): the agent gets ENOSPC, not the
/// node's disk; `collect` cannot write the change and says the volume is
/// full, and the task ends `ResourceExhausted`, once.
#[tokio::test]
async fn a_repo_volume_fill_ends_the_task_resource_exhausted_once() {
    let mut options = scenarios(VOLUME_FILL_SCENARIO, "reviewer-approve");
    options.volume_size = Some("64Mi");
    let Some(r) = Run::start(
        "volumefill.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    r.expect_implement_failed(&s, "ResourceExhausted");
    let message = implemented_message(&s);
    assert!(message.contains("No space left on device"), "{message}");
}

/// A repository larger than the repo volume (T38): prepare's clone finds
/// the filesystem full, and the task ends `ResourceExhausted` in prepare,
/// once, before any agent runs.
#[tokio::test]
async fn a_repository_larger_than_the_volume_ends_prepare_resource_exhausted_once() {
    let mut options = scenarios("implementer-happy", "reviewer-approve");
    options.volume_size = Some("32Mi");
    let Some(r) = Run::start(
        "toolarge.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |b| b.grow_repo("toolarge.git", 48 << 20).unwrap(),
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Failed", "{s:#}\n{}", r.f.pod_logs());
    let prepared = condition(&s, "Prepared").unwrap_or(&Value::Null);
    assert_eq!(prepared["reason"], "ResourceExhausted", "{s:#}");
    assert!(
        prepared["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left on device")),
        "{s:#}"
    );
    assert_eq!(s["attempt"], 1, "{s:#}");
    r.expect_no_retry(&s);
    assert_eq!(r.implement_jobs(), Vec::<String>::new(), "{s:#}");
    node_ready(&r.b);
}

/// A fork bomb through the real CLI's Bash tool, detached from the tool's
/// shell: the node's `podPidsLimit` holds it to the pod, the task ends
/// (one implement attempt, whatever the CLI made of its remaining turns),
/// the container's end takes the bomb with it, and the node stays Ready.
#[tokio::test]
async fn a_fork_bomb_is_held_to_its_pod_and_dies_with_it() {
    let Some(r) = Run::start_task(
        "forkbomb.git",
        scenarios(FORK_BOMB_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "none"}),
        |_| {},
        |t| t["spec"]["timeouts"] = json!({"implement": "90s"}),
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert!(
        ["Succeeded", "Failed", "Rejected"].contains(&s["phase"].as_str().unwrap_or_default()),
        "{s:#}"
    );
    r.expect_no_retry(&s);
    assert_eq!(r.remote_main(), r.base);
    // No process of the bomb outlived the pod.
    let left = std::process::Command::new("pgrep")
        .args(["-u", "65532", "-f", "b \\| b"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "bomb processes outlived the task: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    node_ready(&r.b);
}

/// A profile with gVisor's RuntimeClass: every task pod runs under gVisor
/// (gVisor's own runsc and shim, built from its Go module), and the agent's
/// Bash tool sees gVisor's kernel.
#[tokio::test]
async fn a_gvisor_profile_runs_every_phase_under_gvisor() {
    let mut options = scenarios(KERNEL_SCENARIO, "reviewer-approve");
    options.runtime_class = Some("gvisor".into());
    let Some(r) = Run::start(
        "gvisor.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "branch"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", r.f.pod_logs());
    let seen = probe_results(&r.b.services.model_records(), KERNEL_SCENARIO);
    assert!(
        seen.get("kernel").is_some_and(|k| k.contains("gvisor")),
        "{seen:#?}"
    );
    // Every pod of the task asked for gVisor.
    let out = r.f.ns_kubectl(&[
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
        r.b.remote_rev(r.repo, "refs/heads/hermes/greet").as_deref(),
        s["review"]["reviewedCommit"].as_str()
    );
    assert_eq!(r.remote_main(), r.base);
}

/// GitOps keeps the task file next to the code: `taskRef.repoPath` is read
/// by prepare from the repository at `baseRef`, the task runs from it, and
/// its hash (the exact bytes at the base commit) is recorded in status.
#[tokio::test]
async fn a_task_file_in_the_repository_runs_and_its_hash_is_recorded() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "b-repopath",
            scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();
    let url = b.seed_repo("repopath.git", "greeter").unwrap();
    let base = b.remote_rev("repopath.git", "refs/heads/main").unwrap();
    let mut t = task(
        "greet",
        &url,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
    );
    t["spec"]["task"] = Value::Null;
    t["spec"]["taskRef"] = json!({"repoPath": "task.md"});
    f.apply_task(t).await.unwrap();
    let done = f
        .wait_phase("greet", &["Succeeded", "Failed", "Rejected"], TASK_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let s = status(&done);
    assert_eq!(s["phase"], "Succeeded", "{s:#}");
    assert_eq!(s["baseCommit"], base.as_str());
    // The bytes of task.md as seeded (the fixture, committed as-is).
    let bytes =
        std::fs::read(hermes_e2e::repo_root().join("e2e/scenarios/fixtures/greeter/task.md"))
            .unwrap();
    use sha2::Digest;
    let want: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(s["taskFileSha256"], want.as_str(), "{s:#}");
    // The merge is on the remote's main.
    assert_ne!(
        b.remote_rev("repopath.git", "refs/heads/main").unwrap(),
        base
    );
}

/// Through the Hermes gateway: the agent and the reviewer hold a credential
/// of their own for the gateway, never the model key; their pods may reach
/// the gateway and nothing else (no DNS); the usage in status is the
/// gateway's own count, exactly the scripted figures, priced from the
/// profile's table, with the agent's report kept beside it.
#[tokio::test]
async fn through_the_gateway_no_pod_holds_the_key_and_usage_is_the_gateways_exact_count() {
    let Some(r) = Run::start(
        "gateway.git",
        ProfileOptions::through_gateway("implementer-happy", "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", r.f.pod_logs());
    let usage = &s["usage"];
    assert_eq!(usage["source"], "Gateway", "{s:#}");
    assert_eq!(usage["turns"], 4, "{s:#}");
    assert_eq!(usage["inputTokens"], 1670, "{s:#}");
    assert_eq!(usage["outputTokens"], 180, "{s:#}");
    assert_eq!(usage["cacheCreationTokens"], 3000, "{s:#}");
    assert_eq!(usage["cacheReadTokens"], 13100, "{s:#}");
    // Exact decimal arithmetic: 1670×3 + 180×15 + 3000×3.75 + 13100×0.3 µ$.
    assert_eq!(usage["costUsd"], "0.02289", "{s:#}");
    assert_eq!(
        usage["reported"]["turns"], 4,
        "the agent's own report: {s:#}"
    );
    assert!(usage["review"]["turns"].as_i64().unwrap_or(0) >= 1, "{s:#}");
    // No task pod mounts a model Secret, and each phase's credential is a
    // gateway credential, not the key.
    let mounts = r.f.ns_kubectl(&[
        "get",
        "pods",
        "-o",
        "jsonpath={range .items[*]}{range .spec.volumes[*]}{.secret.secretName} {end}{end}",
    ]);
    let secrets: Vec<&str> = mounts.split_whitespace().collect();
    assert!(!secrets.is_empty(), "{mounts}");
    for name in &secrets {
        assert!(
            ["git-read", "git-push"].contains(name) || name.starts_with("greet-gw-"),
            "a task pod mounts {name}: {mounts}"
        );
    }
    let key = r.f.ns_kubectl(&[
        "get",
        "secret",
        "greet-gw-implement",
        "-o",
        "jsonpath={.data.ANTHROPIC_API_KEY}",
    ]);
    let key = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, key.trim()).unwrap(),
    )
    .unwrap();
    assert!(key.starts_with("hgw1."), "{key}");
    assert_ne!(key, hermes_e2e::tier_b::SCRIPTED_MODEL_KEY);
    // Once its phase has ended the credential opens nothing: the gateway
    // refuses it (401), it is not the key.
    let addr = hermes_e2e::tier_b::gateway_model_addr(&r.b.cluster).unwrap();
    let answer = hermes_e2e::tier_b::gateway_model_request(&addr, &key).unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The implement pod's allow list: the gateway, no DNS.
    let hash = r.f.ns_kubectl(&[
        "get",
        "pods",
        "-l",
        "hermes.dev/phase=implement",
        "-o",
        "jsonpath={.items[0].metadata.labels.hermes\\.dev/egress}",
    ]);
    let policy = r.f.ns_kubectl(&[
        "get",
        "networkpolicy",
        &format!("hermes-egress-{}", hash.trim()),
        "-o",
        "jsonpath={.spec.egress}",
    ]);
    assert!(
        policy.contains("hermes-gateway") && !policy.contains("53"),
        "{policy}"
    );
}

/// The gateway restarted while the agent works (between two of its model
/// requests): the agent's next request reaches the new instance, the task
/// succeeds, and nothing counted before the restart is lost: status holds
/// one meter per instance and their sum is the scripted model's exact count.
#[tokio::test]
async fn a_gateway_restart_mid_run_loses_no_usage_already_counted() {
    let Some(r) = Run::start(
        "gateway-restart.git",
        ProfileOptions::through_gateway(GATEWAY_RESTART_SCENARIO, "reviewer-approve"),
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    // The first turn counted and recorded (the operator reads every 3 s),
    // while the agent's Bash tool waits (25 s). The wait covers a loaded
    // node's pod starts; a count past the first turn means the restart
    // would no longer fall between two requests.
    let deadline = std::time::Instant::now() + TASK_TIMEOUT;
    let first = loop {
        let t = r.f.tasks().get("greet").await.unwrap();
        let s = status(&t);
        let meters = s["usage"]["meters"].as_array().cloned().unwrap_or_default();
        let implement: Vec<&Value> = meters
            .iter()
            .filter(|m| m["phase"] == "implement")
            .collect();
        if let [m] = implement.as_slice() {
            assert_eq!(
                m["turns"], 1,
                "the agent's wait ended before its first turn was recorded: {s:#}"
            );
            break m["instance"].as_str().unwrap().to_owned();
        }
        assert!(
            implement.is_empty() && std::time::Instant::now() < deadline,
            "the first turn was never recorded: {s:#}\n{}",
            r.f.pod_logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let gw = |args: &[&str]| {
        let mut all = vec!["-n", hermes_e2e::tier_b::GATEWAY_NAMESPACE];
        all.extend_from_slice(args);
        let out = r.b.cluster.kubectl(all);
        assert!(out.status.success(), "kubectl {args:?}: {out:?}");
    };
    gw(&[
        "delete",
        "pod",
        "-l",
        "app.kubernetes.io/component=gateway",
        "--wait=true",
        "--timeout=60s",
    ]);
    gw(&[
        "rollout",
        "status",
        "deployment/hermes-gateway",
        "--timeout=60s",
    ]);
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", r.f.pod_logs());
    // The agent's requests after the restart went through: its edit landed.
    assert_eq!(s["diff"]["files"], 1, "{s:#}");
    assert_ne!(r.remote_main(), r.base, "published: {s:#}");
    let usage = &s["usage"];
    assert_eq!(usage["source"], "Gateway", "{s:#}");
    assert_eq!(usage["turns"], 4, "{s:#}");
    assert_eq!(usage["inputTokens"], 1200, "{s:#}");
    assert_eq!(usage["outputTokens"], 110, "{s:#}");
    let implement: Vec<&Value> = usage["meters"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["phase"] == "implement")
        .collect();
    assert_eq!(implement.len(), 2, "one meter per instance: {s:#}");
    let old = implement.iter().find(|m| m["instance"] == first.as_str());
    assert_eq!(
        old.map(|m| m["turns"].clone()),
        Some(json!(1)),
        "the first instance's count stays: {s:#}"
    );
}

/// The git phases by host name: prepare clones and publish pushes an
/// `https://` remote named `git.hermes.test`, through the gateway's proxy
/// alone (their pods may reach the proxy port and nothing else), trusting
/// its private CA by the profile's `git.caBundle`; each phase's credential
/// for the proxy opened its own phase's list.
#[tokio::test]
async fn the_git_phases_reach_an_https_remote_by_name_through_the_proxy_alone() {
    let mut options = ProfileOptions::through_gateway("implementer-happy", "reviewer-approve");
    options.git_by_name = true;
    let Some(r) = Run::start(
        "by-name.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Succeeded", "{s:#}\n{}", r.f.pod_logs());
    let main = r.remote_main();
    assert_ne!(main, r.base, "published: {s:#}");
    assert_eq!(r.parents(&main).len(), 2, "a merge commit: {s:#}");
    // Both git phases came through the front by the name (TLS with SNI),
    // each through the proxy (the front is reachable no other way: no CIDR
    // rule names it).
    let names = r.b.services.git_tls.names();
    assert!(
        names
            .iter()
            .filter(|n| *n == hermes_e2e::tier_b::GIT_HOST)
            .count()
            >= 2,
        "{names:?}"
    );
    for phase in ["prepare", "publish"] {
        let hash = r.f.ns_kubectl(&[
            "get",
            "pods",
            "-l",
            &format!("hermes.dev/phase={phase}"),
            "-o",
            "jsonpath={.items[0].metadata.labels.hermes\\.dev/egress}",
        ]);
        let policy = r.f.ns_kubectl(&[
            "get",
            "networkpolicy",
            &format!("hermes-egress-{}", hash.trim()),
            "-o",
            "jsonpath={.spec.egress}",
        ]);
        assert!(
            policy.contains("hermes-gateway")
                && !policy.contains("ipBlock")
                && !policy.contains("53"),
            "{phase}: {policy}"
        );
    }
    let log = r.b.cluster.kubectl([
        "logs",
        "-n",
        hermes_e2e::tier_b::GATEWAY_NAMESPACE,
        "deployment/hermes-gateway",
        "--tail",
        "5000",
    ]);
    let log = String::from_utf8_lossy(&log.stdout);
    for phase in ["prepare", "publish"] {
        assert!(
            log.lines().any(|l| l.contains(&r.f.ns.name)
                && l.contains(&format!("\"phase\":\"{phase}\""))
                && l.contains(hermes_e2e::tier_b::GIT_HOST)
                && l.contains("allowed")),
            "no allowed {phase} connection to {} in the gateway's log:\n{}",
            hermes_e2e::tier_b::GIT_HOST,
            log.lines()
                .filter(|l| l.contains(&r.f.ns.name))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// A scripted model that would go on for more turns than the budget allows
/// is stopped by the gateway: the next request gets an API error, the task
/// fails `BudgetExceeded` with the figures, no review runs, nothing is pushed.
#[tokio::test]
async fn the_gateway_stops_the_agent_at_its_budget() {
    let mut options = ProfileOptions::through_gateway("implementer-happy", "reviewer-approve");
    options.budget = Some(json!({"default": {"turns": 2}}));
    let Some(r) = Run::start(
        "budget.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "merge"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    let s = r.end().await;
    assert_eq!(s["phase"], "Failed", "{s:#}\n{}", r.f.pod_logs());
    let c = condition(&s, "Implemented").unwrap();
    assert_eq!(c["reason"], "BudgetExceeded", "{s:#}");
    assert!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("turns 2 of 2"),
        "{s:#}"
    );
    assert_eq!(s["usage"]["turns"], 2, "{s:#}");
    let review =
        r.f.ns_kubectl(&["get", "jobs", "-l", "hermes.dev/phase=review", "-o", "name"]);
    assert!(review.trim().is_empty(), "no review: {review}");
    assert_eq!(r.remote_main(), r.base);
}

/// Egress by host name, driven through the real agent's Bash tool behind
/// the gateway: a listed name answers through the proxy (plain HTTP and
/// CONNECT); a name not listed is refused; listed names that resolve to the
/// metadata address, the API server's Service address, the node or loopback
/// are refused; a TLS hello whose SNI differs from the CONNECT host is
/// refused; a connection that skips the proxy is dropped; and every refusal
/// is in the gateway's log with its reason.
#[tokio::test]
async fn behind_the_gateway_the_agent_reaches_listed_names_only_and_never_a_denied_address() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let port = b.services.registry.port();
    let mut options = ProfileOptions::through_gateway(GATEWAY_PROBE_SCENARIO, "reviewer-approve");
    let listed = |name: &str| json!({"name": name, "ports": [port]});
    options.hosts = Some(json!({"implement": [
        listed("registry.hermes.test"),
        listed("metadata.hermes.test"),
        listed("api.hermes.test"),
        listed("node.hermes.test"),
        listed("loop.hermes.test"),
        listed("evil.example"),
    ]}));
    drop(b);
    let Some(r) = Run::start(
        "gateway-egress.git",
        options,
        json!({"mode": "auto"}),
        json!({"mode": "none"}),
        |_| {},
    )
    .await
    else {
        return;
    };
    // While the agent runs, a credential is good for its own task, phase
    // and attempt only: the reviewer's (valid, for this task) and one for
    // another task are refused, and neither reaches the model.
    let live = r.wait(&["Implementing"]).await;
    let refusals = credentials_outside_their_phase_are_refused(&r).await;
    let s = r.end().await;
    assert_eq!(live["phase"], "Implementing", "{live:#}");
    for (what, answer) in &refusals {
        assert!(
            answer.starts_with("HTTP/1.1 401") && answer.contains("not running"),
            "{what}: {answer}"
        );
    }
    let seen = r.probes(GATEWAY_PROBE_SCENARIO, &s);
    expect_probes(&seen, "reachable 200", &["forward", "connect"]);
    expect_probes(
        &seen,
        "unreachable",
        &[
            "unlisted",
            "metadata-name",
            "api-name",
            "node-name",
            "loopback-name",
            "sni-mismatch",
            "direct",
            "direct-node",
        ],
    );
    assert_eq!(seen["dns"], "fails", "{seen:#?}");
    // The model key is nowhere in the agent's pod: no file, no process environment.
    assert_eq!(seen["model-key"], "files [] env 0", "{seen:#?}");
    let logs = r.b.cluster.kubectl([
        "logs",
        "-n",
        hermes_e2e::tier_b::GATEWAY_NAMESPACE,
        "deployment/hermes-gateway",
        "--tail",
        "2000",
    ]);
    let logs = String::from_utf8_lossy(&logs.stdout);
    for reason in ["not-listed", "denied-address", "sni-mismatch"] {
        assert!(
            logs.contains(reason),
            "no {reason} in the gateway's log:\n{logs}"
        );
    }
}

/// Mints, with the chart's key, the review credential of the task `greet`
/// and an implement credential of a task that does not exist, and sends a
/// model request with each while implement runs (the probe keeps it running
/// for more than ten seconds: its connections that skip the proxy wait out
/// their timeouts); fails the test when implement had ended by then.
async fn credentials_outside_their_phase_are_refused(r: &Run) -> Vec<(&'static str, String)> {
    use hermes_crds::RunPhase;
    use hermes_crds::gateway::{Claims, Limits};
    let task = r.f.tasks().get("greet").await.unwrap();
    let uid = task.metadata.uid.clone().unwrap();
    let namespace = task.metadata.namespace.clone().unwrap();
    let key = hermes_e2e::tier_b::gateway_signing_key(&r.b.cluster).unwrap();
    let addr = hermes_e2e::tier_b::gateway_model_addr(&r.b.cluster).unwrap();
    let claims = |task: &str, uid: &str, phase| Claims {
        namespace: namespace.clone(),
        task: task.to_owned(),
        uid: uid.to_owned(),
        phase,
        attempt: 1,
        budget: Limits::default(),
    };
    let mut answers = Vec::new();
    for (what, c) in [
        (
            "the reviewer's credential",
            claims("greet", &uid, RunPhase::Review),
        ),
        (
            "another task's credential",
            claims(
                "other",
                "00000000-0000-4000-8000-000000000000",
                RunPhase::Implement,
            ),
        ),
    ] {
        let answer = hermes_e2e::tier_b::gateway_model_request(&addr, &key.mint(&c)).unwrap();
        answers.push((what, answer));
    }
    let after = r.f.tasks().get("greet").await.unwrap();
    assert_eq!(
        after.status.and_then(|s| s.phase),
        Some(hermes_crds::TaskPhase::Implementing),
        "implement ended before the credentials were tried: the check proves nothing"
    );
    answers
}
