//! The server's wire behaviour, with a plain HTTP client (no CLI needed).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use hermes_model_server::{Config, Kind, Scenarios, Server, scenario};
use serde_json::{Value, json};

struct Response {
    status: u16,
    headers: String,
    body: String,
}

fn dechunk(mut raw: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = raw.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size, 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        raw = &rest[n + 2..];
    }
}

fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Response {
        status,
        headers: head.to_owned(),
        body,
    }
}

fn server(api_key: Option<&str>) -> Server {
    let mut scenarios = Scenarios::builtin().unwrap();
    scenarios.insert(
        "two",
        scenario::parse(
            "two",
            r#"
turns:
  - content:
      - {type: text, text: "looking"}
      - {type: tool_use, name: Read, input: {file_path: "{{cwd}}/a.txt"}}
    usage: {input_tokens: 11, output_tokens: 5}
  - content: [{type: text, text: "done"}]
    usage: {input_tokens: 3, output_tokens: 2, cache_read_input_tokens: 7}
"#,
        )
        .unwrap(),
    );
    let mut config = Config::loopback(scenarios);
    config.api_key = api_key.map(str::to_owned);
    config.log = false;
    Server::start(config).unwrap()
}

fn history(assistant_turns: usize, stream: bool) -> String {
    let mut messages = vec![json!({"role": "user", "content": "go"})];
    for i in 0..assistant_turns {
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": "x"}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("t{i}"), "content": "r"}]}));
    }
    json!({
        "model": "claude-sonnet-4-5",
        "stream": stream,
        "system": [{"type": "text", "text": "Env\n - Primary working directory: /work/here\n"}],
        "tools": [{"name": "Read"}],
        "messages": messages,
    })
    .to_string()
}

#[test]
fn probe_of_base_url_and_root_answer_200() {
    let s = server(None);
    assert_eq!(send(s.addr(), "HEAD", "/", &[], "").status, 200);
    assert_eq!(send(s.addr(), "HEAD", "/s/two", &[], "").status, 200);
    assert_eq!(send(s.addr(), "GET", "/", &[], "").status, 200);
    assert!(s.records().iter().all(|r| r.kind == Kind::Probe));
}

#[test]
fn non_streaming_request_gets_the_turn_its_history_asks_for() {
    let s = server(None);
    let r = send(
        s.addr(),
        "POST",
        "/s/two/v1/messages?beta=true",
        &[],
        &history(0, false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let m: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["model"], "claude-sonnet-4-5");
    assert_eq!(m["stop_reason"], "tool_use");
    assert_eq!(m["content"][1]["input"]["file_path"], "/work/here/a.txt");
    assert!(
        m["content"][1]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    assert_eq!(m["usage"]["input_tokens"], 11);

    // The same history again (a retry) gets the same turn; one more
    // assistant message gets the next.
    let again: Value = serde_json::from_str(
        &send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &[],
            &history(0, false),
        )
        .body,
    )
    .unwrap();
    assert_eq!(again["content"][0]["text"], "looking");
    let next: Value = serde_json::from_str(
        &send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &[],
            &history(1, false),
        )
        .body,
    )
    .unwrap();
    assert_eq!(next["content"][0]["text"], "done");
    assert_eq!(next["stop_reason"], "end_turn");
    let turns: Vec<_> = s.records().iter().map(|r| r.turn).collect();
    assert_eq!(turns, vec![Some(0), Some(0), Some(1)]);
}

#[test]
fn streaming_request_gets_the_sse_event_sequence() {
    let s = server(None);
    let r = send(
        s.addr(),
        "POST",
        "/s/two/v1/messages?beta=true",
        &[],
        &history(0, true),
    );
    assert_eq!(r.status, 200);
    assert!(
        r.headers.contains("content-type: text/event-stream"),
        "{}",
        r.headers
    );
    let events: Vec<(&str, Value)> = r
        .body
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (ev, data) = e.split_once('\n').unwrap();
            let name = ev.strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], name);
            (name, data)
        })
        .collect();
    let names: Vec<_> = events.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[4].1["content_block"]["type"], "tool_use");
    assert_eq!(events[4].1["content_block"]["name"], "Read");
    let input: Value =
        serde_json::from_str(events[5].1["delta"]["partial_json"].as_str().unwrap()).unwrap();
    assert_eq!(input["file_path"], "/work/here/a.txt");
    assert_eq!(events[7].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[7].1["usage"]["output_tokens"], 5);
}

