//! The plugin against a real API server (Tier A): the built binary, and
//! `kubectl hermes` with it on `PATH`. No operator runs here: where a test
//! needs a state the operator would reach, it writes the task's status
//! through the status subresource, as the operator does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use hermes_crds::task::HermesTask;
use hermes_e2e::{TestNamespace, TierA};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;

const URL: &str = "https://git.example.com/org/app.git";
const BASE: &str = "89abcdef0123456789abcdef0123456789abcdef";
const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

struct Env {
    cluster: TierA,
    ns: TestNamespace,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(prefix: &str) -> Option<Self> {
        let cluster = TierA::connect().await?;
        cluster.install_crds().await.expect("CRDs");
        let ns = cluster.namespace(prefix).await.expect("namespace");
        Some(Self {
            cluster,
            ns,
            dir: tempfile::tempdir().unwrap(),
        })
    }

    fn hermes(&self, args: &[&str]) -> Ran {
        hermes(&self.cluster, &self.ns.name, args)
    }

    fn tasks(&self) -> Api<HermesTask> {
        Api::namespaced(self.cluster.client.clone(), &self.ns.name)
    }

    async fn task(&self, name: &str) -> HermesTask {
        self.tasks().get(name).await.expect("task")
    }

    async fn task_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tasks()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .into_iter()
            .filter_map(|t| t.metadata.name)
            .collect();
        names.sort();
        names
    }

    fn file(&self, name: &str, text: &str) -> String {
        write(self.dir.path(), name, text)
            .to_string_lossy()
            .into_owned()
    }

    /// Creates task `name` with the plugin (review `review`).
    fn create(&self, name: &str, review: &str) {
        let f = self.file(&format!("{name}.md"), &task_file(name, URL, review, ""));
        self.hermes(&["run", &f]).ok();
    }

    /// Writes the task's status, as the operator would (status subresource).
    async fn set_status(&self, name: &str, status: Value) {
        self.tasks()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": status})),
            )
            .await
            .expect("write status");
    }

    async fn annotations(&self, name: &str) -> BTreeMap<String, String> {
        self.task(name)
            .await
            .metadata
            .annotations
            .unwrap_or_default()
    }
}

fn awaiting() -> Value {
    json!({"phase": "AwaitingApproval", "baseCommit": BASE, "headCommit": HEAD, "branch": "hermes/t",
           "review": {"verdict": "approve", "reviewedCommit": HEAD, "summary": "Adds the flag.",
                      "findings": [{"severity": "warn", "source": "reviewer", "message": "no test for -h"}]}})
}

#[tokio::test]
async fn run_applies_the_front_matter_with_flag_overrides_and_reapplies_unchanged() {
    let Some(e) = Env::new("cli-run").await else {
        return;
    };
    let f = e.file(
        "Add Flag.md",
        &task_file(
            "ignored",
            URL,
            "manual",
            "priority: 3\nlabels:\n  team: cli\ndependsOn: [setup]\n",
        )
        .replace("name: ignored\n", ""),
    );
    let out = e.hermes(&[
        "run",
        &f,
        "--base",
        "develop",
        "--priority",
        "-7",
        "--scope",
        "lib/**",
        "--publish",
        "branch",
    ]);
    assert_eq!(out.ok().trim(), "hermestask.hermes.dev/add-flag created");
    let t = e.task("add-flag").await;
    let s = &t.spec;
    assert_eq!(s.repo.url.as_str(), URL);
    assert_eq!(s.repo.base_ref.as_str(), "develop", "the flag wins");
    assert_eq!(s.priority, -7);
    assert_eq!(
        s.scope.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        ["lib/**"]
    );
    assert_eq!(
        serde_json::to_value(s.review.mode).unwrap(),
        "manual",
        "from the front matter"
    );
    assert_eq!(serde_json::to_value(s.publish.mode).unwrap(), "branch");
    assert_eq!(
        s.depends_on.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        ["setup"]
    );
    assert!(
        s.task
            .as_deref()
            .unwrap()
            .starts_with("# Punctuate the greeting")
    );
    assert_eq!(
        t.metadata.labels.unwrap().get("team").map(String::as_str),
        Some("cli")
    );
    let managers: Vec<String> = t
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager.zip(m.operation).map(|(m, o)| format!("{m}/{o}")))
        .collect();
    assert!(
        managers.contains(&"kubectl-hermes/Apply".to_owned()),
        "{managers:?}"
    );

    // The same file again changes nothing; through kubectl, the plugin is found on PATH.
    let args = [
        "run",
        &f,
        "--base",
        "develop",
        "--priority",
        "-7",
        "--scope",
        "lib/**",
        "--publish",
        "branch",
        "-n",
        &e.ns.name,
    ];
    let out = kubectl_hermes(&e.cluster, args);
    assert_eq!(out.ok().trim(), "hermestask.hermes.dev/add-flag unchanged");
    // An immutable field: the API server refuses, and says which.
    let out = e.hermes(&[
        "run",
        &f,
        "--base",
        "main",
        "--priority",
        "-7",
        "--scope",
        "lib/**",
    ]);
    let err = out.failed(1);
    assert!(err.contains("spec.repo is immutable"), "{err}");
}

