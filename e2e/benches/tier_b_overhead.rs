//! Hermes' own overhead per task on the real node (Tier B): wall time from
//! applying a task to `Succeeded`, minus the time spent inside the agent and
//! reviewer processes (as `hermes-runner exec` logs it), over sequential
//! tasks (default 10; `HERMES_BENCH_TASKS`), with a per-phase breakdown
//! observed by polling every 100 ms:
//!
//! - schedule: Job created → pod bound to the node (Job controller, scheduler);
//! - start: bound → first container running (sandbox, CNI, volumes, image);
//! - run: first container running → pod finished (prepare: the clone;
//!   implement: install + agent + collect; review: context + install +
//!   reviewer + verdict; publish: fetch, merge, push);
//! - handoff: pod finished → the next phase's Job exists (the operator).
//!
//! Baseline, same run: bare pods of the runner image (`hermes-runner
//! --version`, same security context) created one after another, create →
//! Succeeded. A task runs four pods, so `overhead / (4 × bare pod)` says how
//! much Hermes adds beyond what the node costs per pod.
//!
//! Needs Tier B (`e2e/cluster/hermes-cluster --tier b up`); run with
//! `cargo bench -p hermes-e2e --bench tier_b_overhead`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hermes_e2e::tier_b::{Fixture, ProfileOptions, TierB};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, LogParams, PostParams};
use serde_json::json;

const PHASES: [&str; 4] = ["prepare", "implement", "review", "publish"];

#[derive(Default, Debug, Clone)]
struct PhaseTimes {
    job: Option<Instant>,
    bound: Option<Instant>,
    running: Option<Instant>,
    done: Option<Instant>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn since(a: Option<Instant>, b: Option<Instant>) -> f64 {
    match (a, b) {
        (Some(a), Some(b)) if b >= a => secs(b - a),
        _ => f64::NAN,
    }
}

fn phase_of(name: &str) -> Option<&'static str> {
    PHASES
        .iter()
        .find(|p| name.contains(&format!("-{p}")))
        .copied()
}

fn pod_started(p: &Pod) -> bool {
    let s = p.status.as_ref();
    let any = |cs: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
        cs.into_iter().flatten().any(|c| {
            c.state
                .as_ref()
                .is_some_and(|st| st.running.is_some() || st.terminated.is_some())
        })
    };
    s.is_some_and(|s| any(s.init_container_statuses.as_ref()) || any(s.container_statuses.as_ref()))
}

fn pod_done(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|ph| ph == "Succeeded" || ph == "Failed")
}

