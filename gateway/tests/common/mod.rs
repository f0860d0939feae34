//! A gateway on loopback for the integration tests: in-memory tasks and
//! profiles, a fixed name table, the scripted model server as the upstream,
//! and small HTTP helpers.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hermes_crds::gateway::{Claims, Limits, PROXY_USER, SigningKey};
use hermes_crds::status::Usage;
use hermes_crds::{
    HermesProfile, HermesProfileSpec, HermesTask, HermesTaskSpec, RunPhase, TaskPhase,
};
use hermes_gateway::addr::DenySet;
use hermes_gateway::directory::{MemoryDirectory, StaticResolver};
use hermes_gateway::keys::{Credentials, KeySource};
use hermes_gateway::{Gateway, Settings};
use hermes_model_server::{Config, Scenarios, Server};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const NS: &str = "team-a";
pub const TASK: &str = "fix-parser";
pub const UID: &str = "0d7c4f1e-1111-2222-3333-444455556666";
pub const PROFILE: &str = "default";
pub const REAL_KEY: &str = "sk-real-upstream-key";
pub const MODEL: &str = "claude-sonnet-4-5";

pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32]).unwrap()
}

pub fn claims(phase: RunPhase, budget: Limits) -> Claims {
    Claims {
        namespace: NS.into(),
        task: TASK.into(),
        uid: UID.into(),
        phase,
        attempt: 1,
        budget,
    }
}

pub fn credential(phase: RunPhase, budget: Limits) -> String {
    key().mint(&claims(phase, budget))
}

pub fn task(
    phase: TaskPhase,
    egress_hosts: Option<Vec<hermes_crds::hosts::HostRule>>,
) -> HermesTask {
    let mut spec: HermesTaskSpec = serde_json::from_value(json!({
        "repo": {"url": "https://git.example/r.git", "baseRef": "main"},
        "task": "do it",
        "scope": ["src/**"],
        "profile": PROFILE,
    }))
    .unwrap();
    spec.egress_hosts = egress_hosts;
    let mut t = HermesTask::new(TASK, spec);
    t.metadata.namespace = Some(NS.into());
    t.metadata.uid = Some(UID.into());
    t.status = Some(hermes_crds::HermesTaskStatus {
        phase: Some(phase),
        attempt: Some(1),
        ..Default::default()
    });
    t
}

pub fn with_usage(mut t: HermesTask, usage: Usage) -> HermesTask {
    if let Some(s) = t.status.as_mut() {
        s.usage = Some(usage);
    }
    t
}

