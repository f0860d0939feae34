//! `diff`: the reviewed change, `status.baseCommit..status.review.reviewedCommit`.
//!
//! ```text
//!   kubectl hermes diff T
//!     │ reads T's status (the two commits, recorded by the operator) and profile
//!     ├─ creates pod T-diff-xxxxx: runner image, `hermes-runner diff`
//!     │    repo volume <T>-repo mounted READ-ONLY, no credentials, no
//!     │    service-account token, no network (T's default-deny policy
//!     │    selects it), restricted security context, the profile's runtime class
//!     ├─ waits for it to end; prints its log (the patch)
//!     └─ deletes it (owned by T, so it goes with T even if this is interrupted)
//! ```
//!
//! The runner reads the volume as data, as review does (no hooks, config or
//! refs of the volume; objects hash-verified) and never trusts a ref there:
//! both commit ids come from the task's status. The volume exists while the
//! task runs (including while it awaits approval) and after it ends only for
//! the profile's `volume.retainAfterCompletion`; when it is gone, the error
//! says where else the reviewed commit may be (the remote, if it was pushed).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use hermes_crds::HermesProfile;
use hermes_crds::task::{HermesTask, PublishMode};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Resource;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use serde_json::json;

use crate::args::{DiffArgs, GlobalArgs};
use crate::client::connect;
use crate::naming::{LABEL_TASK, repo_pvc_name, task_label};
use crate::status::{get_task, phase_name};
use crate::{Error, Result};

/// The runner binary inside the runner image.
pub const RUNNER: &str = "/usr/local/bin/hermes-runner";
/// The uid and gid task containers run as.
pub const RUN_AS: i64 = 65532;
/// The container's name in the diff pod.
pub const CONTAINER: &str = "diff";
/// The largest diff the pod prints (container logs rotate past 10 MiB).
pub const MAX_BYTES: u64 = 8 << 20;

/// The two commits of the reviewed diff, or why there are none yet.
pub fn commits(t: &HermesTask) -> Result<(String, String)> {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let status = t.status.as_ref();
    let phase = status
        .and_then(|s| s.phase)
        .map_or_else(|| "not yet started".into(), phase_name);
    let base = status.and_then(|s| s.base_commit.clone());
    let reviewed = status
        .and_then(|s| s.review.as_ref())
        .map(|r| r.reviewed_commit.clone());
    match (base, reviewed) {
        (Some(b), Some(r)) => Ok((b, r)),
        _ => Err(Error::DiffUnavailable(format!(
            "task {name} has no reviewed commit yet (phase {phase}): the diff is available once review has run"
        ))),
    }
}

/// Why the diff is gone, and where else the reviewed commit may be.
pub fn volume_gone(t: &HermesTask, base: &str, reviewed: &str) -> Error {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let mut text = format!(
        "the repo volume of task {name} ({}) is gone, and with it the reviewed commit's objects: \
         volumes are deleted when a task ends unless the profile sets volume.retainAfterCompletion.",
        repo_pvc_name(name)
    );
    let publish = t.status.as_ref().and_then(|s| s.publish.as_ref());
    if publish.is_some_and(|p| p.pushed) && t.spec.publish.mode != PublishMode::None {
        let branch = match t.spec.publish.mode {
            PublishMode::Merge => t.spec.repo.base_ref.0.clone(),
            _ => t
                .status
                .as_ref()
                .and_then(|s| s.branch.clone())
                .unwrap_or_else(|| t.work_branch().0),
        };
        text.push_str(&format!(
            "\nThe reviewed commit was pushed: in a clone of {url},\n  git fetch origin {branch} && git diff {base} {reviewed}",
            url = t.spec.repo.url
        ));
    }
    Error::DiffUnavailable(text)
}

