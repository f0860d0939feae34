//! What the gateway adds to a streamed model reply: the same requests, in
//! the same run, straight to the scripted model server and through the
//! gateway (credential check, budget judgement, real key, SSE counted in
//! stream). Time to first byte and whole-stream time, p50 and p99, at 1
//! stream (sequential, one keep-alive connection) and at 200 concurrent
//! streams (200 connections); the gateway's CPU (its own runtime's threads,
//! from /proc/self/task) and the process's RSS.
//!
//! Twice: against a server that answers at once (unpaced: the reply takes
//! a loopback round trip, so what the gateway adds is all there is to see,
//! in milliseconds), and against one that streams like a fast model, one
//! SSE event every `--pace-ms` (10 by default; a real model's first byte
//! and token rate are slower still): the ratio a user sees. Prints the
//! targets: p50 ratio ≤ 1.05 (paced), p99 added latency ≤ 2 ms at 1 stream
//! (both), no error at 200 (both).
//!
//!     cargo bench -p hermes-gateway --bench proxy [-- --iterations N --paced-iterations N --pace-ms MS --rounds R --concurrency C --gateway-threads T --client-threads T]
//!
//! Everything shares the machine (client, model servers, gateway), so run it
//! on an otherwise idle one.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hermes_crds::gateway::{Claims, Limits, SigningKey};
use hermes_crds::{
    HermesProfile, HermesProfileSpec, HermesTask, HermesTaskSpec, RunPhase, TaskPhase,
};
use hermes_gateway::addr::DenySet;
use hermes_gateway::directory::{MemoryDirectory, StaticResolver};
use hermes_gateway::keys::{Credentials, KeySource};
use hermes_gateway::{Gateway, Settings};
use hermes_model_server::{Config, Scenarios, Server};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;

const REAL_KEY: &str = "sk-bench-real-key";
const GW_THREAD: &str = "gw-worker";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn body() -> String {
    json!({
        "model": "claude-sonnet-4-5",
        "stream": true,
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "Env\n - Primary working directory: /work/here\n"}],
        "tools": [{"name": "Read"}, {"name": "Edit"}, {"name": "Bash"}],
        "messages": [{"role": "user", "content": "go"}],
    })
    .to_string()
}

#[derive(Clone, Copy)]
struct Target {
    addr: SocketAddr,
    path: &'static str,
}

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One streamed turn: (time to first body byte, whole stream).
async fn one(
    sender: &mut SendRequest<Full<Bytes>>,
    t: Target,
    key: &str,
    body: &Bytes,
) -> Result<(Duration, Duration), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = hyper::Request::post(t.path)
        .header("host", t.addr.to_string())
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))
        .unwrap();
    let start = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if resp.status() != 200 {
        return Err(format!("status {}", resp.status()));
    }
    let mut b = resp.into_body();
    let mut first = None;
    let mut bytes = 0;
    while let Some(frame) = b.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(d) = frame.data_ref() {
            if first.is_none() && !d.is_empty() {
                first = Some(start.elapsed());
            }
            bytes += d.len();
        }
    }
    if bytes == 0 {
        return Err("empty stream".into());
    }
    Ok((first.unwrap_or_default(), start.elapsed()))
}

#[derive(Default)]
struct Samples {
    ttfb: Vec<Duration>,
    total: Vec<Duration>,
    errors: usize,
}

