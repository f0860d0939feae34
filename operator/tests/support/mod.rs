//! Tier A support for the operator tests: the operator as a real process, a
//! profile and tasks, and the kubelet played by the test (it writes the
//! pods' statuses and termination messages, as a kubelet would).

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermes_crds::{HermesProfile, HermesTask, TaskPhase};
use hermes_e2e::{TestNamespace, TierA};
use hermes_results::{StepResult, encode};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// How a container ended: (name, exit code, termination message).
pub type Outcome<'a> = (&'a str, i32, String);

pub mod kubelet;

#[allow(unused_imports)]
pub use kubelet::{BASE, HEAD, MERGE, collected, context, prepared, published, verdict};

/// The operator binary, running against Tier A; killed when dropped.
pub struct Operator {
    child: Child,
}

impl Operator {
    /// Starts an operator watching `namespace` only, so concurrent tests do
    /// not act on each other's tasks. Its identity is stable per namespace, as
    /// a restarted container keeps its pod's name.
    pub fn start(cluster: &TierA, namespace: &str) -> Self {
        Self::start_with(cluster, namespace, &format!("op-{namespace}"), 0)
    }

    /// Starts an operator with a given identity and metrics port (0: any).
    pub fn start_with(cluster: &TierA, namespace: &str, identity: &str, metrics_port: u16) -> Self {
        let log = std::env::temp_dir().join(format!("hermes-operator-{namespace}-{identity}.log"));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_hermes-operator"))
            .env("KUBECONFIG", cluster.kubeconfig_path())
            .env("RUST_LOG", "info,kube=warn")
            .env("HERMES_WATCH_NAMESPACE", namespace)
            .env("HERMES_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
            .env("POD_NAME", identity)
            .stdout(Stdio::from(file.try_clone().expect("log file")))
            .stderr(Stdio::from(file))
            .spawn()
            .expect("start the operator");
        Self { child }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// GET a path from an operator's metrics listener; None while it does not answer.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// The value of a metric line (`name value`), if present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One test's world: a namespace with a profile, and the operator.
pub struct World {
    pub cluster: TierA,
    pub ns: TestNamespace,
    pub tasks: Api<HermesTask>,
    pub jobs: Api<Job>,
    pub pods: Api<Pod>,
}

impl World {
    pub async fn new(prefix: &str) -> Option<Self> {
        let cluster = TierA::connect().await?;
        cluster.install_crds().await.expect("CRDs");
        // Pod Security "restricted" is enforced: a task pod that broke it
        // would never be created, and every test here would time out.
        let ns = cluster
            .namespace_labelled(
                prefix,
                &[("pod-security.kubernetes.io/enforce", "restricted")],
            )
            .await
            .expect("namespace");
        let client = cluster.client.clone();
        Some(Self {
            tasks: Api::namespaced(client.clone(), &ns.name),
            jobs: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client, &ns.name),
            cluster,
            ns,
        })
    }

    pub async fn create_profile(&self, extra: Value) {
        let mut spec = json!({
            "agent": {"image": "hermes/agent:test", "command": ["claude", "-p"]},
            "reviewer": {"image": "hermes/reviewer:test", "command": ["claude", "-p"]},
            "runner": {"image": "hermes/runner:test"},
            "egress": {"implement": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}]}]},
            "secrets": {"model": "model-key", "gitRead": "git-read", "gitPush": "git-push"},
            "infrastructureRetries": 1,
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let profile: HermesProfile = serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile",
            "metadata": {"name": "default"}, "spec": spec,
        }))
        .expect("profile");
        Api::<HermesProfile>::namespaced(self.cluster.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &profile)
            .await
            .expect("create profile");
    }

    pub async fn create_task(&self, name: &str, extra: Value) {
        let mut spec = json!({
            "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
            "task": "# Add a flag\nDone when the tests pass.",
            "scope": ["src/**"],
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        let task: HermesTask = serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
            "metadata": {"name": name}, "spec": spec,
        }))
        .expect("task");
        self.tasks
            .create(&PostParams::default(), &task)
            .await
            .expect("create task");
    }

    pub async fn annotate(&self, task: &str, key: &str, value: &str) {
        self.tasks
            .patch(
                task,
                &PatchParams::default(),
                &Patch::Merge(&json!({"metadata": {"annotations": {key: value}}})),
            )
            .await
            .expect("annotate");
    }

    /// Waits until `check` holds for the task, or fails with the last status.
    pub async fn wait_task(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&HermesTask) -> bool,
    ) -> HermesTask {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let t = self.tasks.get(name).await.expect("read task");
            if check(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "{name}: timed out waiting for {what}; status: {}",
                    serde_json::to_string_pretty(&t.status).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: TaskPhase) -> HermesTask {
        self.wait_task(name, &format!("{phase:?}"), |t| {
            t.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits for a Job to exist and returns it.
    pub async fn wait_job(&self, name: &str) -> Job {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(j) = self.jobs.get_opt(name).await.expect("read job") {
                return j;
            }
            if Instant::now() > deadline {
                let names: Vec<_> = self.job_names().await;
                panic!("timed out waiting for Job {name}; Jobs: {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn job_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .jobs
            .list(&ListParams::default())
            .await
            .expect("list jobs")
            .items
            .into_iter()
            .filter_map(|j| j.metadata.name)
            .collect();
        names.sort();
        names
    }

    /// The pod the Job controller made for a Job.
    pub async fn wait_pod(&self, job: &str) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let pods = self
                .pods
                .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
                .await
                .expect("list pods");
            if let Some(p) = pods.items.into_iter().next() {
                return p;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the pod of {job}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Plays the kubelet: ends the Job's pod with these container outcomes
    /// (name, exit code, termination message), init containers first.
    pub async fn finish_pod(
        &self,
        job: &str,
        init: &[(&str, i32, String)],
        main: (&str, i32, String),
    ) {
        self.wait_job(job).await;
        let pod = self.wait_pod(job).await;
        let name = pod.metadata.name.clone().expect("pod name");
        let status = |(c, code, msg): &(&str, i32, String)| {
            json!({
                "name": c, "image": format!("hermes/{c}:test"), "imageID": format!("hermes/{c}@sha256:{}", "a".repeat(64)),
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": msg, "reason": if *code == 0 { "Completed" } else { "Error" },
                    "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z"}}
            })
        };
        let ok = main.1 == 0 && init.iter().all(|c| c.1 == 0);
        let body = json!({"status": {
            "phase": if ok { "Succeeded" } else { "Failed" },
            "initContainerStatuses": init.iter().map(status).collect::<Vec<_>>(),
            "containerStatuses": [status(&main)],
        }});
        self.pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&body))
            .await
            .expect("write pod status");
    }

    pub async fn finish(&self, job: &str, main_container: &str, result: &StepResult) {
        self.finish_pod(job, &[], (main_container, 0, encode(result).expect("fits")))
            .await;
    }
}

impl World {
    /// Drives a task through prepare, implement and review.
    pub async fn through_review(&self, task: &str, approve: bool) {
        self.finish(&format!("{task}-prepare"), "prepare", &prepared(task))
            .await;
        self.finish(&format!("{task}-implement"), "collect", &collected())
            .await;
        self.finish_pod(
            &format!("{task}-review"),
            &[
                ("context", 0, encode(&context(vec![])).expect("fits")),
                ("install-runner", 0, String::new()),
                ("reviewer", 0, String::new()),
            ],
            ("verdict", 0, encode(&verdict(approve)).expect("fits")),
        )
        .await;
    }
}

pub fn condition<'a>(
    t: &'a HermesTask,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}
