//! The egress proxy on loopback: names from a fixed table, the test's own
//! loopback listeners exempted from the deny set (and nothing else).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use hermes_crds::gateway::Limits;
use hermes_crds::hosts::{HostPattern, HostRule};
use hermes_crds::{RunPhase, TaskPhase};
use hermes_gateway::directory::{MemoryDirectory, StaticResolver};
use hermes_gateway::sni::client_hello;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Echoes what it reads; counts the bytes it received.
async fn echo_server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(AtomicUsize::new(0));
    let count = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            count.fetch_add(n, Ordering::SeqCst);
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, got)
}

/// Greets first (a server-first protocol), then closes.
async fn banner_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.write_all(b"220 banner\r\n").await;
        }
    });
    port
}

struct World {
    gw: Running,
    echo: u16,
    echo_got: Arc<AtomicUsize>,
    banner: u16,
    http: SocketAddr,
    _model: hermes_model_server::Server,
}

async fn world(phase: TaskPhase, egress_hosts: Option<Vec<HostRule>>) -> World {
    let (echo, echo_got) = echo_server().await;
    let banner = banner_server().await;
    let model = model_server();
    let http = model.addr();
    let listed = |name: &str| json!({"name": name, "ports": [echo]});
    let hosts = json!([
        {"name": "allowed.test", "ports": [echo, banner, http.port()]},
        {"name": "*.wild.test", "ports": [echo]},
        listed("meta.test"),
        listed("mixed.test"),
        listed("cluster.test"),
        listed("nowhere.test"),
        listed("mapped.test"),
    ]);
    let dir = Arc::new(MemoryDirectory::new());
    dir.put_task(task(phase, egress_hosts));
    dir.put_profile(profile("http://127.0.0.1:9", "http://127.0.0.1:9", hosts));
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let resolver = StaticResolver::new()
        .with("allowed.test", &[LOOPBACK])
        .with("a.wild.test", &[LOOPBACK])
        .with("meta.test", &[ip("169.254.169.254")])
        .with("mixed.test", &[LOOPBACK, ip("10.0.0.1")])
        .with("cluster.test", &[ip("10.96.0.10")])
        .with("mapped.test", &[ip("::ffff:127.0.0.2")]);
    let gw = start(dir, resolver, &[LOOPBACK]).await;
    World {
        gw,
        echo,
        echo_got,
        banner,
        http,
        _model: model,
    }
}

/// Sends a CONNECT; returns the status and the open stream.
async fn connect(proxy: SocketAddr, target: &str, credential: Option<&str>) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let mut req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = credential {
        req.push_str(&format!("Proxy-Authorization: {}\r\n", proxy_auth(c)));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut byte))
            .await
            .expect("proxy answered")
            .unwrap();
        assert_eq!(
            n,
            1,
            "proxy closed mid-head: {}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    if status == 200 {
        assert!(
            head.starts_with("HTTP/1.1 200 Connection established\r\n"),
            "{head}"
        );
    }
    (status, s)
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf))
        .await
        .expect("bytes in time")
        .unwrap();
    buf
}

/// Reads until the peer closes (or 10 s pass); what came.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("closed in time");
    out
}

fn implement() -> String {
    credential(RunPhase::Implement, Limits::default())
}