impl Samples {
    fn add(&mut self, r: Result<(Duration, Duration), String>) {
        match r {
            Ok((a, b)) => {
                self.ttfb.push(a);
                self.total.push(b);
            }
            Err(e) => {
                if self.errors < 3 {
                    eprintln!("error: {e}");
                }
                self.errors += 1;
            }
        }
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[i]
}

async fn sequential(t: Target, key: String, n: usize, into: &mut Samples) {
    let body = Bytes::from(body());
    let mut sender = connect(t.addr).await;
    for _ in 0..n {
        let r = one(&mut sender, t, &key, &body).await;
        if r.is_err() {
            sender = connect(t.addr).await;
        }
        into.add(r);
    }
}

async fn concurrent(t: Target, key: String, conns: usize, rounds: usize) -> Samples {
    let body = Bytes::from(body());
    let barrier = Arc::new(tokio::sync::Barrier::new(conns));
    let mut handles = Vec::new();
    for _ in 0..conns {
        let (key, body, barrier) = (key.clone(), body.clone(), barrier.clone());
        handles.push(tokio::spawn(async move {
            let mut sender = connect(t.addr).await;
            let mut out = Vec::new();
            for _ in 0..rounds {
                barrier.wait().await;
                let r = one(&mut sender, t, &key, &body).await;
                if r.is_err() {
                    sender = connect(t.addr).await;
                }
                out.push(r);
            }
            out
        }));
    }
    let mut s = Samples::default();
    for h in handles {
        for r in h.await.unwrap() {
            s.add(r);
        }
    }
    s
}

/// CPU seconds of this process's threads named `name`.
fn thread_cpu(name: &str) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim().starts_with(name))
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
            let f: Vec<&str> = after.split_whitespace().collect();
            let ut: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let st: f64 = f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            (ut + st) / tick
        })
        .sum()
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn report(label: &str, direct: &Samples, via: &Samples) {
    println!(
        "\n{label}: {} direct, {} through the gateway",
        direct.total.len(),
        via.total.len()
    );
    println!(
        "{:<22}{:>12}{:>12}{:>10}{:>14}",
        "", "direct ms", "gateway ms", "ratio", "added ms"
    );
    for (name, d, g) in [
        ("ttfb p50", pct(&direct.ttfb, 0.5), pct(&via.ttfb, 0.5)),
        ("ttfb p99", pct(&direct.ttfb, 0.99), pct(&via.ttfb, 0.99)),
        ("stream p50", pct(&direct.total, 0.5), pct(&via.total, 0.5)),
        (
            "stream p99",
            pct(&direct.total, 0.99),
            pct(&via.total, 0.99),
        ),
    ] {
        let ratio = g.as_secs_f64() / d.as_secs_f64().max(1e-9);
        let added = g.as_secs_f64() - d.as_secs_f64();
        println!(
            "{name:<22}{:>12}{:>12}{ratio:>10.3}{:>14.3}",
            ms(d),
            ms(g),
            added * 1000.0
        );
    }
    println!("errors: direct {}, gateway {}", direct.errors, via.errors);
}

/// One path under test: a scripted model server at `pace` per SSE event, a
/// task and profile of its own whose agent upstream it is, and that task's
/// credential.
struct Path {
    _server: Server,
    direct: Target,
    cred: String,
    uid: &'static str,
}