/// The diff pod for task `t` (profile `profile`), reading commits `base`
/// and `reviewed` from the task's repo volume.
pub fn pod(t: &HermesTask, profile: &HermesProfile, base: &str, reviewed: &str) -> Result<Pod> {
    let name = t.metadata.name.as_deref().unwrap_or_default();
    let p = &profile.spec;
    let owner = t.object_ref(&());
    let resources = p.runner.resources.clone().map_or_else(
        || json!({"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "250m", "memory": "256Mi"}}),
        |r| serde_json::to_value(r).unwrap_or_default(),
    );
    let prefix: String = task_label(name).chars().take(40).collect();
    let labels = BTreeMap::from([
        (LABEL_TASK.to_owned(), task_label(name)),
        ("app.kubernetes.io/name".to_owned(), "hermes".to_owned()),
        ("app.kubernetes.io/component".to_owned(), "diff".to_owned()),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "kubectl-hermes".to_owned(),
        ),
    ]);
    let pull = serde_json::to_value(p.image_pull_policy).unwrap_or_default();
    let mut spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "enableServiceLinks": false,
        "activeDeadlineSeconds": 300,
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsNonRoot": true, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [{
            "name": CONTAINER,
            "image": p.runner.image.0,
            "imagePullPolicy": pull,
            "command": [RUNNER],
            "args": ["diff", "--repo-dir", "/workspace/repo", "--base-commit", base,
                     "--commit", reviewed, "--scratch-dir", "/tmp/diff",
                     "--max-bytes", MAX_BYTES.to_string()],
            "env": [{"name": "TMPDIR", "value": "/tmp"}],
            "resources": resources,
            "securityContext": {
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]},
                "readOnlyRootFilesystem": true, "runAsNonRoot": true,
            },
            "terminationMessagePolicy": "File",
            "volumeMounts": [
                {"name": "repo", "mountPath": "/workspace", "readOnly": true},
                {"name": "tmp", "mountPath": "/tmp"},
            ],
        }],
        "volumes": [
            {"name": "repo", "persistentVolumeClaim": {"claimName": repo_pvc_name(name), "readOnly": true}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
        ],
    });
    if let Some(rc) = &p.runtime_class_name {
        spec["runtimeClassName"] = json!(rc.0);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": format!("{prefix}-diff-"),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": owner.api_version, "kind": owner.kind,
                "name": name, "uid": owner.uid,
            }],
        },
        "spec": spec,
    }))
    .map_err(|e| Error::Serialize(e.to_string()))
}

/// Why a pod that has not started never will, if that is so.
fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if matches!(
                reason,
                "ErrImagePull"
                    | "ImagePullBackOff"
                    | "ErrImageNeverPull"
                    | "InvalidImageName"
                    | "CreateContainerConfigError"
                    | "CreateContainerError"
            ) {
                return Some(format!(
                    "{reason}: {}",
                    w.message.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    None
}

fn termination_message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.name == CONTAINER)
        .and_then(|c| c.state.as_ref()?.terminated.as_ref())
        .map(|t| {
            t.message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| format!("exit code {}", t.exit_code))
        })
        .unwrap_or_else(|| "the pod failed before the runner ran".into())
}

/// Runs `diff`.
pub async fn run(global: &GlobalArgs, args: &DiffArgs, out: &mut impl Write) -> Result<()> {
    let conn = connect(global).await?;
    let ns = conn.namespace.clone();
    let tasks: Api<HermesTask> = Api::namespaced(conn.client.clone(), &ns);
    let task = get_task(&tasks, &args.task, &ns).await?;
    let (base, reviewed) = commits(&task)?;

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(conn.client.clone(), &ns);
    let claim = repo_pvc_name(&args.task);
    let present = claims
        .get_opt(&claim)
        .await
        .map_err(Error::api(format!("reading persistentvolumeclaim {claim}")))?
        .is_some_and(|c| c.metadata.deletion_timestamp.is_none());
    if !present {
        return Err(volume_gone(&task, &base, &reviewed));
    }
    let profiles: Api<HermesProfile> = Api::namespaced(conn.client.clone(), &ns);
    let profile_name = task.spec.profile.as_str();
    let profile = profiles
        .get_opt(profile_name)
        .await
        .map_err(Error::api(format!("reading hermesprofile {profile_name}")))?
        .ok_or_else(|| {
            Error::DiffUnavailable(format!(
                "hermesprofile {profile_name} (the task's profile, whose runner image computes the diff) does not exist"
            ))
        })?;

    let pods: Api<Pod> = Api::namespaced(conn.client.clone(), &ns);
    let created = pods
        .create(
            &PostParams::default(),
            &pod(&task, &profile, &base, &reviewed)?,
        )
        .await
        .map_err(Error::api("creating the diff pod"))?;
    let pod_name = created.metadata.name.clone().unwrap_or_default();
    let result = wait_and_read(&pods, &pod_name, Duration::from_secs(args.timeout)).await;
    // Best effort: the pod is owned by the task and ends by its deadline anyway.
    let _ = pods.delete(&pod_name, &DeleteParams::background()).await;
    let patch = result?;
    out.write_all(patch.as_bytes()).map_err(Error::Write)?;
    Ok(())
}

