//! The model API proxy on loopback, with the scripted model server (and a
//! recording stand-in) upstream: pass-through, exact usage, the real key,
//! refusals, budget stops, the usage endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use hermes_crds::gateway::{Figures, Limits, SigningKey, UsageReport};
use hermes_crds::status::{Usage, UsageMeter};
use hermes_crds::{RunPhase, TaskPhase};
use hermes_gateway::directory::{MemoryDirectory, StaticResolver};
use hermes_model_server::{Kind, Usage as ScenarioUsage};
use serde_json::json;

async fn gateway_for(upstream: &str, reviewer: &str, phase: TaskPhase) -> Running {
    let dir = Arc::new(MemoryDirectory::new());
    dir.put_task(task(phase, None));
    dir.put_profile(profile(upstream, reviewer, json!([])));
    start(dir, StaticResolver::new(), &[]).await
}

async fn usage(admin: std::net::SocketAddr, query: &str) -> UsageReport {
    let token = format!("Bearer {}", key().usage_reader_token());
    let r = send(
        admin,
        "GET",
        &format!("/v1/usage{query}"),
        &[("authorization", &token)],
        "",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn figures_of(report: &UsageReport, phase: RunPhase) -> Figures {
    report
        .entries
        .iter()
        .find(|e| e.phase == phase && e.uid == UID)
        .map(|e| e.figures)
        .unwrap_or_default()
}

#[tokio::test]
async fn streamed_and_plain_replies_pass_through_with_exact_usage() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("reviewer-approve"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(RunPhase::Implement, Limits::default());
    let scenario = hermes_model_server::Scenarios::builtin()
        .unwrap()
        .get("implementer-happy")
        .cloned()
        .unwrap();
    let want = ScenarioUsage::total(&scenario.turns);
    // Turns 0 and 2 streamed, 1 and 3 plain.
    for turn in 0..scenario.turns.len() {
        let stream = turn % 2 == 0;
        let r = messages(gw.model, "", &cred, &turn_body(turn, stream, MODEL)).await;
        assert_eq!(r.status, 200, "turn {turn}: {}", r.text());
        if stream {
            let ct = r.headers.get("content-type").unwrap().to_str().unwrap();
            assert!(ct.starts_with("text/event-stream"), "{ct}");
            let text = r.text();
            assert!(text.starts_with("event: message_start\n"), "{text}");
            assert!(
                text.trim_end()
                    .ends_with(r#"data: {"type":"message_stop"}"#),
                "{text}"
            );
        } else {
            assert_eq!(
                r.json()["usage"]["input_tokens"],
                scenario.turns[turn].usage.input_tokens
            );
        }
    }
    let records = server.records();
    assert_eq!(
        records.iter().filter(|r| r.kind == Kind::Turn).count(),
        scenario.turns.len()
    );
    assert!(records.iter().all(|r| r.status == 200), "{records:?}");

    let f = figures_of(&usage(gw.admin, "").await, RunPhase::Implement);
    assert_eq!(f.turns, 4);
    assert_eq!(f.input_tokens, want.input_tokens);
    assert_eq!(f.output_tokens, want.output_tokens);
    assert_eq!(f.cache_creation_tokens, want.cache_creation_input_tokens);
    assert_eq!(f.cache_read_tokens, want.cache_read_input_tokens);
    // 1670×3 + 180×15 + 3000×3.75 + 13100×0.3 micro-dollars = 0.02289 USD.
    assert_eq!(f.cost_pico_usd, 22_890_000_000);
    assert_eq!(f.unpriced_tokens, 0);
    let metrics = send(gw.admin, "GET", "/metrics", &[], "").await.text();
    assert!(
        metrics
            .contains(r#"hermes_gateway_model_tokens_total{phase="implement",kind="input"} 1670"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_reviewer_goes_to_its_own_upstream_and_is_counted_apart() {
    let server = model_server();
    // The reviewer's credential (`bearer-cred`) is sent as a bearer token;
    // the model server accepts only the real key, so use the recording one.
    let (rec, seen) = recording_upstream().await;
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &format!("http://{rec}/rev"),
        TaskPhase::Reviewing,
    )
    .await;
    let cred = credential(RunPhase::Review, Limits::default());
    let r = messages(gw.model, "", &cred, &turn_body(0, false, MODEL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/rev/v1/messages?beta=true");
    let header = |n: &str| {
        seen[0]
            .headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        header("authorization").as_deref(),
        Some("Bearer sk-bearer-key")
    );
    assert_eq!(header("x-api-key"), None);
    let report = usage(gw.admin, "").await;
    assert_eq!(figures_of(&report, RunPhase::Review).input_tokens, 10);
    assert_eq!(figures_of(&report, RunPhase::Implement), Figures::default());
    assert!(server.records().is_empty());
}

#[tokio::test]
async fn the_real_key_reaches_the_upstream_and_the_task_credential_does_not() {
    let (rec, seen) = recording_upstream().await;
    let gw = gateway_for(
        &format!("http://{rec}/base/"),
        &format!("http://{rec}"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(RunPhase::Implement, Limits::default());
    let r = send(
        gw.model,
        "POST",
        "/v1/messages?beta=true",
        &[
            ("authorization", &format!("Bearer {cred}")),
            ("proxy-authorization", &proxy_auth(&cred)),
            ("connection", "keep-alive, x-hop"),
            ("x-hop", "1"),
            ("accept-encoding", "gzip, br"),
            ("anthropic-beta", "claude-code-20250219"),
        ],
        &turn_body(0, false, MODEL),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.method.as_str(), s.uri.as_str()),
        ("POST", "/base/v1/messages?beta=true")
    );
    let header = |n: &str| {
        s.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-api-key").as_deref(), Some(REAL_KEY));
    assert_eq!(header("host").as_deref(), Some(rec.to_string().as_str()));
    assert_eq!(
        header("anthropic-beta").as_deref(),
        Some("claude-code-20250219")
    );
    assert_eq!(header("accept-encoding").as_deref(), Some("identity"));
    for gone in ["authorization", "proxy-authorization", "x-hop"] {
        assert_eq!(header(gone), None, "{gone} was forwarded");
    }
    for (k, v) in &s.headers {
        assert!(
            !v.contains(&cred) && !v.contains("hgw1."),
            "the task credential went upstream in {k}"
        );
    }
    assert!(!String::from_utf8_lossy(&s.body).contains("hgw1."));
    assert_eq!(s.body, turn_body(0, false, MODEL).as_bytes());
}

#[tokio::test]
async fn the_scripted_server_refuses_without_the_real_key_so_the_gateway_sent_it() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("reviewer-approve"),
        &server.base_url("reviewer-approve"),
        TaskPhase::Implementing,
    )
    .await;
    // Direct, with the task credential: the upstream refuses it.
    let cred = credential(RunPhase::Implement, Limits::default());
    let direct = messages(
        server.addr(),
        "/s/reviewer-approve",
        &cred,
        &turn_body(0, false, MODEL),
    )
    .await;
    assert_eq!(direct.status, 401);
    let via = messages(gw.model, "", &cred, &turn_body(0, false, MODEL)).await;
    assert_eq!(via.status, 200, "{}", via.text());
}

#[tokio::test]
async fn probes_answer_without_a_credential() {
    let gw = gateway_for(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9",
        TaskPhase::Implementing,
    )
    .await;
    assert_eq!(send(gw.model, "HEAD", "/", &[], "").await.status, 200);
    assert_eq!(send(gw.model, "GET", "/", &[], "").await.status, 200);
    assert_eq!(send(gw.admin, "GET", "/healthz", &[], "").await.status, 200);
    assert_eq!(send(gw.admin, "GET", "/readyz", &[], "").await.status, 200);
}

fn assert_auth_error(r: &Reply) {
    assert_eq!(r.status, 401, "{}", r.text());
    let j = r.json();
    assert_eq!(j["type"], "error");
    assert_eq!(j["error"]["type"], "authentication_error");
}

#[tokio::test]
async fn forged_wrong_task_and_ended_phase_credentials_are_refused() {
    let server = model_server();
    let (rec, seen) = recording_upstream().await;
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &format!("http://{rec}"),
        TaskPhase::Implementing,
    )
    .await;
    let body = turn_body(0, false, MODEL);
    // None at all; junk; a real model key.
    assert_auth_error(&send(gw.model, "POST", "/v1/messages", &[], &body).await);
    assert_auth_error(&messages(gw.model, "", "hgw1.junk.junk", &body).await);
    assert_auth_error(&messages(gw.model, "", REAL_KEY, &body).await);
    // Signed by another key.
    let other = SigningKey::from_bytes(&[b'k'; 32]).unwrap();
    let forged = other.mint(&claims(RunPhase::Implement, Limits::default()));
    assert_auth_error(&messages(gw.model, "", &forged, &body).await);
    // Another task's, another uid's, another attempt's.
    let mut c = claims(RunPhase::Implement, Limits::default());
    c.task = "other-task".into();
    assert_auth_error(&messages(gw.model, "", &key().mint(&c), &body).await);
    let mut c = claims(RunPhase::Implement, Limits::default());
    c.uid = "recreated-uid".into();
    assert_auth_error(&messages(gw.model, "", &key().mint(&c), &body).await);
    let mut c = claims(RunPhase::Implement, Limits::default());
    c.attempt = 2;
    assert_auth_error(&messages(gw.model, "", &key().mint(&c), &body).await);
    // The review credential while implement runs.
    assert_auth_error(
        &messages(
            gw.model,
            "",
            &credential(RunPhase::Review, Limits::default()),
            &body,
        )
        .await,
    );
    // The phase moves on: the implement credential stops working.
    gw.directory.put_task(task(TaskPhase::Reviewing, None));
    assert_auth_error(
        &messages(
            gw.model,
            "",
            &credential(RunPhase::Implement, Limits::default()),
            &body,
        )
        .await,
    );
    assert!(server.records().is_empty(), "nothing refused went upstream");
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing refused went upstream"
    );
    let r = messages(
        gw.model,
        "",
        &credential(RunPhase::Review, Limits::default()),
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(seen.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn the_model_api_is_refused_to_prepare_and_publish_credentials() {
    let server = model_server();
    for (task_phase, phase) in [
        (TaskPhase::Preparing, RunPhase::Prepare),
        (TaskPhase::Publishing, RunPhase::Publish),
    ] {
        // The phase is live: the credential is valid, only not for the model API.
        let gw = gateway_for(
            &server.base_url("implementer-happy"),
            &server.base_url("implementer-happy"),
            task_phase,
        )
        .await;
        let r = messages(
            gw.model,
            "",
            &credential(phase, Limits::default()),
            &turn_body(0, false, MODEL),
        )
        .await;
        assert_eq!(r.status, 403, "{phase:?}: {}", r.text());
        assert_eq!(r.json()["error"]["type"], "permission_error");
        assert!(
            r.json()["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("implement and review phases only")),
            "{}",
            r.text()
        );
        let metrics = send(gw.admin, "GET", "/metrics", &[], "").await.text();
        assert!(
            metrics.contains(&format!(
                r#"hermes_gateway_model_requests_total{{phase="{}",outcome="forbidden"}} 1"#,
                phase.as_str()
            )),
            "{metrics}"
        );
    }
    assert!(server.records().is_empty());
}

#[tokio::test]
async fn a_lagging_cache_is_checked_once_against_the_api_server() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Preparing,
    )
    .await;
    // The operator moved the task on; the cache still shows Preparing.
    gw.directory
        .put_task_on_server(task(TaskPhase::Implementing, None));
    let cred = credential(RunPhase::Implement, Limits::default());
    let r = messages(gw.model, "", &cred, &turn_body(0, false, MODEL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gw.directory.fetches(), 1);
    // A refused credential does not make a read per request.
    let ended = credential(RunPhase::Publish, Limits::default());
    for _ in 0..5 {
        assert_auth_error(&messages(gw.model, "", &ended, &turn_body(0, false, MODEL)).await);
    }
    assert!(
        gw.directory.fetches() <= 2,
        "{} reads",
        gw.directory.fetches()
    );
}

fn budget_message(r: &Reply) -> String {
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    r.json()["error"]["message"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_budget_stops_a_phase_after_its_turns() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(
        RunPhase::Implement,
        Limits {
            turns: Some(2),
            ..Limits::default()
        },
    );
    for turn in 0..2 {
        let r = messages(gw.model, "", &cred, &turn_body(turn, true, MODEL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = messages(gw.model, "", &cred, &turn_body(2, true, MODEL)).await;
    assert_eq!(
        budget_message(&r),
        "Hermes gateway: the task's budget is spent (turns 2 of 2); no further model requests are forwarded"
    );
    assert_eq!(
        server
            .records()
            .iter()
            .filter(|r| r.kind == Kind::Turn)
            .count(),
        2
    );
    // count_tokens is not a turn and is still forwarded.
    let ct = send(
        gw.model,
        "POST",
        "/v1/messages/count_tokens",
        &[("x-api-key", &cred)],
        &turn_body(2, false, MODEL),
    )
    .await;
    assert_eq!(ct.status, 200, "{}", ct.text());
    let report = usage(gw.admin, &format!("?uid={UID}")).await;
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].refused_for_budget, 1);
    assert_eq!(report.entries[0].figures.turns, 2);
    let metrics = send(gw.admin, "GET", "/metrics", &[], "").await.text();
    assert!(
        metrics.contains(r#"hermes_gateway_budget_refusals_total{phase="implement"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn tokens_counted_by_earlier_instances_count_against_the_budget() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Implementing,
    )
    .await;
    let earlier = Figures {
        input_tokens: 600,
        output_tokens: 400,
        ..Figures::default()
    };
    // This instance's own meter in status is left out (its live count is used).
    let own_stale = Figures {
        input_tokens: 1_000_000,
        ..Figures::default()
    };
    let usage_status = Usage {
        meters: vec![
            UsageMeter::new("earlier-instance", RunPhase::Implement, &earlier, 0),
            UsageMeter::new("test-instance", RunPhase::Implement, &own_stale, 0),
            UsageMeter::new("earlier-instance", RunPhase::Review, &own_stale, 0),
        ],
        ..Usage::default()
    };
    gw.directory.put_task(with_usage(
        task(TaskPhase::Implementing, None),
        usage_status.clone(),
    ));
    let cred = credential(
        RunPhase::Implement,
        Limits {
            tokens: Some(1000),
            ..Limits::default()
        },
    );
    let r = messages(gw.model, "", &cred, &turn_body(0, true, MODEL)).await;
    assert_eq!(
        budget_message(&r),
        "Hermes gateway: the task's budget is spent (tokens 1000 of 1000); no further model requests are forwarded"
    );
    // With 20 more tokens allowed, one turn goes, and its usage then stops the next.
    let cred = credential(
        RunPhase::Implement,
        Limits {
            tokens: Some(1020),
            ..Limits::default()
        },
    );
    let r = messages(gw.model, "", &cred, &turn_body(0, true, MODEL)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = messages(gw.model, "", &cred, &turn_body(1, true, MODEL)).await;
    assert!(budget_message(&r).contains("of 1020"));
    assert_eq!(
        server
            .records()
            .iter()
            .filter(|r| r.kind == Kind::Turn)
            .count(),
        1
    );
}

#[tokio::test]
async fn a_cost_budget_refuses_a_model_without_a_price() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(
        RunPhase::Implement,
        Limits {
            cost_micros: Some(5_000_000),
            ..Limits::default()
        },
    );
    let r = messages(gw.model, "", &cred, &turn_body(0, false, "claude-opus-4-8")).await;
    let msg = budget_message(&r);
    assert!(
        msg.contains("claude-opus-4-8") && msg.contains("cost budget cannot be enforced"),
        "{msg}"
    );
    let r = messages(
        gw.model,
        "",
        &cred,
        &turn_body(0, false, "claude-sonnet-4-5-20250929"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Without a cost limit the same model goes, its tokens unpriced.
    let free = credential(RunPhase::Implement, Limits::default());
    let r = messages(gw.model, "", &free, &turn_body(0, false, "claude-opus-4-8")).await;
    assert_eq!(r.status, 200);
    let f = figures_of(&usage(gw.admin, "").await, RunPhase::Implement);
    assert_eq!(f.unpriced_tokens, 1200 + 40 + 3000);
}

#[tokio::test]
async fn a_request_body_over_32_mib_is_refused() {
    let (rec, seen) = recording_upstream().await;
    let gw = gateway_for(
        &format!("http://{rec}"),
        &format!("http://{rec}"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(RunPhase::Implement, Limits::default());
    let big = "x".repeat((32 << 20) + 1);
    let r = messages(gw.model, "", &cred, &big).await;
    assert_eq!(r.status, 413);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_usage_endpoint_requires_the_reader_token() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(RunPhase::Implement, Limits::default());
    assert_eq!(
        messages(gw.model, "", &cred, &turn_body(0, false, MODEL))
            .await
            .status,
        200
    );
    assert_eq!(
        send(gw.admin, "GET", "/v1/usage", &[], "").await.status,
        401
    );
    let task_cred = format!("Bearer {cred}");
    assert_eq!(
        send(
            gw.admin,
            "GET",
            "/v1/usage",
            &[("authorization", &task_cred)],
            ""
        )
        .await
        .status,
        401
    );
    let other = format!(
        "Bearer {}",
        SigningKey::from_bytes(&[b'k'; 32])
            .unwrap()
            .usage_reader_token()
    );
    assert_eq!(
        send(
            gw.admin,
            "GET",
            "/v1/usage",
            &[("authorization", &other)],
            ""
        )
        .await
        .status,
        401
    );
    let report = usage(gw.admin, "").await;
    assert_eq!(report.instance, "test-instance");
    assert_eq!(report.entries.len(), 1);
    assert_eq!(report.entries[0].task, TASK);
    assert!(
        usage(gw.admin, "?uid=someone-else")
            .await
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn sse_events_are_forwarded_as_they_arrive() {
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use tokio::sync::{mpsc, oneshot};

    // An upstream that sends message_start, then waits for the test to say
    // it saw that event through the gateway before it sends the rest.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = l.local_addr().unwrap();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let go = Arc::new(std::sync::Mutex::new(Some(go_rx)));
    tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let svc = hyper::service::service_fn(move |_req| {
            let go = go.lock().unwrap().take();
            async move {
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
                tokio::spawn(async move {
                    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":5}}}\n\n";
                    tx.send(Ok(Frame::data(Bytes::from(start)))).await.unwrap();
                    if let Some(go) = go {
                        let _ = go.await;
                    }
                    let end = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":7}}\n\n";
                    tx.send(Ok(Frame::data(Bytes::from(end)))).await.unwrap();
                });
                let body = StreamBody::new(tokio_stream(rx));
                Ok::<_, std::convert::Infallible>(
                    hyper::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(body)
                        .unwrap(),
                )
            }
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
            .await;
    });
    let gw = gateway_for(
        &format!("http://{up}"),
        &format!("http://{up}"),
        TaskPhase::Implementing,
    )
    .await;
    let cred = credential(RunPhase::Implement, Limits::default());
    let stream = tokio::net::TcpStream::connect(gw.model).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/v1/messages")
        .header("x-api-key", &cred)
        .header("host", "gw")
        .body(http_body_util::Full::new(Bytes::from(turn_body(
            0, true, MODEL,
        ))))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let mut body = resp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first event came through before the upstream finished")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(first.data_ref().unwrap()).contains("message_start"));
    go_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).contains("message_delta"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let f = figures_of(&usage(gw.admin, "").await, RunPhase::Implement);
    assert_eq!((f.input_tokens, f.output_tokens, f.turns), (5, 7, 1));
}

/// An mpsc receiver as a stream (no tokio-stream dependency).
fn tokio_stream<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn a_task_read_directly_serves_the_next_requests_of_that_second() {
    let server = model_server();
    let gw = gateway_for(
        &server.base_url("implementer-happy"),
        &server.base_url("implementer-happy"),
        TaskPhase::Preparing,
    )
    .await;
    gw.directory
        .put_task_on_server(task(TaskPhase::Implementing, None));
    let cred = credential(RunPhase::Implement, Limits::default());
    for turn in 0..3 {
        let r = messages(gw.model, "", &cred, &turn_body(turn, false, MODEL)).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert_eq!(gw.directory.fetches(), 1);
}
