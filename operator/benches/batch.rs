//! Batch throughput on Tier A: a thousand HermesTasks driven to a terminal
//! phase by the operator (four phase Jobs each, pods ended by the kubelet
//! stand-in), against a harness that creates the same four thousand Jobs
//! itself (built by the operator's own builders, so the API server, the Job
//! controller and the stand-in carry the same objects) — a chain of four per
//! task, each Job once the previous one's pod succeeded, every chain at once
//! — in the same run, on the same cluster.
//! Prints tasks per minute for both and their ratio; asserts only that both
//! runs complete.
//!
//!     cargo bench -p hermes-operator --bench batch [-- --tasks N]
//!
//! Needs a running Tier A (`e2e/cluster/hermes-cluster up`), and a machine
//! otherwise idle: both runs share the API server and the Job controller.

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

#[path = "../tests/support/kubelet.rs"]
mod kubelet;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use hermes_crds::{HermesProfile, HermesProfileSpec, HermesTask, RunPhase, TaskPhase};
use hermes_e2e::TierA;
use hermes_operator::builders::{self, BuildInput, PhaseFacts};
use hermes_operator::narrowing::effective;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(cluster: &TierA, ns: &str) -> Operator {
    let child = Command::new(env!("CARGO_BIN_EXE_hermes-operator"))
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .env("HERMES_WATCH_NAMESPACE", ns)
        .env("HERMES_METRICS_ADDR", "127.0.0.1:0")
        .env("POD_NAME", format!("bench-{ns}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the operator");
    Operator(child)
}

/// The profile both runs use (uncapped).
fn profile_spec() -> serde_json::Value {
    json!({
        "agent": {"image": "hermes/agent:bench", "command": ["claude", "-p"]},
        "reviewer": {"image": "hermes/reviewer:bench", "command": ["claude", "-p"]},
        "runner": {"image": "hermes/runner:bench"},
        "egress": {"implement": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}]}]},
        "concurrency": {"maxRunning": 10000, "maxAwaitingReview": 10000},
    })
}

/// Bench task `i`, as both runs know it.
fn task(i: usize, ns: &str) -> HermesTask {
    serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": {"name": format!("t-{i:04}"), "namespace": ns},
        "spec": {
            "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
            "task": "# Bench\nDo nothing.", "scope": ["src/**"],
        }
    }))
    .unwrap()
}

/// The Job the operator would make for `phase` of bench task `i` (same
/// builder, same facts), without the owner reference: there is no task
/// object behind it, and the garbage collector would take the Job away.
fn raw_job(i: usize, ns: &str, phase: RunPhase) -> Job {
    let t = task(i, ns);
    let profile: HermesProfileSpec = serde_json::from_value(profile_spec()).unwrap();
    let e = effective(&t.spec, &profile).unwrap();
    let input = BuildInput {
        task: &t,
        profile: &profile,
        effective: &e,
        gateway: None,
        cluster: &[],
    };
    let facts = PhaseFacts {
        base_commit: (phase != RunPhase::Prepare).then(|| kubelet::BASE.to_owned()),
        reviewed_commit: (phase == RunPhase::Publish).then(|| kubelet::HEAD.to_owned()),
    };
    let mut job = builders::job(&input, phase, 1, &facts);
    job.metadata.owner_references = None;
    job
}

/// The raw harness: `n` chains of four Jobs; returns the wall time.
async fn raw(client: Client, ns: &str, n: usize) -> Duration {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // One watch tells each chain when its Job's pod succeeded.
    let waiting: Arc<Mutex<HashMap<String, oneshot::Sender<()>>>> = Arc::default();
    let w = waiting.clone();
    let follower = tokio::spawn(async move {
        let mut stream = watcher(pods, watcher::Config::default())
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(Ok(p)) = stream.next().await {
            if p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded") {
                continue;
            }
            let Some(job) = p.labels().get("batch.kubernetes.io/job-name").cloned() else {
                continue;
            };
            if let Some(tx) = w.lock().unwrap().remove(&job) {
                let _ = tx.send(());
            }
        }
    });
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(None, |i| {
            let jobs = jobs.clone();
            let waiting = waiting.clone();
            async move {
                for phase in RunPhase::ALL {
                    let job = raw_job(i, ns, phase);
                    let name = job.name_any();
                    let (tx, rx) = oneshot::channel();
                    waiting.lock().unwrap().insert(name, tx);
                    jobs.create(&PostParams::default(), &job)
                        .await
                        .expect("create Job");
                    rx.await.expect("pod succeeded");
                }
            }
        })
        .await;
    let elapsed = t0.elapsed();
    follower.abort();
    elapsed
}

