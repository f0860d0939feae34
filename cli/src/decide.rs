//! `approve`, `reject`, `cancel`, `retry-publish`: a person's decisions, as
//! the annotations the operator reads (`docs/operator.md`):
//!
//! | command         | annotation                           | the operator acts when                          |
//! |-----------------|--------------------------------------|-------------------------------------------------|
//! | `approve`       | `hermes.dev/approve: <reviewed sha>` | AwaitingApproval and the sha is the reviewed one |
//! | `reject`        | `hermes.dev/reject: <reviewed sha>`  | the same                                        |
//! | `cancel`        | `hermes.dev/cancel: "true"`          | the task has not ended                          |
//! | `retry-publish` | `hermes.dev/retry-publish: <new>`    | Succeeded with a failed push, volume kept       |
//!
//! Each command checks the task's state first and refuses, saying why,
//! where the operator would ignore the annotation. The write is a merge
//! patch carrying the resourceVersion that was checked, so a task that
//! changed in between is read and checked again rather than annotated
//! blindly.

use std::collections::BTreeMap;
use std::io::Write;

use hermes_crds::TaskPhase;
use hermes_crds::task::{
    ANNOTATION_APPROVE, ANNOTATION_CANCEL, ANNOTATION_REJECT, ANNOTATION_RETRY_PUBLISH, HermesTask,
};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, Patch, PatchParams};

use crate::args::GlobalArgs;
use crate::client::{Connection, connect};
use crate::naming::{ANNOTATION_REJECT_REASON, FIELD_MANAGER, repo_pvc_name};
use crate::status::{get_task, phase_name};
use crate::{Error, Result};

/// A decision to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve the reviewed commit.
    Approve,
    /// Reject the reviewed commit, perhaps saying why.
    Reject {
        /// Why.
        reason: Option<String>,
    },
    /// Stop the task.
    Cancel,
    /// Publish again after a failed push.
    RetryPublish,
}

fn annotation<'a>(t: &'a HermesTask, key: &str) -> Option<&'a str> {
    t.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(|s| s.trim())
}

fn phase_text(t: &HermesTask) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.phase)
        .map_or_else(|| "not yet started".into(), phase_name)
}

/// The reviewed commit of a task awaiting a person's decision, or why
/// there is none to decide on.
pub fn reviewed_commit_to_decide(t: &HermesTask, verb: &str) -> Result<String> {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let status = t.status.as_ref();
    let phase = status.and_then(|s| s.phase);
    let review = status.and_then(|s| s.review.as_ref());
    if phase != Some(TaskPhase::AwaitingApproval) {
        let why = match (phase, review) {
            (_, None) if t.spec.review.mode == hermes_crds::task::ReviewMode::Auto => format!(
                "task {name} has review: auto, so its reviewer decides; there is nothing to {verb}"
            ),
            (_, None) => format!(
                "task {name} has no review yet (phase {}): wait until it is AwaitingApproval",
                phase_text(t)
            ),
            (Some(p), Some(_)) if p.is_terminal() => {
                format!("task {name} has already ended ({})", phase_name(p))
            }
            _ => format!(
                "task {name} is not awaiting approval (phase {})",
                phase_text(t)
            ),
        };
        return Err(Error::Refused(format!("cannot {verb}: {why}")));
    }
    let Some(review) = review else {
        return Err(Error::Refused(format!(
            "cannot {verb}: task {name} is awaiting approval but records no reviewed commit"
        )));
    };
    Ok(review.reviewed_commit.clone())
}