async fn wait_and_read(pods: &Api<Pod>, name: &str, timeout: Duration) -> Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods
            .get(name)
            .await
            .map_err(Error::api(format!("reading pod {name}")))?;
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded") => {
                let params = LogParams {
                    container: Some(CONTAINER.into()),
                    ..LogParams::default()
                };
                return pods
                    .logs(name, &params)
                    .await
                    .map_err(Error::api(format!("reading the output of pod {name}")));
            }
            Some("Failed") => {
                let mut why = termination_message(&pod);
                // Without a message of its own (the runner did not get to
                // write one), the end of its log says why.
                if why.starts_with("exit code") {
                    let params = LogParams {
                        container: Some(CONTAINER.into()),
                        tail_lines: Some(20),
                        ..LogParams::default()
                    };
                    if let Ok(log) = pods.logs(name, &params).await
                        && !log.trim().is_empty()
                    {
                        why = format!("{why}:\n{}", log.trim_end());
                    }
                }
                return Err(Error::DiffFailed(why));
            }
            _ => {}
        }
        if let Some(why) = stuck(&pod) {
            return Err(Error::DiffFailed(format!("pod {name} cannot start: {why}")));
        }
        if Instant::now() > deadline {
            let phase = pod
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "unknown".into());
            return Err(Error::Timeout(format!(
                "the diff pod {name} did not finish in {}s (phase {phase}); see `kubectl describe pod {name}`",
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "89abcdef0123456789abcdef0123456789abcdef";
    const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

    fn task(status: serde_json::Value, publish: &str) -> HermesTask {
        serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
            "metadata": {"name": "add-flag", "namespace": "team", "uid": "u-1"},
            "spec": {"repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
                     "task": "x", "scope": ["src/**"], "publish": {"mode": publish}},
            "status": status,
        }))
        .expect("task")
    }

    fn profile() -> HermesProfile {
        serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile",
            "metadata": {"name": "default"},
            "spec": {"agent": {"image": "a:1", "command": ["claude"]},
                     "reviewer": {"image": "r:1", "command": ["claude"]},
                     "runner": {"image": "hermes/runner:1"},
                     "imagePullPolicy": "Never",
                     "runtimeClassName": "gvisor"},
        }))
        .expect("profile")
    }

    #[test]
    fn the_diff_needs_a_review() {
        let e = commits(&task(
            json!({"phase": "Implementing", "baseCommit": BASE}),
            "merge",
        ))
        .expect_err("no review");
        assert!(
            e.to_string()
                .contains("no reviewed commit yet (phase Implementing)"),
            "{e}"
        );
        let ok = commits(&task(
            json!({"phase": "AwaitingApproval", "baseCommit": BASE,
                   "review": {"verdict": "approve", "reviewedCommit": HEAD}}),
            "merge",
        ))
        .expect("commits");
        assert_eq!(ok, (BASE.to_owned(), HEAD.to_owned()));
    }

    #[test]
    fn a_gone_volume_points_at_the_pushed_commit() {
        let t = task(
            json!({"phase": "Succeeded", "baseCommit": BASE, "branch": "hermes/add-flag",
                   "review": {"verdict": "approve", "reviewedCommit": HEAD},
                   "publish": {"pushed": true}}),
            "branch",
        );
        let text = volume_gone(&t, BASE, HEAD).to_string();
        assert!(text.contains("retainAfterCompletion"), "{text}");
        assert!(
            text.contains(&format!(
                "git fetch origin hermes/add-flag && git diff {BASE} {HEAD}"
            )),
            "{text}"
        );
        let t = task(json!({"phase": "Rejected"}), "merge");
        let text = volume_gone(&t, BASE, HEAD).to_string();
        assert!(!text.contains("git fetch"), "{text}");
    }

    /// The pod holds no credentials, no token, no write access, and runs
    /// restricted: what `kubectl hermes diff` may run in a locked namespace.
    #[test]
    fn the_diff_pod_is_least_privilege() {
        let t = task(json!({}), "merge");
        let p = pod(&t, &profile(), BASE, HEAD).expect("pod");
        let v = serde_json::to_value(&p).expect("json");
        let spec = &v["spec"];
        assert_eq!(spec["automountServiceAccountToken"], false);
        assert_eq!(spec["enableServiceLinks"], false);
        assert_eq!(spec["runtimeClassName"], "gvisor");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true);
        let c = &spec["containers"][0];
        assert_eq!(c["image"], "hermes/runner:1");
        assert_eq!(c["imagePullPolicy"], "Never");
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert!(c.get("envFrom").is_none());
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .filter_map(|a| a.as_str())
            .collect();
        assert_eq!(
            &args[..7],
            [
                "diff",
                "--repo-dir",
                "/workspace/repo",
                "--base-commit",
                BASE,
                "--commit",
                HEAD
            ]
        );
        let volumes = spec["volumes"].as_array().expect("volumes");
        assert!(volumes.iter().all(|v| v.get("secret").is_none()));
        assert_eq!(
            volumes[0]["persistentVolumeClaim"]["claimName"],
            "add-flag-repo"
        );
        assert_eq!(volumes[0]["persistentVolumeClaim"]["readOnly"], true);
        assert!(
            c["volumeMounts"]
                .as_array()
                .expect("mounts")
                .iter()
                .any(|m| m["readOnly"] == true)
        );
        // Selected by the namespace's default-deny NetworkPolicy (no allow
        // list selects it), and owned by the task.
        assert_eq!(v["metadata"]["labels"][LABEL_TASK], "add-flag");
        assert!(v["metadata"]["labels"].get("hermes.dev/phase").is_none());
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "u-1");
        assert!(
            v["metadata"]["ownerReferences"][0]
                .get("controller")
                .is_none()
        );
    }

    /// The pod's command line is one the runner accepts (the contract with
    /// `hermes-runner diff`), with the task's commits and the read-only mount.
    #[test]
    fn the_runner_parses_the_diff_pods_command_line() {
        use clap::Parser;
        let p = pod(&task(json!({}), "merge"), &profile(), BASE, HEAD).expect("pod");
        let c = &p.spec.expect("spec").containers[0];
        let argv: Vec<String> = c
            .command
            .clone()
            .unwrap_or_default()
            .into_iter()
            .chain(c.args.clone().unwrap_or_default())
            .collect();
        assert_eq!(argv[0], RUNNER);
        let cli = hermes_runner::cli::Cli::try_parse_from(&argv).expect("the runner parses it");
        let hermes_runner::cli::Command::Diff(d) = cli.command else {
            panic!("not diff: {argv:?}")
        };
        assert_eq!((d.base_commit.as_str(), d.commit.as_str()), (BASE, HEAD));
        assert_eq!(d.max_bytes, MAX_BYTES);
        let mounts = c.volume_mounts.clone().unwrap_or_default();
        let repo = mounts
            .iter()
            .find(|m| m.name == "repo")
            .expect("repo mount");
        assert!(d.repo_dir.starts_with(&repo.mount_path));
        let tmp = mounts.iter().find(|m| m.name == "tmp").expect("tmp mount");
        assert!(
            d.scratch_dir.starts_with(&tmp.mount_path),
            "the scratch dir is writable"
        );
    }
}