#[tokio::test]
async fn output_yaml_round_trips_through_kubectl_apply() {
    let Some(e) = Env::new("cli-yaml").await else {
        return;
    };
    let f = e.file(
        "t.md",
        &task_file(
            "gitops",
            URL,
            "manual",
            "priority: 9\nlabels: {team: cli}\n",
        ),
    );
    let yaml = e
        .hermes(&["run", &f, "-o", "yaml", "--publish", "none"])
        .ok()
        .to_owned();
    assert!(e.task_names().await.is_empty(), "-o yaml sends nothing");
    let applied = kubectl_stdin(&e.cluster, &["apply", "-n", &e.ns.name, "-f", "-"], &yaml);
    assert!(
        applied
            .ok()
            .contains("hermestask.hermes.dev/gitops created"),
        "{applied:?}"
    );
    let printed: HermesTask = serde_yaml::from_str(&yaml).unwrap();
    let stored = e.task("gitops").await;
    assert_eq!(
        stored.spec, printed.spec,
        "the server stored the printed spec"
    );
    assert_eq!(stored.metadata.labels, printed.metadata.labels);
    // Applying it again is a no-op for kubectl too.
    let again = kubectl_stdin(&e.cluster, &["apply", "-n", &e.ns.name, "-f", "-"], &yaml);
    assert!(again.ok().contains("unchanged"), "{again:?}");
}

#[tokio::test]
async fn invalid_front_matter_or_flags_are_refused_and_nothing_is_created() {
    let Some(e) = Env::new("cli-invalid").await else {
        return;
    };
    let bad = task_file("bad", URL, "manual", "").replace("baseRef: main", "baseRef: '-main'");
    let f = e.file("bad.md", &bad);
    let err = e.hermes(&["run", &f]).failed(1).to_owned();
    assert!(
        err.contains(
            "line 5: spec.repo.baseRef: must be a git branch name: it must not start with '-'"
        ),
        "{err}"
    );
    let good = e.file("good.md", &task_file("good", URL, "manual", ""));
    let err = e
        .hermes(&["run", &good, "--branch", "main"])
        .failed(1)
        .to_owned();
    assert!(
        err.contains("--branch: spec.repo.branch: must differ from spec.repo.baseRef"),
        "{err}"
    );
    let err = e
        .hermes(&["run", &good, "--depends-on", "Not_A_Name"])
        .failed(1)
        .to_owned();
    assert!(
        err.contains("--depends-on: spec.dependsOn[0]: must be a Kubernetes object name"),
        "{err}"
    );
    assert!(e.task_names().await.is_empty());

    // The server checks the same task in a dry run and stores nothing.
    let out = e.hermes(&["run", &good, "--dry-run", "server"]);
    assert!(out.ok().contains("created (server dry run)"), "{out:?}");
    assert!(e.task_names().await.is_empty());
}