/// `seconds=<x>` of the runner's "the wrapped command exited" line.
fn wrapped_seconds(log: &str) -> Option<f64> {
    log.lines()
        .find(|l| l.contains("the wrapped command exited"))
        .and_then(|l| l.split("seconds=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.trim_matches('"').parse().ok())
}

async fn container_seconds(pods: &Api<Pod>, task: &str, phase: &str, container: &str) -> f64 {
    let list = pods
        .list(&ListParams::default().labels(&format!("hermes.dev/task={task}")))
        .await
        .unwrap();
    for p in list.items {
        let name = p.metadata.name.unwrap_or_default();
        if phase_of(&name) == Some(phase) {
            let log = pods
                .logs(
                    &name,
                    &LogParams {
                        container: Some(container.into()),
                        ..LogParams::default()
                    },
                )
                .await
                .unwrap_or_default();
            if let Some(s) = wrapped_seconds(&log) {
                return s;
            }
        }
    }
    f64::NAN
}

struct TaskRun {
    wall: f64,
    agent: f64,
    reviewer: f64,
    phases: BTreeMap<&'static str, PhaseTimes>,
}

async fn run_task(b: &TierB, f: &Fixture, i: usize) -> TaskRun {
    let name = format!("bench-{i}");
    let url = b
        .seed_repo(&format!("bench-{i}-{}.git", std::process::id()), "greeter")
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(b.cluster.client.clone(), &f.ns.name);
    let pods: Api<Pod> = Api::namespaced(b.cluster.client.clone(), &f.ns.name);
    let label = ListParams::default().labels(&format!("hermes.dev/task={name}"));
    let t0 = Instant::now();
    f.apply_task(json!({
        "apiVersion": "hermes.dev/v1alpha1",
        "kind": "HermesTask",
        "metadata": {"name": name},
        "spec": {
            "repo": {"url": url, "baseRef": "main"},
            "task": "# Punctuate the greeting\n\nMake `src/greet.sh` print `Hello, NAME!`.\n",
            "scope": ["src/**"],
            "review": {"mode": "auto"},
            "publish": {"mode": "merge"},
        }
    }))
    .await
    .unwrap();
    let mut phases: BTreeMap<&'static str, PhaseTimes> = BTreeMap::new();
    let deadline = t0 + Duration::from_secs(300);
    let end = loop {
        let now = Instant::now();
        assert!(now < deadline, "task {name} did not finish in 300 s");
        for j in jobs.list(&label).await.unwrap().items {
            if let Some(p) = phase_of(&j.metadata.name.unwrap_or_default()) {
                phases.entry(p).or_default().job.get_or_insert(now);
            }
        }
        for p in pods.list(&label).await.unwrap().items {
            let Some(ph) = phase_of(p.metadata.name.as_deref().unwrap_or_default()) else {
                continue;
            };
            let e = phases.entry(ph).or_default();
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                e.bound.get_or_insert(now);
            }
            if pod_started(&p) {
                e.running.get_or_insert(now);
            }
            if pod_done(&p) {
                e.done.get_or_insert(now);
            }
        }
        let t = f.tasks().get(&name).await.unwrap();
        let phase = t
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match phase.as_str() {
            "Succeeded" => break now,
            "Failed" | "Rejected" | "Cancelled" => {
                panic!("task {name} ended {phase}: {:?}", t.status)
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    TaskRun {
        wall: secs(end - t0),
        agent: container_seconds(&pods, &name, "implement", "agent").await,
        reviewer: container_seconds(&pods, &name, "review", "reviewer").await,
        phases,
    }
}

async fn bare_pod(b: &TierB, f: &Fixture, i: usize) -> f64 {
    let pods: Api<Pod> = Api::namespaced(b.cluster.client.clone(), &f.ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("bare-{i}")},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "enableServiceLinks": false,
            "securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                                 "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "runner", "image": b.images.runner, "imagePullPolicy": "Never",
                "command": ["/usr/local/bin/hermes-runner", "--version"],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                     "capabilities": {"drop": ["ALL"]}},
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "256Mi"}},
            }],
        }
    }))
    .unwrap();
    let t0 = Instant::now();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    loop {
        let p = pods.get(&format!("bare-{i}")).await.unwrap();
        if pod_done(&p) {
            return secs(t0.elapsed());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "bare pod {i} did not finish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stats(v: &[f64]) -> (f64, f64) {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    (s[s.len() / 2], s[s.len() - 1])
}

#[tokio::main]
async fn main() {
    let Some(b) = TierB::connect().await else {
        eprintln!(
            "tier_b_overhead: no Tier B; start it with e2e/cluster/hermes-cluster --tier b up"
        );
        return;
    };
    let n: usize = std::env::var("HERMES_BENCH_TASKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let f = b
        .fixture(
            "bench",
            ProfileOptions::scenarios("implementer-happy", "reviewer-approve"),
        )
        .await
        .unwrap();

    let mut bare = Vec::new();
    for i in 0..n {
        bare.push(bare_pod(&b, &f, i).await);
    }
    let mut runs = Vec::new();
    for i in 0..n {
        let r = run_task(&b, &f, i).await;
        eprintln!(
            "task {i}: wall {:.2} s, agent {:.2} s, reviewer {:.2} s, overhead {:.2} s",
            r.wall,
            r.agent,
            r.reviewer,
            r.wall - r.agent - r.reviewer
        );
        runs.push(r);
    }

    let col = |f: &dyn Fn(&TaskRun) -> f64| stats(&runs.iter().map(f).collect::<Vec<_>>());
    println!(
        "\nTier B, {n} sequential tasks (implementer-happy, reviewer-approve, publish merge):"
    );
    println!("| figure | p50 (s) | max (s) |");
    println!("|---|---|---|");
    let row = |label: &str, (p50, max): (f64, f64)| println!("| {label} | {p50:.2} | {max:.2} |");
    row("wall, apply → Succeeded", col(&|r| r.wall));
    row("inside the agent CLI", col(&|r| r.agent));
    row("inside the reviewer CLI", col(&|r| r.reviewer));
    let overhead = col(&|r| r.wall - r.agent - r.reviewer);
    row("**Hermes overhead** (wall − agent − reviewer)", overhead);
    for phase in PHASES {
        let get = |r: &TaskRun| r.phases.get(phase).cloned().unwrap_or_default();
        row(
            &format!("{phase}: schedule"),
            col(&|r| since(get(r).job, get(r).bound)),
        );
        row(
            &format!("{phase}: start"),
            col(&|r| since(get(r).bound, get(r).running)),
        );
        row(
            &format!("{phase}: run"),
            col(&|r| since(get(r).running, get(r).done)),
        );
    }
    row(
        "implement: run minus agent (install, collect)",
        col(&|r| {
            let p = r.phases.get("implement").cloned().unwrap_or_default();
            since(p.running, p.done) - r.agent
        }),
    );
    row(
        "review: run minus reviewer (context, install, verdict)",
        col(&|r| {
            let p = r.phases.get("review").cloned().unwrap_or_default();
            since(p.running, p.done) - r.reviewer
        }),
    );
    for (from, to) in [
        ("prepare", "implement"),
        ("implement", "review"),
        ("review", "publish"),
    ] {
        row(
            &format!("handoff {from} → {to}"),
            col(&|r| {
                let a = r.phases.get(from).cloned().unwrap_or_default();
                let b = r.phases.get(to).cloned().unwrap_or_default();
                since(a.done, b.job)
            }),
        );
    }
    let (bare_p50, bare_max) = stats(&bare);
    row(
        "baseline: bare runner pod, create → Succeeded",
        (bare_p50, bare_max),
    );
    println!(
        "\nratio overhead p50 / (4 × bare pod p50): {:.2}; target overhead ≤ 10 s: {}",
        overhead.0 / (4.0 * bare_p50),
        if overhead.0 <= 10.0 { "met" } else { "MISSED" }
    );
}