/// The annotations a decision writes, or why it is refused.
pub fn annotations_for(
    t: &HermesTask,
    decision: &Decision,
    fresh: &str,
) -> Result<BTreeMap<String, String>> {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let phase = t.status.as_ref().and_then(|s| s.phase);
    Ok(match decision {
        Decision::Approve => {
            let commit = reviewed_commit_to_decide(t, "approve")?;
            if annotation(t, ANNOTATION_REJECT) == Some(commit.as_str()) {
                return Err(Error::Refused(format!(
                    "cannot approve: task {name} already carries {ANNOTATION_REJECT}={commit}"
                )));
            }
            BTreeMap::from([(ANNOTATION_APPROVE.to_owned(), commit)])
        }
        Decision::Reject { reason } => {
            let commit = reviewed_commit_to_decide(t, "reject")?;
            if annotation(t, ANNOTATION_APPROVE) == Some(commit.as_str()) {
                return Err(Error::Refused(format!(
                    "cannot reject: task {name} already carries {ANNOTATION_APPROVE}={commit} (it is being published)"
                )));
            }
            let mut a = BTreeMap::from([(ANNOTATION_REJECT.to_owned(), commit)]);
            if let Some(r) = reason {
                a.insert(ANNOTATION_REJECT_REASON.to_owned(), r.clone());
            }
            a
        }
        Decision::Cancel => {
            if let Some(p) = phase.filter(|p| p.is_terminal()) {
                return Err(Error::Refused(format!(
                    "cannot cancel: task {name} has already ended ({})",
                    phase_name(p)
                )));
            }
            BTreeMap::from([(ANNOTATION_CANCEL.to_owned(), "true".to_owned())])
        }
        Decision::RetryPublish => {
            let publish = t.status.as_ref().and_then(|s| s.publish.as_ref());
            let failed = publish.is_some_and(|p| !p.pushed);
            if phase != Some(TaskPhase::Succeeded) || !failed {
                let why = match (phase, publish) {
                    (Some(TaskPhase::Publishing), _) => "it is publishing now".to_owned(),
                    (_, Some(p)) if p.pushed => "its push succeeded".to_owned(),
                    _ => format!("it has no failed push (phase {})", phase_text(t)),
                };
                return Err(Error::Refused(format!(
                    "cannot retry-publish: task {name}: {why}"
                )));
            }
            let mut value = fresh.to_owned();
            let taken = [
                publish.and_then(|p| p.retried_for.as_deref()),
                annotation(t, ANNOTATION_RETRY_PUBLISH),
            ];
            while taken.contains(&Some(value.as_str())) {
                value.push('x');
            }
            BTreeMap::from([(ANNOTATION_RETRY_PUBLISH.to_owned(), value)])
        }
    })
}

/// A value not used before: the time, to the nanosecond.
pub fn fresh_value() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    now.strftime("%Y%m%dT%H%M%S.%fZ").to_string()
}

/// Runs a decision command on task `name`.
pub async fn run(
    global: &GlobalArgs,
    name: &str,
    decision: Decision,
    out: &mut impl Write,
) -> Result<()> {
    let conn = connect(global).await?;
    let api: Api<HermesTask> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let mut attempts = 0;
    loop {
        attempts += 1;
        let task = get_task(&api, name, &conn.namespace).await?;
        let annotations = annotations_for(&task, &decision, &fresh_value())?;
        if decision == Decision::RetryPublish {
            check_volume(&conn, name).await?;
        }
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": task.metadata.resource_version,
                "annotations": annotations,
            }
        });
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                let text = match &decision {
                    Decision::Approve => format!(
                        "hermestask.hermes.dev/{name} approved: commit {} (the operator publishes this commit only)",
                        annotations
                            .get(ANNOTATION_APPROVE)
                            .map(String::as_str)
                            .unwrap_or_default()
                    ),
                    Decision::Reject { .. } => format!(
                        "hermestask.hermes.dev/{name} rejected: commit {}",
                        annotations
                            .get(ANNOTATION_REJECT)
                            .map(String::as_str)
                            .unwrap_or_default()
                    ),
                    Decision::Cancel => format!("hermestask.hermes.dev/{name} cancel requested"),
                    Decision::RetryPublish => format!(
                        "hermestask.hermes.dev/{name} retry-publish requested ({}={})",
                        ANNOTATION_RETRY_PUBLISH,
                        annotations
                            .get(ANNOTATION_RETRY_PUBLISH)
                            .map(String::as_str)
                            .unwrap_or_default()
                    ),
                };
                writeln!(out, "{text}").map_err(Error::Write)?;
                return Ok(());
            }
            // The task changed since it was read: read and check again.
            Err(kube::Error::Api(s)) if s.code == 409 && attempts < 5 => continue,
            Err(e) => return Err(Error::api(format!("annotating hermestask {name}"))(e)),
        }
    }
}