/// A profile whose model routes go to `upstream` (credential `anthropic`),
/// reviewer to `reviewer` (credential `bearer-cred`), with host rules.
pub fn profile(upstream: &str, reviewer: &str, implement_hosts: Value) -> HermesProfile {
    let spec: HermesProfileSpec = serde_json::from_value(json!({
        "agent": {"image": "agent@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["claude"]},
        "reviewer": {"image": "agent@sha256:0000000000000000000000000000000000000000000000000000000000000000", "command": ["claude"]},
        "runner": {"image": "runner@sha256:0000000000000000000000000000000000000000000000000000000000000000"},
        "model": {
            "agent": {"url": upstream, "credential": "anthropic"},
            "reviewer": {"url": reviewer, "credential": "bearer-cred"},
            "prices": [{"model": "claude-sonnet-4-5*", "input": "3", "output": "15", "cacheRead": "0.3", "cacheWrite": "3.75"}],
        },
        "egress": {"hosts": {
            "implement": implement_hosts,
            "prepare": [{"name": "git.test", "ports": [443]}],
            "allowPrivate": ["10.20.0.0/16"],
        }},
    }))
    .unwrap();
    let mut p = HermesProfile::new(PROFILE, spec);
    p.metadata.namespace = Some(NS.into());
    p
}

pub fn model_server() -> Server {
    let mut config = Config::loopback(Scenarios::builtin().unwrap());
    config.api_key = Some(REAL_KEY.into());
    config.log = false;
    Server::start(config).unwrap()
}

pub struct Running {
    pub gateway: Arc<Gateway>,
    pub directory: Arc<MemoryDirectory>,
    pub model: SocketAddr,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    _creds: tempfile::TempDir,
}

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Starts a gateway: `resolver` for egress names, loopback `exempt`
/// addresses let through (test listeners only).
pub async fn start(
    directory: Arc<MemoryDirectory>,
    resolver: StaticResolver,
    exempt: &[IpAddr],
) -> Running {
    let creds = tempfile::tempdir().unwrap();
    for (name, key, scheme) in [
        ("anthropic", REAL_KEY, None),
        ("bearer-cred", "sk-bearer-key", Some("bearer")),
    ] {
        let dir = creds.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("api-key"), format!("{key}\n")).unwrap();
        if let Some(s) = scheme {
            std::fs::write(dir.join("auth-scheme"), s).unwrap();
        }
    }
    let exempt = exempt.iter().map(|ip| ipnet::IpNet::from(*ip)).collect();
    let settings = Settings {
        keys: KeySource::fixed(key()),
        credentials: Credentials::new(Some(creds.path().to_owned())),
        directory: directory.clone(),
        resolver: Arc::new(resolver),
        deny: DenySet::exempting_for_tests(vec!["10.96.0.0/12".parse().unwrap()], exempt),
        tls: hermes_gateway::upstream::tls_config(None).unwrap(),
        instance: Some("test-instance".into()),
    };
    let gateway = Gateway::new(settings).unwrap();
    let (m, p, a) = (listener().await, listener().await, listener().await);
    let (model, proxy, admin) = (
        m.local_addr().unwrap(),
        p.local_addr().unwrap(),
        a.local_addr().unwrap(),
    );
    tokio::spawn(gateway.clone().serve_model(m));
    tokio::spawn(gateway.clone().serve_proxy(p));
    tokio::spawn(gateway.clone().serve_admin(a));
    Running {
        gateway,
        directory,
        model,
        proxy,
        admin,
        _creds: creds,
    }
}

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A request body the scripted server answers with turn `turn`.
pub fn turn_body(turn: usize, stream: bool, model: &str) -> String {
    let mut messages = vec![json!({"role": "user", "content": "go"})];
    for i in 0..turn {
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "x"}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{i}"), "content": "r"}]}));
    }
    json!({
        "model": model,
        "stream": stream,
        "max_tokens": 1000,
        "system": [{"type": "text", "text": "Env\n - Primary working directory: /work/here\n"}],
        "tools": [{"name": "Read"}, {"name": "Edit"}, {"name": "Bash"}],
        "messages": messages,
    })
    .to_string()
}

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on a new connection.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        sender.send_request(b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()),
    )
    .await
    .expect("reply in time")
    .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// A Messages request to the gateway with `credential` as x-api-key.
pub async fn messages(addr: SocketAddr, prefix: &str, credential: &str, body: &str) -> Reply {
    send(
        addr,
        "POST",
        &format!("{prefix}/v1/messages?beta=true"),
        &[
            ("x-api-key", credential),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
        ],
        body,
    )
    .await
}

pub fn proxy_auth(credential: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{credential}"))
    )
}

/// What a recording upstream saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A model API stand-in that records every request's headers and answers
/// with a plain Message JSON (usage 10 in, 5 out).
pub async fn recording_upstream() -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let l = listener().await;
    let addr = l.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let log = log.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        log.lock().unwrap().push(Seen {
                            method: parts.method.to_string(),
                            uri: parts.uri.to_string(),
                            headers: parts
                                .headers
                                .iter()
                                .map(|(k, v)| {
                                    (
                                        k.to_string(),
                                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                    )
                                })
                                .collect(),
                            body,
                        });
                        let reply = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": MODEL,
                            "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                            "usage": {"input_tokens": 10, "output_tokens": 5}});
                        Ok::<_, std::convert::Infallible>(
                            Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(reply.to_string())))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}