#[tokio::test]
async fn approve_is_refused_without_a_review_and_binds_the_reviewed_commit() {
    let Some(e) = Env::new("cli-approve").await else {
        return;
    };
    e.create("t", "manual");
    let err = e.hermes(&["approve", "t"]).failed(1).to_owned();
    assert!(
        err.contains("cannot approve: task t has no review yet"),
        "{err}"
    );
    e.set_status("t", json!({"phase": "Implementing", "baseCommit": BASE}))
        .await;
    let err = kubectl_hermes(&e.cluster, ["approve", "t", "-n", &e.ns.name])
        .failed(1)
        .to_owned();
    assert!(
        err.contains("has no review yet (phase Implementing)"),
        "{err}"
    );
    assert!(e.annotations("t").await.is_empty(), "nothing was written");

    e.set_status("t", awaiting()).await;
    let out = kubectl_hermes(&e.cluster, ["approve", "t", "-n", &e.ns.name]);
    assert!(
        out.ok().contains(&format!("approved: commit {HEAD}")),
        "{out:?}"
    );
    let a = e.annotations("t").await;
    assert_eq!(a.get("hermes.dev/approve").map(String::as_str), Some(HEAD));
    let t = e.task("t").await;
    let m = t.metadata.managed_fields.unwrap_or_default();
    assert!(
        m.iter()
            .any(|f| f.manager.as_deref() == Some("kubectl-hermes")
                && f.operation.as_deref() == Some("Update")),
        "the annotation is written by kubectl-hermes, outside its apply set"
    );
    // Re-applying the task file keeps the decision (it is not in the apply set).
    e.create("t", "manual");
    assert_eq!(
        e.annotations("t")
            .await
            .get("hermes.dev/approve")
            .map(String::as_str),
        Some(HEAD)
    );
    // Once approved, reject is refused.
    let err = e.hermes(&["reject", "t"]).failed(1).to_owned();
    assert!(err.contains("being published"), "{err}");
}

#[tokio::test]
async fn reject_records_the_reviewed_commit_and_the_reason() {
    let Some(e) = Env::new("cli-reject").await else {
        return;
    };
    e.create("t", "manual");
    e.set_status("t", awaiting()).await;
    let out = e.hermes(&["reject", "t", "--reason", "deletes the tests"]);
    assert!(
        out.ok().contains(&format!("rejected: commit {HEAD}")),
        "{out:?}"
    );
    let a = e.annotations("t").await;
    assert_eq!(a.get("hermes.dev/reject").map(String::as_str), Some(HEAD));
    assert_eq!(
        a.get("hermes.dev/reject-reason").map(String::as_str),
        Some("deletes the tests")
    );
    assert!(!a.contains_key("hermes.dev/approve"));
    // An auto-reviewed task has nothing for a person to decide.
    e.create("auto", "auto");
    let err = e.hermes(&["reject", "auto"]).failed(1).to_owned();
    assert!(err.contains("review: auto"), "{err}");
}

#[tokio::test]
async fn cancel_annotates_a_running_task_and_refuses_an_ended_one() {
    let Some(e) = Env::new("cli-cancel").await else {
        return;
    };
    e.create("t", "auto");
    e.set_status("t", json!({"phase": "Implementing"})).await;
    let out = e.hermes(&["cancel", "t"]);
    assert!(out.ok().contains("cancel requested"), "{out:?}");
    assert_eq!(
        e.annotations("t")
            .await
            .get("hermes.dev/cancel")
            .map(String::as_str),
        Some("true")
    );
    e.create("done", "auto");
    e.set_status("done", json!({"phase": "Succeeded"})).await;
    let err = e.hermes(&["cancel", "done"]).failed(1).to_owned();
    assert!(err.contains("already ended (Succeeded)"), "{err}");
    assert!(e.annotations("done").await.is_empty());
    let err = e.hermes(&["cancel", "nope"]).failed(1).to_owned();
    assert!(
        err.contains(&format!(
            "hermestask \"nope\" not found in namespace \"{}\"",
            e.ns.name
        )),
        "{err}"
    );
}