#[test]
fn side_request_without_tools_does_not_consume_a_turn() {
    let s = server(None);
    let side = json!({"model": "claude-haiku-4-5", "stream": false,
        "system": "Summarise this conversation in a title",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]});
    let r = send(
        s.addr(),
        "POST",
        "/s/two/v1/messages",
        &[],
        &side.to_string(),
    );
    assert_eq!(r.status, 200);
    let m: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(m["usage"]["output_tokens"], 0);
    let rec = s.records();
    assert_eq!((rec[0].kind, rec[0].turn), (Kind::Side, None));
}

#[test]
fn errors_are_anthropic_shaped() {
    let s = server(Some("sk-right"));
    let error_of = |r: Response| -> (u16, String) {
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["type"], "error");
        (r.status, v["error"]["type"].as_str().unwrap().to_owned())
    };
    let body = history(0, false);
    assert_eq!(
        error_of(send(s.addr(), "POST", "/s/two/v1/messages", &[], &body)),
        (401, "authentication_error".into())
    );
    assert_eq!(
        error_of(send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &[("x-api-key", "sk-wrong")],
            &body
        )),
        (401, "authentication_error".into())
    );
    let key = [("x-api-key", "sk-right")];
    assert_eq!(
        send(s.addr(), "POST", "/s/two/v1/messages", &key, &body).status,
        200
    );
    assert_eq!(
        send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &[("authorization", "Bearer sk-right")],
            &body
        )
        .status,
        200
    );
    assert_eq!(
        error_of(send(s.addr(), "POST", "/s/nope/v1/messages", &key, &body)),
        (404, "not_found_error".into())
    );
    assert_eq!(
        error_of(send(s.addr(), "POST", "/v1/messages", &key, &body)),
        (404, "not_found_error".into())
    );
    assert_eq!(
        error_of(send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &key,
            &history(2, false)
        )),
        (400, "invalid_request_error".into())
    );
    assert_eq!(
        error_of(send(
            s.addr(),
            "POST",
            "/s/two/v1/messages",
            &key,
            "{not json"
        )),
        (400, "invalid_request_error".into())
    );
    assert_eq!(
        error_of(send(s.addr(), "GET", "/s/two/v1/models", &key, "")),
        (404, "not_found_error".into())
    );
}

#[test]
fn count_tokens_answers_an_estimate() {
    let s = server(None);
    let r = send(
        s.addr(),
        "POST",
        "/s/two/v1/messages/count_tokens?beta=true",
        &[],
        &history(0, false),
    );
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(s.records()[0].kind, Kind::CountTokens);
}

#[test]
fn keep_alive_connection_serves_requests_back_to_back() {
    let s = server(None);
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let body = history(0, true);
    let one = format!(
        "POST /s/two/v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(format!("{one}{one}HEAD / HTTP/1.1\r\nconnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut raw = String::new();
    c.read_to_string(&mut raw).unwrap();
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 3, "{raw}");
    assert_eq!(raw.matches("event: message_stop").count(), 2);
}

#[test]
fn a_paced_server_spaces_its_events_and_holds_a_plain_reply_as_long() {
    let mut config = Config::loopback(Scenarios::builtin().unwrap());
    config.log = false;
    config.event_interval = std::time::Duration::from_millis(40);
    let s = Server::start(config).unwrap();
    let body = history(0, true);
    // Streamed: the first event after one interval, the nine of the turn
    // after nine.
    let mut conn = TcpStream::connect(s.addr()).unwrap();
    let req = format!(
        "POST /s/implementer-happy/v1/messages HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let start = std::time::Instant::now();
    conn.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut first_event = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = conn.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first_event.is_none() && String::from_utf8_lossy(&raw).contains("event: ") {
            first_event = Some(start.elapsed());
        }
    }
    let whole = start.elapsed();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let events = text.matches("event: ").count();
    assert!(events >= 5, "{text}");
    let first = first_event.unwrap();
    assert!(first >= std::time::Duration::from_millis(40), "{first:?}");
    let paced = std::time::Duration::from_millis(40 * events as u64);
    assert!(whole >= paced, "{whole:?} for {events} events");
    // Plain: as long as its stream would take.
    let start = std::time::Instant::now();
    let r = send(
        s.addr(),
        "POST",
        "/s/implementer-happy/v1/messages",
        &[],
        &history(0, false),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(start.elapsed() >= paced, "{:?}", start.elapsed());
}
