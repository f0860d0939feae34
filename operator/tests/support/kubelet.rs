//! The kubelet, played by a test on Tier A (a control plane without a node):
//! a watch on the pods of one namespace that ends every pod as its step would,
//! writing the pod's status and termination messages through the status
//! subresource, as a kubelet does. Task pods end with the results of their
//! phase (a task named `reject-…` gets a rejecting verdict); any other pod
//! (a benchmark's raw Jobs) ends with exit code 0.
//!
//! Shared by the operator's Tier A tests (`mod support`) and its benchmarks
//! (included by path).

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use hermes_results::{StepResult, encode};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

pub const BASE: &str = "89abcdef0123456789abcdef0123456789abcdef";
pub const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
pub const MERGE: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// A running stand-in kubelet; stops when dropped.
pub struct Kubelet {
    handle: tokio::task::JoinHandle<()>,
    finished: Arc<AtomicUsize>,
}

impl Kubelet {
    /// Starts ending the pods of `namespace`, at most `parallel` at once.
    pub fn start(client: Client, namespace: &str, parallel: usize) -> Self {
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let finished = Arc::new(AtomicUsize::new(0));
        let count = finished.clone();
        let handle = tokio::spawn(async move {
            let mut seen = HashSet::new();
            let todo = watcher(pods.clone(), watcher::Config::default().any_semantic())
                .default_backoff()
                .applied_objects()
                .filter_map(|p| async move { p.ok() })
                .filter(move |p| {
                    let fresh = p
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.as_deref())
                        .is_none_or(|ph| ph == "Pending")
                        && seen.insert(p.uid().unwrap_or_default());
                    async move { fresh }
                });
            todo.map(|pod| {
                let pods = pods.clone();
                let count = count.clone();
                async move {
                    let name = pod.name_any();
                    let body = end_of(&pod);
                    // A pod deleted meanwhile (a cancelled task) is fine to miss.
                    if pods
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
                        .await
                        .is_ok()
                    {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
            .buffer_unordered(parallel.max(1))
            .for_each(|()| async {})
            .await;
        });
        Self { handle, finished }
    }

    /// Pods ended so far.
    pub fn finished(&self) -> usize {
        self.finished.load(Ordering::Relaxed)
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

fn status((c, code, msg): &(&str, i32, String)) -> Value {
    json!({
        "name": c, "image": format!("hermes/{c}:test"), "imageID": format!("hermes/{c}@sha256:{}", "a".repeat(64)),
        "ready": false, "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "message": msg, "reason": if *code == 0 { "Completed" } else { "Error" },
            "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}
    })
}

/// The status body that ends `pod` as its step would.
fn end_of(pod: &Pod) -> Value {
    let task = pod
        .annotations()
        .get("hermes.dev/task-name")
        .cloned()
        .unwrap_or_default();
    let msg = |r: &StepResult| encode(r).expect("fits");
    type Ends<'a> = (Vec<(&'a str, i32, String)>, (&'a str, i32, String));
    let (init, main): Ends = match pod.labels().get("hermes.dev/phase").map(String::as_str) {
        Some("prepare") => (vec![], ("prepare", 0, msg(&prepared(&task)))),
        Some("implement") => (vec![], ("collect", 0, msg(&collected()))),
        Some("review") => (
            vec![
                ("context", 0, msg(&context(vec![]))),
                ("install-runner", 0, String::new()),
                ("reviewer", 0, String::new()),
            ],
            ("verdict", 0, msg(&verdict(!task.starts_with("reject-")))),
        ),
        Some("publish") => (vec![], ("publish", 0, msg(&published(true)))),
        _ => (vec![], ("main", 0, String::new())),
    };
    json!({"status": {
        "phase": "Succeeded",
        "initContainerStatuses": init.iter().map(status).collect::<Vec<_>>(),
        "containerStatuses": [status(&main)],
    }})
}

pub fn prepared(task: &str) -> StepResult {
    StepResult::Prepared(hermes_results::Prepared {
        base_commit: BASE.into(),
        branch: format!("hermes/{task}"),
        task_file_sha256: None,
    })
}

pub fn collected() -> StepResult {
    StepResult::Collected(hermes_results::Collected {
        head_commit: HEAD.into(),
        commits: 1,
        diff: hermes_results::DiffStats {
            files: 1,
            insertions: 3,
            deletions: 1,
        },
        out_of_scope: vec![],
        agent: Some(hermes_results::AgentReport {
            exit_code: 0,
            is_error: false,
            turns: 4,
            input_tokens: 1200,
            output_tokens: 340,
            cache_read_tokens: 0,
            cache_creation_tokens: 0,
            cost_usd: Some("0.0123".into()),
            version: Some("2.1.197".into()),
            ignored: None,
        }),
        truncated: false,
    })
}

pub fn context(findings: Vec<hermes_results::Finding>) -> StepResult {
    StepResult::Context(hermes_results::ContextReport {
        base_commit: BASE.into(),
        head_commit: HEAD.into(),
        diff: hermes_results::DiffStats {
            files: 1,
            insertions: 3,
            deletions: 1,
        },
        out_of_scope: vec![],
        findings,
        truncated: false,
    })
}

pub fn verdict(approve: bool) -> StepResult {
    StepResult::Verdict(hermes_results::VerdictReport {
        verdict: if approve {
            hermes_results::Verdict::Approve
        } else {
            hermes_results::Verdict::Reject
        },
        reviewed_commit: HEAD.into(),
        summary: if approve {
            "Adds the flag with a test.".into()
        } else {
            "Deletes the tests.".into()
        },
        findings: vec![],
        task_file_notes: Some("The task did not name the flag's help text.".into()),
        reviewer: None,
        truncated: false,
    })
}

pub fn published(pushed: bool) -> StepResult {
    StepResult::Published(hermes_results::Published {
        mode: hermes_results::PublishMode::Merge,
        merge_commit: Some(MERGE.into()),
        pushed,
        push_error: (!pushed).then(|| "remote refused the push: protected branch".into()),
    })
}