#[tokio::test]
async fn retry_publish_needs_a_failed_push_and_the_volume_and_sends_a_new_value_each_time() {
    let Some(e) = Env::new("cli-retry").await else {
        return;
    };
    e.create("t", "auto");
    e.set_status(
        "t",
        json!({"phase": "Succeeded", "publish": {"pushed": true, "mergeCommit": HEAD}}),
    )
    .await;
    let err = e.hermes(&["retry-publish", "t"]).failed(1).to_owned();
    assert!(err.contains("its push succeeded"), "{err}");
    e.set_status(
        "t",
        json!({"phase": "Succeeded", "publish": {"pushed": false, "pushError": "refused"}}),
    )
    .await;
    let err = e.hermes(&["retry-publish", "t"]).failed(1).to_owned();
    assert!(
        err.contains("repo volume (t-repo) is gone") && err.contains("retainAfterCompletion"),
        "{err}"
    );
    assert!(e.annotations("t").await.is_empty());

    // With the volume there, each call sends a value not seen before.
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "t-repo"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(e.cluster.client.clone(), &e.ns.name)
        .create(&PostParams::default(), &claim)
        .await
        .expect("claim");
    e.hermes(&["retry-publish", "t"]).ok();
    let first = e
        .annotations("t")
        .await
        .get("hermes.dev/retry-publish")
        .cloned()
        .expect("set");
    e.set_status("t", json!({"phase": "Succeeded", "publish": {"pushed": false, "pushError": "refused", "retriedFor": first}})).await;
    kubectl_hermes(&e.cluster, ["retry-publish", "t", "-n", &e.ns.name]).ok();
    let second = e
        .annotations("t")
        .await
        .get("hermes.dev/retry-publish")
        .cloned()
        .expect("set");
    assert_ne!(first, second);
}