/// The operator: `n` tasks under an uncapped profile; returns the wall time.
async fn hermes(cluster: &TierA, ns: &str, n: usize) -> Duration {
    let client = cluster.client.clone();
    let profile: HermesProfile = serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile",
        "metadata": {"name": "default"},
        "spec": profile_spec(),
    }))
    .unwrap();
    Api::<HermesProfile>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &profile)
        .await
        .expect("profile");
    let _op = start_operator(cluster, ns);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let tasks: Api<HermesTask> = Api::namespaced(client.clone(), ns);
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(32, |i| {
            let tasks = tasks.clone();
            async move {
                let mut t = task(i, ns);
                t.metadata.namespace = None;
                tasks
                    .create(&PostParams::default(), &t)
                    .await
                    .expect("create task");
            }
        })
        .await;
    // Followed through one watch, as the raw harness follows its pods (a
    // list of every task each moment would load the API server measured).
    let mut stream = watcher(tasks.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    let mut ended = std::collections::HashSet::new();
    while let Some(Ok(t)) = stream.next().await {
        let phase = t.status.as_ref().and_then(|s| s.phase);
        if phase.is_some_and(TaskPhase::is_terminal) {
            assert_eq!(
                phase,
                Some(TaskPhase::Succeeded),
                "every bench task succeeds"
            );
            ended.insert(t.name_any());
            if ended.len() == n {
                break;
            }
        }
    }
    t0.elapsed()
}

/// Waits (up to ten minutes) until no namespace is being deleted: a test or
/// bench that just ended leaves thousands of Jobs and pods for the
/// namespace controller to delete, and that work would land on whichever
/// run it overlaps.
async fn settle(client: &Client) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut told = false;
    loop {
        let terminating = namespaces
            .list(&Default::default())
            .await
            .map(|l| {
                l.items
                    .iter()
                    .filter(|n| n.metadata.deletion_timestamp.is_some())
                    .count()
            })
            .unwrap_or(0);
        if terminating == 0 || Instant::now() > deadline {
            return;
        }
        if !told {
            eprintln!("batch bench: waiting for {terminating} namespace(s) being deleted");
            told = true;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--tasks")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let Some(cluster) = TierA::connect().await else {
        eprintln!("batch bench: Tier A is not running (e2e/cluster/hermes-cluster up)");
        return;
    };
    cluster.install_crds().await.expect("CRDs");
    settle(&cluster.client).await;

    let raw_ns = cluster.namespace("bench-raw").await.unwrap();
    let kubelet = kubelet::Kubelet::start(cluster.client.clone(), &raw_ns.name, 32);
    let raw_time = raw(cluster.client.clone(), &raw_ns.name, n).await;
    drop(kubelet);

    let op_ns = cluster.namespace("bench-batch").await.unwrap();
    let kubelet = kubelet::Kubelet::start(cluster.client.clone(), &op_ns.name, 32);
    let op_time = hermes(&cluster, &op_ns.name, n).await;
    drop(kubelet);

    let per_min = |d: Duration| n as f64 / d.as_secs_f64() * 60.0;
    println!("batch throughput on Tier A, {n} tasks (4 Jobs each)");
    println!(
        "  raw harness, {} Jobs in chains of 4: {:>8.1} s  {:>7.0} task-chains/min",
        n * 4,
        raw_time.as_secs_f64(),
        per_min(raw_time)
    );
    println!(
        "  hermes operator, {n} HermesTasks:    {:>8.1} s  {:>7.0} tasks/min",
        op_time.as_secs_f64(),
        per_min(op_time)
    );
    println!(
        "  ratio (hermes / raw throughput): {:.2}   targets: >= 0.80 and >= 600 tasks/min",
        raw_time.as_secs_f64() / op_time.as_secs_f64()
    );
}
