//! Operator overhead on Tier A: the time from creating a HermesTask to its
//! prepare Job existing, against a harness that creates the same objects
//! (task-file ConfigMap, claim, the Job, and the shared NetworkPolicies once
//! per namespace, as the operator does) directly, in
//! the same run; and the operator's resident memory with 1,000 and 10,000
//! tasks. Prints figures; asserts nothing but that the run completes.
//!
//!     cargo bench -p hermes-operator --bench overhead [-- --quick]
//!
//! Needs a running Tier A (`e2e/cluster/hermes-cluster up`).

#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use hermes_crds::{HermesProfile, HermesTask};
use hermes_e2e::TierA;
use hermes_operator::builders::{self, BuildInput, PhaseFacts};
use hermes_operator::narrowing::effective;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

fn profile_spec() -> serde_json::Value {
    json!({
        "agent": {"image": "hermes/agent:bench", "command": ["claude", "-p"]},
        "reviewer": {"image": "hermes/reviewer:bench", "command": ["claude", "-p"]},
        "runner": {"image": "hermes/runner:bench"},
        "egress": {"implement": [{"cidr": "10.0.0.0/8", "ports": [{"port": 443}]}]},
    })
}

fn task(name: &str, profile: &str) -> HermesTask {
    serde_json::from_value(json!({
        "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
        "metadata": {"name": name},
        "spec": {
            "repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
            "task": "# Bench\nDo nothing.", "scope": ["src/**"], "profile": profile,
        }
    }))
    .unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

struct Summary {
    p50: Duration,
    p99: Duration,
    total: Duration,
    n: usize,
}

fn summarize(mut v: Vec<Duration>, total: Duration) -> Summary {
    v.sort();
    Summary {
        p50: percentile(&v, 0.5),
        p99: percentile(&v, 0.99),
        total,
        n: v.len(),
    }
}

/// Records when each Job first appears in the namespace.
fn watch_jobs(api: Api<Job>) -> Arc<Mutex<HashMap<String, Instant>>> {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Ok(Some(job)) = stream.try_next().await {
            if let Some(name) = job.metadata.name {
                s.lock().unwrap().entry(name).or_insert_with(Instant::now);
            }
        }
    });
    seen
}