#[tokio::test]
async fn status_prints_a_table_and_one_task_in_detail() {
    let Some(e) = Env::new("cli-status").await else {
        return;
    };
    let out = e.hermes(&["status"]);
    assert!(out.ok().contains("No hermestasks in namespace"), "{out:?}");
    e.create("one", "manual");
    e.create("two", "auto");
    let mut s = awaiting();
    s["usage"] = json!({"turns": 4, "inputTokens": 1200, "outputTokens": 340, "costUsd": "0.0123"});
    e.set_status("one", s).await;
    let table = e.hermes(&["status"]).ok().to_owned();
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "PHASE", "VERDICT", "FINDINGS", "BRANCH", "AGE"],
        "{table}"
    );
    assert_eq!(
        &rows[1][..5],
        ["one", "AwaitingApproval", "approve", "1", "hermes/t"],
        "{table}"
    );
    assert_eq!(&rows[2][..5], ["two", "-", "-", "-", "-"], "{table}");

    let all = kubectl_hermes(&e.cluster, ["status", "-A"]).ok().to_owned();
    assert!(
        all.lines().next().unwrap().starts_with("NAMESPACE"),
        "{all}"
    );
    assert!(
        all.lines()
            .any(|l| l.starts_with(&format!("{} ", e.ns.name)) && l.contains(" one ")),
        "{all}"
    );

    let detail = e.hermes(&["status", "one"]).ok().to_owned();
    for want in [
        "Phase:       AwaitingApproval",
        &format!("Base commit: {BASE}"),
        &format!("Verdict:     approve (the reviewer's advice; a person decides) on {HEAD}"),
        "Findings:    1 (0 reject, 1 warn, 0 info)",
        "4 turns, 1200 input + 340 output tokens",
    ] {
        assert!(detail.contains(want), "{want:?} missing:\n{detail}");
    }
    let json: Value =
        serde_json::from_str(e.hermes(&["status", "one", "-o", "json"]).ok()).unwrap();
    assert_eq!(json["status"]["review"]["reviewedCommit"], HEAD);
    assert!(json["metadata"].get("managedFields").is_none());
    let list: Value = serde_yaml::from_str(e.hermes(&["status", "-o", "yaml"]).ok()).unwrap();
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn batch_applies_the_valid_files_labelled_and_reports_the_invalid_one() {
    let Some(e) = Env::new("cli-batch").await else {
        return;
    };
    let dir = e.dir.path().join("tasks");
    std::fs::create_dir(&dir).unwrap();
    for n in ["a", "b", "c"] {
        write(&dir, &format!("{n}.md"), &task_file(n, URL, "auto", ""));
    }
    write(
        &dir,
        "d.md",
        &task_file("d", URL, "auto", "").replace("src/**", "../up/**"),
    );
    let d = dir.to_string_lossy().into_owned();

    // --atomic: one invalid file, nothing applied.
    let out = e.hermes(&["batch", &d, "--atomic"]);
    let err = out.failed(1);
    assert!(
        err.contains("d.md") && err.contains("line 7: spec.scope[0]"),
        "{err}"
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(e.task_names().await.is_empty());

    // Default: the valid ones are applied, each labelled with the batch id.
    let out = e.hermes(&[
        "batch",
        &d,
        "--batch-id",
        "rel-42",
        "--repo",
        "https://git.example.com/org/other.git",
    ]);
    let err = out.failed(1);
    assert!(
        err.contains("1 of 4 task files are invalid; the valid ones were applied"),
        "{err}"
    );
    assert!(
        out.stdout.contains("batch rel-42: 3 task(s) applied"),
        "{out:?}"
    );
    assert_eq!(e.task_names().await, ["a", "b", "c"]);
    let labelled = e
        .tasks()
        .list(&ListParams::default().labels("hermes.dev/batch=rel-42"))
        .await
        .unwrap()
        .items;
    assert_eq!(labelled.len(), 3);
    assert!(
        labelled
            .iter()
            .all(|t| t.spec.repo.url.as_str() == "https://git.example.com/org/other.git")
    );

    // Once the file is fixed, --atomic applies every task (the rest unchanged).
    write(&dir, "d.md", &task_file("d", URL, "auto", ""));
    let out = kubectl_hermes(
        &e.cluster,
        [
            "batch",
            &d,
            "--atomic",
            "--batch-id",
            "rel-42",
            "--repo",
            "https://git.example.com/org/other.git",
            "-n",
            &e.ns.name,
        ],
    );
    let text = out.ok();
    assert!(
        text.contains("hermestask.hermes.dev/a unchanged")
            && text.contains("hermestask.hermes.dev/d created"),
        "{text}"
    );
    assert_eq!(e.task_names().await, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn run_watch_follows_the_phases_and_exits_with_how_the_task_ended() {
    let Some(e) = Env::new("cli-watch").await else {
        return;
    };
    let f = e.file("w.md", &task_file("w", URL, "manual", ""));
    let child = std::process::Command::new(binary())
        .args(["run", &f, "--watch", "--kubeconfig"])
        .arg(e.cluster.kubeconfig_path())
        .args(["-n", &e.ns.name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the task, then walk it through the phases as the operator would.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while e.tasks().get_opt("w").await.unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the task was not created"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for status in [
        json!({"phase": "Preparing"}),
        json!({"phase": "Implementing", "baseCommit": BASE}),
        awaiting(),
        json!({"phase": "Failed", "conditions": [{"type": "Ready", "status": "False", "reason": "Timeout",
               "message": "publish exceeded its time limit of 600s", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
    ] {
        e.set_status("w", status).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "Failed exits 3: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "hermestask.hermes.dev/w created", "{stdout}");
    assert!(lines[1].starts_with("w: Preparing"), "{stdout}");
    assert!(lines[2].starts_with("w: Implementing"), "{stdout}");
    assert!(
        lines[3].starts_with("w: AwaitingApproval")
            && lines[3].contains("kubectl hermes approve w"),
        "{stdout}"
    );
    assert_eq!(
        lines[4], "w: Failed — Timeout: publish exceeded its time limit of 600s",
        "{stdout}"
    );
}

#[tokio::test]
async fn diff_and_logs_say_why_they_have_nothing_to_show() {
    let Some(e) = Env::new("cli-nodiff").await else {
        return;
    };
    e.create("t", "manual");
    let err = e.hermes(&["diff", "t"]).failed(1).to_owned();
    assert!(
        err.contains("task t has no reviewed commit yet (phase not yet started)"),
        "{err}"
    );
    let mut s = awaiting();
    s["phase"] = json!("Succeeded");
    s["publish"] = json!({"pushed": true, "mergeCommit": BASE});
    e.set_status("t", s).await;
    let err = e.hermes(&["diff", "t"]).failed(1).to_owned();
    assert!(
        err.contains("repo volume of task t (t-repo) is gone"),
        "{err}"
    );
    assert!(
        err.contains(&format!("git fetch origin main && git diff {BASE} {HEAD}")),
        "{err}"
    );
    let err = e.hermes(&["logs", "t"]).failed(1).to_owned();
    assert!(err.contains("hermestask t has no pods"), "{err}");
}
