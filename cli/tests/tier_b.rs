//! The plugin on a real node (Tier B): the operator deployed from its image,
//! the real agent CLI against the scripted model server, a real git remote.
//! One task with manual review, driven only through the plugin: `run
//! --watch`, `diff` while it awaits approval, `approve`, then `logs` of every
//! phase and `status`.
//!
//! Tier B is shared: run this under `flock /tmp/hermes-tier-b.lock`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use hermes_e2e::tier_b::{ProfileOptions, TierB};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use support::*;

const TASK_TIMEOUT: Duration = Duration::from_secs(300);

/// The container headers `logs` prints, in order: (phase, container).
fn headers(logs: &str) -> Vec<(String, String)> {
    logs.lines()
        .filter_map(|l| l.strip_prefix("==> ")?.strip_suffix(" <=="))
        .map(|h| {
            let parts: Vec<&str> = h.split(" · ").collect();
            let phase = parts[0].split(' ').next().unwrap_or_default().to_owned();
            let container = parts
                .iter()
                .find_map(|p| p.strip_prefix("container "))
                .unwrap_or_default()
                .to_owned();
            (phase, container)
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

#[tokio::test]
async fn a_manual_task_run_diffed_approved_and_logged_through_the_plugin() {
    let Some(b) = TierB::connect().await else {
        return;
    };
    let f = b
        .fixture(
            "cli",
            ProfileOptions::scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();
    let ns = f.ns.name.clone();
    let repo = "cli-greet.git";
    let url = b.seed_repo(repo, "greeter").unwrap();
    let base = b.remote_rev(repo, "refs/heads/main").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "greet.md",
        &task_file("greet", &url, "manual", "publish: merge\n"),
    );

    // `kubectl hermes run --watch` follows the task until it ends.
    let watch = Command::new(cluster_kubectl(&b))
        .args([
            "hermes",
            "run",
            file.to_str().unwrap(),
            "--watch",
            "-n",
            &ns,
        ])
        .env("PATH", path_with_plugin())
        .env("KUBECONFIG", b.cluster.kubeconfig_path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let t = f
        .wait_phase(
            "greet",
            &["AwaitingApproval", "Failed", "Rejected"],
            TASK_TIMEOUT,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", f.pod_logs()));
    let status = t.status.clone().unwrap();
    assert_eq!(
        status.phase.map(|p| format!("{p:?}")).as_deref(),
        Some("AwaitingApproval"),
        "{status:#?}\n{}",
        f.pod_logs()
    );
    assert_eq!(status.base_commit.as_deref(), Some(base.as_str()));
    let reviewed = status.review.as_ref().unwrap().reviewed_commit.clone();

    // The reviewed diff, read from the volume by a short-lived runner pod.
    let diff = hermes(&b.cluster, &ns, ["diff", "greet"]);
    let patch = diff.ok().to_owned();
    assert!(
        patch.contains("diff --git a/src/greet.sh b/src/greet.sh"),
        "{patch}"
    );
    assert!(
        patch.contains("-echo \"Hello $name\"\n+echo \"Hello, $name!\"\n"),
        "{patch}"
    );
    // No diff pod is left behind.
    let pods: Api<Pod> = Api::namespaced(b.cluster.client.clone(), &ns);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=diff"))
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{left} diff pod(s) left"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Approve through kubectl: the operator publishes the reviewed commit.
    let out = kubectl_hermes(&b.cluster, ["approve", "greet", "-n", &ns]);
    assert!(
        out.ok().contains(&format!("approved: commit {reviewed}")),
        "{out:?}"
    );
    let watched = tokio::task::spawn_blocking(move || watch.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&watched.stdout).into_owned();
    assert_eq!(
        watched.status.code(),
        Some(0),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&watched.stderr),
        f.pod_logs()
    );
    let phases: Vec<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.strip_prefix("greet: "))
        .map(|l| l.split([' ', '(']).next().unwrap_or_default())
        .collect();
    let order = [
        "Preparing",
        "Implementing",
        "Reviewing",
        "AwaitingApproval",
        "Publishing",
        "Succeeded",
    ];
    let positions: Vec<usize> = phases
        .iter()
        .map(|p| {
            order
                .iter()
                .position(|o| o == p)
                .unwrap_or_else(|| panic!("{p} in {stdout}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "phases out of order: {stdout}"
    );
    assert_eq!(phases.first(), Some(&"Preparing"), "{stdout}");
    assert!(
        phases.contains(&"AwaitingApproval") && phases.last() == Some(&"Succeeded"),
        "{stdout}"
    );

    // The merge on the remote holds exactly the change the plugin showed.
    let merged = b.remote_rev(repo, "refs/heads/main").unwrap();
    assert_ne!(merged, base);
    let remote_diff = b
        .remote_git(repo, &["diff", "--no-color", &base, &reviewed])
        .unwrap();
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("index "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(body(&patch), body(&remote_diff));

    // Logs: every phase's pod, every container, in the order they ran.
    let logs = hermes(&b.cluster, &ns, ["logs", "greet"]).ok().to_owned();
    let all = pairs(&[
        ("prepare", "prepare"),
        ("implement", "install-runner"),
        ("implement", "agent"),
        ("implement", "collect"),
        ("review", "context"),
        ("review", "install-runner"),
        ("review", "reviewer"),
        ("review", "verdict"),
        ("publish", "verify"),
        ("publish", "publish"),
    ]);
    assert_eq!(headers(&logs), all, "{logs}");
    assert!(
        logs.contains("task branch created"),
        "prepare's own log line: {logs}"
    );
    let review = kubectl_hermes(
        &b.cluster,
        ["logs", "greet", "--phase", "review", "-n", &ns],
    );
    assert_eq!(headers(review.ok()), all[4..8].to_vec(), "{review:?}");
    // Following a finished task prints the same and returns.
    let followed = hermes(&b.cluster, &ns, ["logs", "greet", "-f"]);
    assert_eq!(headers(followed.ok()), all);

    let detail = hermes(&b.cluster, &ns, ["status", "greet"]).ok().to_owned();
    assert!(detail.contains("Phase:       Succeeded"), "{detail}");
    assert!(
        detail.contains(&format!(
            "Verdict:     approve, decided by person on {reviewed}"
        )),
        "{detail}"
    );
    assert!(
        detail.contains(&format!("Publish:     pushed, merge commit {merged}")),
        "{detail}"
    );

    // The volume is gone once the task ended (no retention): diff says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = hermes(&b.cluster, &ns, ["diff", "greet"]);
        if out.code == Some(1) && out.stderr.contains("is gone") {
            assert!(
                out.stderr.contains(&format!("git diff {base} {reviewed}")),
                "{out:?}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the volume stayed: {out:?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn cluster_kubectl(b: &TierB) -> std::path::PathBuf {
    b.cluster.kubectl_binary().to_path_buf()
}