fn path(
    dir: &MemoryDirectory,
    key: &SigningKey,
    name: &'static str,
    uid: &'static str,
    pace: Duration,
) -> Path {
    let mut config = Config::loopback(Scenarios::builtin().unwrap());
    config.api_key = Some(REAL_KEY.into());
    config.log = false;
    config.event_interval = pace;
    let server = Server::start(config).unwrap();
    let upstream = server.base_url("implementer-happy");
    let claims = Claims {
        namespace: "bench".into(),
        task: name.into(),
        uid: uid.into(),
        phase: RunPhase::Implement,
        attempt: 1,
        budget: Limits::default(),
    };
    let spec: HermesTaskSpec = serde_json::from_value(json!({
        "repo": {"url": "https://git.example/r.git", "baseRef": "main"},
        "task": "x", "scope": ["**"], "profile": name,
    }))
    .unwrap();
    let mut task = HermesTask::new(name, spec);
    task.metadata.namespace = Some("bench".into());
    task.metadata.uid = Some(uid.into());
    task.status = Some(hermes_crds::HermesTaskStatus {
        phase: Some(TaskPhase::Implementing),
        attempt: Some(1),
        ..Default::default()
    });
    dir.put_task(task);
    let pspec: HermesProfileSpec = serde_json::from_value(json!({
        "agent": {"image": "a@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["c"]},
        "reviewer": {"image": "a@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["c"]},
        "runner": {"image": "r@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
        "model": {"agent": {"url": upstream, "credential": "anthropic"},
                  "prices": [{"model": "claude-sonnet-4-5*", "input": "3", "output": "15", "cacheRead": "0.3", "cacheWrite": "3.75"}]},
    }))
    .unwrap();
    let mut profile = HermesProfile::new(name, pspec);
    profile.metadata.namespace = Some("bench".into());
    dir.put_profile(profile);
    Path {
        direct: Target {
            addr: server.addr(),
            path: "/s/implementer-happy/v1/messages?beta=true",
        },
        _server: server,
        cred: key.mint(&claims),
        uid,
    }
}

/// What one pace measured, for the targets.
struct Measured {
    p50_ratio: f64,
    p99_added_ms: f64,
    errors: usize,
}

/// The 1-stream and concurrent runs of one path, straight and through the
/// gateway; prints their tables and the gateway's CPU per stream.
fn measure(
    client: &tokio::runtime::Runtime,
    p: &Path,
    via: Target,
    iterations: usize,
    conns: usize,
    rounds: usize,
) -> Measured {
    // Warm up both paths (connections, pools, page faults). The concurrent
    // round lets the gateway open its upstream connections before the
    // measured ones, as the direct path's are opened before its timings.
    client.block_on(async {
        let mut w = Samples::default();
        sequential(p.direct, REAL_KEY.into(), 20, &mut w).await;
        sequential(via, p.cred.clone(), 20, &mut w).await;
        concurrent(via, p.cred.clone(), conns, 1).await;
    });
    // 1 stream: alternate blocks of 50 so drift hits both alike.
    let (mut d1, mut g1) = (Samples::default(), Samples::default());
    let mut gw_cpu_seq = 0.0;
    client.block_on(async {
        for _ in 0..iterations.div_ceil(50) {
            sequential(p.direct, REAL_KEY.into(), 50, &mut d1).await;
            let c = thread_cpu(GW_THREAD);
            sequential(via, p.cred.clone(), 50, &mut g1).await;
            gw_cpu_seq += thread_cpu(GW_THREAD) - c;
        }
    });
    report("1 stream", &d1, &g1);
    let (d200, g200, gw_cpu_conc) = client.block_on(async {
        let d = concurrent(p.direct, REAL_KEY.into(), conns, rounds).await;
        let c = thread_cpu(GW_THREAD);
        let g = concurrent(via, p.cred.clone(), conns, rounds).await;
        (d, g, thread_cpu(GW_THREAD) - c)
    });
    report(&format!("{conns} concurrent streams"), &d200, &g200);
    println!(
        "gateway CPU: {:.1} µs per stream sequential, {:.1} µs per stream at {conns}",
        gw_cpu_seq / g1.total.len().max(1) as f64 * 1e6,
        gw_cpu_conc / g200.total.len().max(1) as f64 * 1e6
    );
    Measured {
        p50_ratio: pct(&g1.total, 0.5).as_secs_f64() / pct(&d1.total, 0.5).as_secs_f64().max(1e-9),
        p99_added_ms: (pct(&g1.total, 0.99).as_secs_f64() - pct(&d1.total, 0.99).as_secs_f64())
            * 1000.0,
        errors: g200.errors,
    }
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn main() {
    let iterations = arg("--iterations", 400);
    let paced_iterations = arg("--paced-iterations", 200);
    let rounds = arg("--rounds", 5);
    let conns = arg("--concurrency", 200);
    let gw_threads = arg("--gateway-threads", 2);
    let pace_ms = arg("--pace-ms", 10);
    let client_threads = arg("--client-threads", 1);

    let key = SigningKey::from_bytes(&[7u8; 32]).unwrap();
    let dir = Arc::new(MemoryDirectory::new());
    // Unpaced, the scripted server answers as fast as loopback allows: what
    // the gateway adds is all there is to see. Paced, it streams like a
    // (fast) model, one event every `pace_ms`: the ratio a user feels.
    let raw = path(&dir, &key, "raw", "uid-raw", Duration::ZERO);
    let pace = Duration::from_millis(pace_ms as u64);
    let paced = path(&dir, &key, "paced", "uid-paced", pace);
    let creds = tempfile::tempdir().unwrap();
    std::fs::create_dir(creds.path().join("anthropic")).unwrap();
    std::fs::write(creds.path().join("anthropic/api-key"), REAL_KEY).unwrap();

    // The gateway on its own runtime, so its threads' CPU can be read apart.
    let gw_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(gw_threads)
        .thread_name(GW_THREAD)
        .enable_all()
        .build()
        .unwrap();
    let gateway = Gateway::new(Settings {
        keys: KeySource::fixed(key.clone()),
        credentials: Credentials::new(Some(creds.path().to_owned())),
        directory: dir,
        resolver: Arc::new(StaticResolver::new()),
        deny: DenySet::new(Vec::new()),
        tls: hermes_gateway::upstream::tls_config(None).unwrap(),
        instance: Some("bench".into()),
    })
    .unwrap();
    let gw_addr = gw_rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        tokio::spawn(gateway.clone().serve_model(l));
        a
    });
    let via = Target {
        addr: gw_addr,
        path: "/v1/messages?beta=true",
    };

    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .unwrap();
    let rss_before = status_kb("VmRSS:");
    let cpu0 = thread_cpu(GW_THREAD);

    println!(
        "hermes-gateway proxy bench: scripted model server (implementer-happy, turn 0, SSE), gateway on {gw_threads} worker threads, {conns}×{rounds} concurrent"
    );
    println!(
        "\n== unpaced: the server answers at once ({iterations} sequential streams); the gateway's own cost"
    );
    let r = measure(&client, &raw, via, iterations, conns, rounds);
    println!(
        "\n== paced: one SSE event every {pace_ms} ms, as a fast model streams ({paced_iterations} sequential streams)"
    );
    let p = measure(&client, &paced, via, paced_iterations, conns, rounds);

    println!(
        "\ngateway CPU: {:.3} s over the run",
        thread_cpu(GW_THREAD) - cpu0
    );
    println!(
        "process RSS (client, model servers and gateway together): {} KiB before, {} KiB after, peak {} KiB",
        rss_before,
        status_kb("VmRSS:"),
        status_kb("VmHWM:")
    );
    let counted: u64 = [raw.uid, paced.uid]
        .iter()
        .map(|uid| {
            gateway
                .meters
                .report("bench", None)
                .entries
                .iter()
                .filter(|e| e.uid == *uid)
                .map(|e| e.figures.turns)
                .sum::<u64>()
        })
        .sum();
    println!("turns counted by the gateway: {counted}");
    println!(
        "\ntargets: p50 stream ratio at 1 stream, paced {:.3} (≤ 1.05: {}), unpaced {:.3} (loopback only, for the record)",
        p.p50_ratio,
        met(p.p50_ratio <= 1.05),
        r.p50_ratio
    );
    println!(
        "         p99 added at 1 stream: unpaced {:.3} ms (≤ 2 ms: {}), paced {:.3} ms (≤ 2 ms: {})",
        r.p99_added_ms,
        met(r.p99_added_ms <= 2.0),
        p.p99_added_ms,
        met(p.p99_added_ms <= 2.0)
    );
    println!(
        "         errors at {conns}: unpaced {}, paced {} (0: {})",
        r.errors,
        p.errors,
        met(r.errors == 0 && p.errors == 0)
    );
}