#[tokio::test]
async fn a_connect_to_an_allowed_name_is_relayed_both_ways() {
    let w = world(TaskPhase::Implementing, None).await;
    let (status, mut s) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.echo),
        Some(&implement()),
    )
    .await;
    assert_eq!(status, 200);
    s.write_all(b"SSH-2.0-test\r\nmore bytes").await.unwrap();
    assert_eq!(
        read_exactly(&mut s, 24).await,
        b"SSH-2.0-test\r\nmore bytes"
    );
    // Wildcard rules match names below the domain.
    let (status, _) = connect(
        w.gw.proxy,
        &format!("a.wild.test:{}", w.echo),
        Some(&implement()),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_tls_hello_for_the_connect_host_passes_and_one_for_another_name_is_cut() {
    let w = world(TaskPhase::Implementing, None).await;
    let target = format!("allowed.test:{}", w.echo);
    // Same name (case and trailing dot aside), split across records and writes.
    let hello = client_hello(Some("Allowed.TEST."), 50);
    let (status, mut s) = connect(w.gw.proxy, &target, Some(&implement())).await;
    assert_eq!(status, 200);
    for piece in hello.chunks(33) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(read_exactly(&mut s, hello.len()).await, hello);
    drop(s);

    let before = w.echo_got.load(Ordering::SeqCst);
    let (status, mut s) = connect(w.gw.proxy, &target, Some(&implement())).await;
    assert_eq!(status, 200);
    s.write_all(&client_hello(Some("evil.test"), 16384))
        .await
        .unwrap();
    assert!(read_to_close(&mut s).await.is_empty());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        w.echo_got.load(Ordering::SeqCst),
        before,
        "the hello reached the destination"
    );
    let metrics = send(w.gw.admin, "GET", "/metrics", &[], "").await.text();
    assert!(
        metrics.contains(r#"hermes_gateway_egress_connections_total{phase="implement",outcome="refused",reason="sni-mismatch"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_that_speaks_first_reaches_a_silent_client() {
    let w = world(TaskPhase::Implementing, None).await;
    let (status, mut s) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.banner),
        Some(&implement()),
    )
    .await;
    assert_eq!(status, 200);
    let started = std::time::Instant::now();
    assert_eq!(read_exactly(&mut s, 12).await, b"220 banner\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "held back {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn connections_outside_the_rules_are_refused_with_their_reason() {
    let w = world(TaskPhase::Implementing, None).await;
    let p = w.gw.proxy;
    let e = w.echo;
    let cred = implement();
    let cases: Vec<(String, Option<String>, u16, &str)> = vec![
        (format!("allowed.test:{e}"), None, 407, "no-credential"),
        (
            format!("allowed.test:{e}"),
            Some("hgw1.forged.x".into()),
            407,
            "bad-credential",
        ),
        (
            format!("allowed.test:{e}"),
            Some(credential(RunPhase::Review, Limits::default())),
            403,
            "phase-ended",
        ),
        (
            format!("other.test:{e}"),
            Some(cred.clone()),
            403,
            "not-listed",
        ),
        (
            "allowed.test:1".into(),
            Some(cred.clone()),
            403,
            "not-listed",
        ),
        (
            format!("wild.test:{e}"),
            Some(cred.clone()),
            403,
            "not-listed",
        ),
        (
            format!("127.0.0.1:{e}"),
            Some(cred.clone()),
            403,
            "address-literal",
        ),
        (
            format!("[::1]:{e}"),
            Some(cred.clone()),
            403,
            "address-literal",
        ),
        (
            format!("meta.test:{e}"),
            Some(cred.clone()),
            403,
            "denied-address",
        ),
        (
            format!("mixed.test:{e}"),
            Some(cred.clone()),
            403,
            "denied-address",
        ),
        (
            format!("cluster.test:{e}"),
            Some(cred.clone()),
            403,
            "denied-address",
        ),
        (
            format!("mapped.test:{e}"),
            Some(cred.clone()),
            403,
            "denied-address",
        ),
        (
            format!("nowhere.test:{e}"),
            Some(cred.clone()),
            502,
            "unresolvable",
        ),
    ];
    for (target, cred, status, _) in &cases {
        let (got, _) = connect(p, target, cred.as_deref()).await;
        assert_eq!(got, *status, "{target}");
    }
    assert_eq!(w.echo_got.load(Ordering::SeqCst), 0);
    let metrics = send(w.gw.admin, "GET", "/metrics", &[], "").await.text();
    for reason in [
        "no-credential",
        "bad-credential",
        "phase-ended",
        "not-listed",
        "address-literal",
        "denied-address",
        "unresolvable",
    ] {
        assert!(
            metrics.contains(&format!(r#"reason="{reason}""#)),
            "{reason}: {metrics}"
        );
    }
    assert!(!metrics.contains("allowed.test"), "a host name in a label");
}

#[tokio::test]
async fn each_phase_gets_its_own_rules_and_the_task_narrows_implement() {
    // Prepare lists only git.test.
    let w = world(TaskPhase::Preparing, None).await;
    let prepare = credential(RunPhase::Prepare, Limits::default());
    let (status, _) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.echo),
        Some(&prepare),
    )
    .await;
    assert_eq!(status, 403);

    let w = world(TaskPhase::Implementing, None).await;
    let rule = |port: u16| HostRule {
        name: HostPattern("allowed.test".into()),
        ports: vec![i32::from(port)],
    };
    w.gw.directory
        .put_task(task(TaskPhase::Implementing, Some(vec![rule(w.echo)])));
    let (status, _) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.echo),
        Some(&implement()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.banner),
        Some(&implement()),
    )
    .await;
    assert_eq!(
        status, 403,
        "a port the profile allows but the task does not"
    );
}

#[tokio::test]
async fn prepare_and_publish_credentials_open_only_their_own_phase_hosts() {
    let (echo, _) = echo_server().await;
    let rule = |name: &str| HostRule {
        name: HostPattern(name.into()),
        ports: vec![i32::from(echo)],
    };
    let mut p = profile(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        json!([{"name": "implement.test", "ports": [echo]}]),
    );
    p.spec.egress.hosts.prepare = vec![rule("git-read.test")];
    p.spec.egress.hosts.publish = vec![rule("git-push.test")];
    let dir = Arc::new(MemoryDirectory::new());
    dir.put_profile(p);
    let resolver = StaticResolver::new()
        .with("implement.test", &[LOOPBACK])
        .with("git-read.test", &[LOOPBACK])
        .with("git-push.test", &[LOOPBACK]);
    let gw = start(dir, resolver, &[LOOPBACK]).await;
    let target = |name: &str| format!("{name}:{echo}");
    for (running, phase, own, others) in [
        (
            TaskPhase::Preparing,
            RunPhase::Prepare,
            "git-read.test",
            ["implement.test", "git-push.test"],
        ),
        (
            TaskPhase::Publishing,
            RunPhase::Publish,
            "git-push.test",
            ["implement.test", "git-read.test"],
        ),
    ] {
        gw.directory.put_task(task(running, None));
        let cred = credential(phase, Limits::default());
        let (status, mut s) = connect(gw.proxy, &target(own), Some(&cred)).await;
        assert_eq!(status, 200, "{phase:?} to {own}");
        s.write_all(b"0032want\n").await.unwrap();
        assert_eq!(read_exactly(&mut s, 9).await, b"0032want\n");
        // The tunnel is counted when it ends.
        drop(s);
        for other in others {
            let (status, _) = connect(gw.proxy, &target(other), Some(&cred)).await;
            assert_eq!(status, 403, "{phase:?} to {other}");
        }
        // Plain HTTP follows the same rules.
        let mut s = TcpStream::connect(gw.proxy).await.unwrap();
        let req = format!(
            "GET http://implement.test:{echo}/ HTTP/1.1\r\nHost: implement.test:{echo}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
            proxy_auth(&cred)
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
        assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
        assert!(reply.contains("not in this phase's allowlist"), "{reply}");
        // The implement credential is dead while prepare or publish runs.
        let (status, _) = connect(gw.proxy, &target("implement.test"), Some(&implement())).await;
        assert_eq!(status, 403);
    }
    let lines = [
        r#"hermes_gateway_egress_connections_total{phase="prepare",outcome="allowed",reason="none"} 1"#,
        r#"hermes_gateway_egress_connections_total{phase="prepare",outcome="refused",reason="not-listed"} 3"#,
        r#"hermes_gateway_egress_connections_total{phase="publish",outcome="allowed",reason="none"} 1"#,
        r#"hermes_gateway_egress_connections_total{phase="publish",outcome="refused",reason="not-listed"} 3"#,
    ];
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = send(gw.admin, "GET", "/metrics", &[], "").await.text();
        if lines.iter().all(|l| metrics.contains(l)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{lines:#?}\n{metrics}");
}

#[tokio::test]
async fn plain_http_is_forwarded_in_origin_form_with_its_host() {
    let w = world(TaskPhase::Implementing, None).await;
    let host = format!("allowed.test:{}", w.http.port());
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let req = format!(
        "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        proxy_auth(&implement())
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("hermes-model-server"), "{reply}");
    // The server records a request once it has answered it: the reply can
    // reach the client first.
    let mut records = w._model.records();
    for _ in 0..100 {
        if !records.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        records = w._model.records();
    }
    assert_eq!(records.len(), 1);
    assert_eq!(
        (records[0].method.as_str(), records[0].path.as_str()),
        ("GET", "/")
    );
    assert_eq!(records[0].host, host);

    // Not listed, and without a credential.
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    s.write_all(
        b"GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(reply.starts_with("HTTP/1.1 407"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{reply}"
    );
    let mut s = TcpStream::connect(w.gw.proxy).await.unwrap();
    let req = format!(
        "GET http://other.test/ HTTP/1.1\r\nHost: other.test\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
        proxy_auth(&implement())
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let reply = String::from_utf8_lossy(&read_to_close(&mut s).await).into_owned();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert_eq!(w._model.records().len(), 1);
}

#[tokio::test]
async fn the_credential_of_an_ended_task_opens_nothing() {
    let w = world(TaskPhase::Implementing, None).await;
    w.gw.directory.remove_task(NS, TASK);
    let (status, _) = connect(
        w.gw.proxy,
        &format!("allowed.test:{}", w.echo),
        Some(&implement()),
    )
    .await;
    assert_eq!(status, 403);
}