async fn wait_for(seen: &Arc<Mutex<HashMap<String, Instant>>>, name: &str) -> Instant {
    loop {
        if let Some(t) = seen.lock().unwrap().get(name) {
            return *t;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The harness: what the operator writes for a new task, written directly.
async fn create_directly(client: &kube::Client, ns: &str, t: &HermesTask, profile: &HermesProfile) {
    let e = effective(&t.spec, &profile.spec).unwrap();
    let input = BuildInput {
        task: t,
        profile: &profile.spec,
        effective: &e,
        gateway: None,
        cluster: &[],
    };
    let pp = PatchParams::apply("bench.hermes.dev").force();
    let cm = builders::task_configmap(&input, "# Bench\nDo nothing.");
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            cm.metadata.name.as_deref().unwrap(),
            &pp,
            &Patch::Apply(&cm),
        )
        .await
        .unwrap();
    let pvc = builders::repo_pvc(&input);
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .patch(
            pvc.metadata.name.as_deref().unwrap(),
            &pp,
            &Patch::Apply(&pvc),
        )
        .await
        .unwrap();
    // The policies are shared by the profile's tasks: written once, as the
    // operator writes them once (its cache shows them after).
    static WRITTEN: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    for np in builders::network_policies(&input) {
        let key = (ns.to_owned(), np.metadata.name.clone().unwrap_or_default());
        {
            let mut written = WRITTEN.lock().unwrap();
            if written.contains(&key) {
                continue;
            }
            written.push(key);
        }
        Api::<NetworkPolicy>::namespaced(client.clone(), ns)
            .patch(
                np.metadata.name.as_deref().unwrap(),
                &pp,
                &Patch::Apply(&np),
            )
            .await
            .unwrap();
    }
    let job = builders::job(
        &input,
        hermes_crds::RunPhase::Prepare,
        1,
        &PhaseFacts::default(),
    );
    Api::<Job>::namespaced(client.clone(), ns)
        .patch(
            job.metadata.name.as_deref().unwrap(),
            &pp,
            &Patch::Apply(&job),
        )
        .await
        .unwrap();
}

/// The operator process; killed and reaped when dropped.
struct Operator(Child);

impl Operator {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_operator(cluster: &TierA, ns: &str) -> Operator {
    let bin = env!("CARGO_BIN_EXE_hermes-operator");
    let child = Command::new(bin)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .env("HERMES_WATCH_NAMESPACE", ns)
        .env("HERMES_METRICS_ADDR", "127.0.0.1:0")
        .env("HERMES_LEADER_ELECTION", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("operator");
    Operator(child)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let Some(cluster) = TierA::connect().await else {
        eprintln!(
            "overhead bench: no Tier A cluster; start one with e2e/cluster/hermes-cluster up"
        );
        return;
    };
    cluster.install_crds().await.expect("CRDs");
    let client = cluster.client.clone();
    let (steady_n, burst_n, big_n) = if quick {
        (10, 100, 1_000)
    } else {
        (30, 1_000, 10_000)
    };

    // The profile, in each namespace.
    let make_profile = |ns: String| {
        let client = client.clone();
        async move {
            let p: HermesProfile = serde_json::from_value(json!({
                "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesProfile",
                "metadata": {"name": "default"}, "spec": profile_spec(),
            }))
            .unwrap();
            Api::<HermesProfile>::namespaced(client, &ns)
                .create(&PostParams::default(), &p)
                .await
                .unwrap()
        }
    };

    // 1. Harness baseline and operator, one task per second.
    let base_ns = cluster.namespace("bench-base").await.unwrap();
    let profile = make_profile(base_ns.name.clone()).await;
    let tasks_base: Api<HermesTask> = Api::namespaced(client.clone(), &base_ns.name);
    let mut base_lat = Vec::new();
    let t0 = Instant::now();
    for i in 0..steady_n {
        let mut t = task(&format!("s{i}"), "default");
        let start = Instant::now();
        t = tasks_base.create(&PostParams::default(), &t).await.unwrap();
        create_directly(&client, &base_ns.name, &t, &profile).await;
        base_lat.push(start.elapsed());
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(start.elapsed())).await;
    }
    let base_steady = summarize(base_lat, t0.elapsed());

    let op_ns = cluster.namespace("bench-op").await.unwrap();
    make_profile(op_ns.name.clone()).await;
    let op = start_operator(&cluster, &op_ns.name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = watch_jobs(Api::namespaced(client.clone(), &op_ns.name));
    let tasks_op: Api<HermesTask> = Api::namespaced(client.clone(), &op_ns.name);
    let mut op_lat = Vec::new();
    let t0 = Instant::now();
    for i in 0..steady_n {
        let name = format!("s{i}");
        let start = Instant::now();
        tasks_op
            .create(&PostParams::default(), &task(&name, "default"))
            .await
            .unwrap();
        let at = wait_for(&seen, &format!("{name}-prepare")).await;
        op_lat.push(at.duration_since(start));
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(start.elapsed())).await;
    }
    let op_steady = summarize(op_lat, t0.elapsed());

    // 2. A burst: every task created as fast as the API takes them.
    let burst_base_ns = cluster.namespace("bench-bbase").await.unwrap();
    let profile_b = make_profile(burst_base_ns.name.clone()).await;
    let t0 = Instant::now();
    let lat: Vec<Duration> = futures::stream::iter(0..burst_n)
        .map(|i| {
            let (client, ns, profile) = (
                client.clone(),
                burst_base_ns.name.clone(),
                profile_b.clone(),
            );
            async move {
                let start = Instant::now();
                let t = Api::<HermesTask>::namespaced(client.clone(), &ns)
                    .create(&PostParams::default(), &task(&format!("b{i}"), "default"))
                    .await
                    .unwrap();
                create_directly(&client, &ns, &t, &profile).await;
                start.elapsed()
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let base_burst = summarize(lat, t0.elapsed());

    let burst_ns = cluster.namespace("bench-bop").await.unwrap();
    make_profile(burst_ns.name.clone()).await;
    let op_b = start_operator(&cluster, &burst_ns.name);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen_b = watch_jobs(Api::namespaced(client.clone(), &burst_ns.name));
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let t0 = Instant::now();
    futures::stream::iter(0..burst_n)
        .map(|i| {
            let (client, ns, created) = (client.clone(), burst_ns.name.clone(), created.clone());
            async move {
                let name = format!("b{i}");
                let start = Instant::now();
                Api::<HermesTask>::namespaced(client, &ns)
                    .create(&PostParams::default(), &task(&name, "default"))
                    .await
                    .unwrap();
                created.lock().unwrap().insert(name, start);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let mut lat = Vec::new();
    for i in 0..burst_n {
        let name = format!("b{i}");
        let at = wait_for(&seen_b, &format!("{name}-prepare")).await;
        let start = created.lock().unwrap()[&name];
        lat.push(at.duration_since(start));
    }
    let op_burst = summarize(lat, t0.elapsed());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_burst = rss_mib(op_b.pid());
    drop(op_b);
    drop(op);

    // 3. Memory with many tasks: tasks under a missing profile stay Pending
    // (no children), so only the operator's caches grow.
    let big_ns = cluster.namespace("bench-big").await.unwrap();
    let op_big = start_operator(&cluster, &big_ns.name);
    let t0 = Instant::now();
    futures::stream::iter(0..big_n)
        .map(|i| {
            let (client, ns) = (client.clone(), big_ns.name.clone());
            async move {
                Api::<HermesTask>::namespaced(client, &ns)
                    .create(&PostParams::default(), &task(&format!("m{i}"), "absent"))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let created_in = t0.elapsed();
    // Let the operator see and mark every task Pending.
    let tasks_big: Api<HermesTask> = Api::namespaced(client.clone(), &big_ns.name);
    loop {
        let list = tasks_big
            .list(&kube::api::ListParams::default())
            .await
            .unwrap();
        let pending = list
            .items
            .iter()
            .filter(|t| t.status.as_ref().and_then(|s| s.phase).is_some())
            .count();
        if pending >= big_n || t0.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let settled_in = t0.elapsed();
    let rss_big = rss_mib(op_big.pid());
    drop(op_big);

    println!("Operator overhead: task created → prepare Job exists (Tier A, this machine)");
    println!(
        "{:<28} {:>6} {:>12} {:>12} {:>12}",
        "scenario", "tasks", "p50", "p99", "wall"
    );
    for (label, s) in [
        ("1 task/s, harness", &base_steady),
        ("1 task/s, operator", &op_steady),
        ("burst, harness", &base_burst),
        ("burst, operator", &op_burst),
    ] {
        println!(
            "{:<28} {:>6} {:>12} {:>12} {:>12}",
            label,
            s.n,
            ms(s.p50),
            ms(s.p99),
            ms(s.total)
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
    println!(
        "ratio operator/harness: 1 task/s p50 {:.2}, p99 {:.2}; burst p50 {:.2}, p99 {:.2}, wall {:.2}",
        ratio(op_steady.p50, base_steady.p50),
        ratio(op_steady.p99, base_steady.p99),
        ratio(op_burst.p50, base_burst.p50),
        ratio(op_burst.p99, base_burst.p99),
        ratio(op_burst.total, base_burst.total),
    );
    println!("operator RSS after the burst of {burst_n}: {rss_burst:.1} MiB");
    println!(
        "operator RSS with {big_n} tasks: {rss_big:.1} MiB (created in {:.1} s, all seen by the operator in {:.1} s)",
        created_in.as_secs_f64(),
        settled_in.as_secs_f64()
    );
}