/// Retrying a push needs the repo volume: refuse when it is gone. A
/// client that may not read claims leaves the check to the operator.
async fn check_volume(conn: &Connection, name: &str) -> Result<()> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let claim = repo_pvc_name(name);
    match pvcs.get_opt(&claim).await {
        Ok(Some(p)) if p.metadata.deletion_timestamp.is_none() => Ok(()),
        Ok(_) => Err(Error::Refused(format!(
            "cannot retry-publish: task {name}'s repo volume ({claim}) is gone; publish needs it. \
             Set the profile's volume.retainAfterCompletion to keep volumes after a task ends, then run the task again"
        ))),
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        Err(e) => Err(Error::api(format!("reading persistentvolumeclaim {claim}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    fn task(mode: &str, status: serde_json::Value, annotations: serde_json::Value) -> HermesTask {
        serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
            "metadata": {"name": "t", "annotations": annotations},
            "spec": {"repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
                     "task": "x", "scope": ["src/**"], "review": {"mode": mode}},
            "status": status,
        }))
        .expect("task")
    }

    fn awaiting() -> serde_json::Value {
        json!({"phase": "AwaitingApproval", "review": {"verdict": "approve", "reviewedCommit": HEAD}})
    }

    fn refusal(r: Result<BTreeMap<String, String>>) -> String {
        match r {
            Err(Error::Refused(m)) => m,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn approve_binds_the_reviewed_commit() {
        let a = annotations_for(
            &task("manual", awaiting(), json!({})),
            &Decision::Approve,
            "f",
        )
        .expect("approve");
        assert_eq!(
            a,
            BTreeMap::from([(ANNOTATION_APPROVE.to_owned(), HEAD.to_owned())])
        );
    }

    #[test]
    fn approve_is_refused_without_a_review_or_when_not_awaiting() {
        let m = refusal(annotations_for(
            &task("manual", json!({"phase": "Implementing"}), json!({})),
            &Decision::Approve,
            "f",
        ));
        assert!(
            m.contains("no review yet") && m.contains("Implementing"),
            "{m}"
        );
        let m = refusal(annotations_for(
            &task("auto", json!({"phase": "Reviewing"}), json!({})),
            &Decision::Approve,
            "f",
        ));
        assert!(m.contains("review: auto"), "{m}");
        let mut done = awaiting();
        done["phase"] = json!("Succeeded");
        let m = refusal(annotations_for(
            &task("manual", done, json!({})),
            &Decision::Approve,
            "f",
        ));
        assert!(m.contains("already ended (Succeeded)"), "{m}");
        let m = refusal(annotations_for(
            &task("manual", json!(null), json!({})),
            &Decision::Approve,
            "f",
        ));
        assert!(m.contains("not yet started"), "{m}");
    }

    #[test]
    fn reject_binds_the_reviewed_commit_and_records_the_reason() {
        let a = annotations_for(
            &task("manual", awaiting(), json!({})),
            &Decision::Reject {
                reason: Some("deletes the tests".into()),
            },
            "f",
        )
        .expect("reject");
        assert_eq!(a.get(ANNOTATION_REJECT).map(String::as_str), Some(HEAD));
        assert_eq!(
            a.get(ANNOTATION_REJECT_REASON).map(String::as_str),
            Some("deletes the tests")
        );
        let m = refusal(annotations_for(
            &task("manual", awaiting(), json!({ANNOTATION_APPROVE: HEAD})),
            &Decision::Reject { reason: None },
            "f",
        ));
        assert!(m.contains("being published"), "{m}");
    }

    #[test]
    fn cancel_is_refused_once_the_task_ended() {
        let a = annotations_for(
            &task("auto", json!({"phase": "Implementing"}), json!({})),
            &Decision::Cancel,
            "f",
        )
        .expect("cancel");
        assert_eq!(a.get(ANNOTATION_CANCEL).map(String::as_str), Some("true"));
        let m = refusal(annotations_for(
            &task("auto", json!({"phase": "Failed"}), json!({})),
            &Decision::Cancel,
            "f",
        ));
        assert!(m.contains("already ended (Failed)"), "{m}");
    }

    #[test]
    fn retry_publish_needs_a_failed_push_and_a_new_value() {
        let failed =
            json!({"phase": "Succeeded", "publish": {"pushed": false, "retriedFor": "v1"}});
        let a = annotations_for(
            &task("auto", failed.clone(), json!({})),
            &Decision::RetryPublish,
            "v2",
        )
        .expect("retry");
        assert_eq!(
            a.get(ANNOTATION_RETRY_PUBLISH).map(String::as_str),
            Some("v2")
        );
        // A value already used is never sent again: it would do nothing.
        let a = annotations_for(
            &task("auto", failed, json!({ANNOTATION_RETRY_PUBLISH: "v2"})),
            &Decision::RetryPublish,
            "v1",
        )
        .expect("retry");
        let v = a.get(ANNOTATION_RETRY_PUBLISH).cloned().unwrap_or_default();
        assert!(v != "v1" && v != "v2", "{v}");
        let m = refusal(annotations_for(
            &task(
                "auto",
                json!({"phase": "Succeeded", "publish": {"pushed": true}}),
                json!({}),
            ),
            &Decision::RetryPublish,
            "v",
        ));
        assert!(m.contains("push succeeded"), "{m}");
        let m = refusal(annotations_for(
            &task("auto", json!({"phase": "Reviewing"}), json!({})),
            &Decision::RetryPublish,
            "v",
        ));
        assert!(m.contains("no failed push"), "{m}");
    }

    #[test]
    fn fresh_values_are_valid_annotation_values_and_differ() {
        let a = fresh_value();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = fresh_value();
        assert_ne!(a, b);
        assert!(a.len() < 64 && a.ends_with('Z'), "{a}");
    }
}
