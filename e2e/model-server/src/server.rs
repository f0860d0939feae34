//! The listener: routing, scenario and turn selection, the request log.

use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::Error;
use crate::api::{self, Inspected};
use crate::http::{self, Chunked, Request};
use crate::scenario::{Block, Scenarios, Turn, Usage, Vars};

/// The path prefix that selects a scenario: `/s/<name>/v1/messages`.
pub const SCENARIO_PREFIX: &str = "/s/";

/// How the server runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to bind (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// When set, Messages requests must carry it (`x-api-key` or
    /// `Authorization: Bearer`), else they get a 401.
    pub api_key: Option<String>,
    /// The scenarios it can play.
    pub scenarios: Scenarios,
    /// The scenario for requests without a `/s/<name>` prefix, if any.
    pub default_scenario: Option<String>,
    /// When set, every request body is written there as `NNNN-<kind>.json`.
    pub dump_dir: Option<PathBuf>,
    /// Whether to log each request to stderr.
    pub log: bool,
    /// Break every SSE stream after its first event (closing the
    /// connection), to exercise the CLI's fallback to a plain request.
    pub break_streams: bool,
    /// Paces a reply like a model generating it: each SSE event waits this
    /// long before it is sent (the first one too: a time to first byte), a
    /// plain reply as long as its stream would. Zero sends at once.
    pub event_interval: std::time::Duration,
}

impl Config {
    /// Loopback on a free port, the built-in scenarios, no key, logging on.
    pub fn loopback(scenarios: Scenarios) -> Self {
        Self {
            listen: "127.0.0.1:0".into(),
            api_key: None,
            scenarios,
            default_scenario: None,
            dump_dir: None,
            log: true,
            break_streams: false,
            event_interval: std::time::Duration::ZERO,
        }
    }
}

/// What kind of request the server saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `HEAD`/`GET` of the root (the CLI's reachability check).
    Probe,
    /// A turn of the scripted conversation.
    Turn,
    /// A request that is not the main conversation (no tools offered and no
    /// working directory stated, e.g. a title or summary request): answered
    /// without consuming a turn.
    Side,
    /// `POST .../v1/messages/count_tokens`.
    CountTokens,
    /// Anything else, or a request refused.
    Other,
}

/// One request, as logged.
#[derive(Debug, Clone)]
pub struct Record {
    /// The method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The `Host` header.
    pub host: String,
    /// The `User-Agent` header.
    pub user_agent: String,
    /// The scenario selected, if any.
    pub scenario: Option<String>,
    /// What it was.
    pub kind: Kind,
    /// The turn answered (for [`Kind::Turn`]).
    pub turn: Option<usize>,
    /// The model requested.
    pub model: Option<String>,
    /// The status code returned.
    pub status: u16,
    /// The tool results the request carried in its last message.
    pub tool_results: Vec<String>,
    /// Whether the request asked for an SSE stream.
    pub stream: bool,
    /// Whether the server broke the stream on purpose (`break_streams`).
    pub broken: bool,
}

struct State {
    config: Config,
    records: Mutex<Vec<Record>>,
    seq: AtomicU64,
}

/// A running server; it stops when dropped.
pub struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl Server {
    /// Binds and serves on background threads.
    pub fn start(config: Config) -> Result<Self, Error> {
        if let Some(dir) = &config.dump_dir {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
        let listener = TcpListener::bind(&config.listen).map_err(|source| Error::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen.clone(),
            source,
        })?;
        let state = Arc::new(State {
            config,
            records: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || accept_loop(listener, st, sp));
        Ok(Self { addr, state, stop })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL that selects `scenario` (the CLI's `ANTHROPIC_BASE_URL`).
    pub fn base_url(&self, scenario: &str) -> String {
        format!("http://{}{SCENARIO_PREFIX}{scenario}", self.addr)
    }

    /// Every request seen so far.
    pub fn records(&self) -> Vec<Record> {
        self.state
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Serves until the process ends.
    pub fn wait(self) {
        loop {
            std::thread::park();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>, stop: Arc<AtomicBool>) {
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let state = state.clone();
        std::thread::spawn(move || {
            // An idle keep-alive connection timing out is not worth a line.
            if let Err(e) = serve_connection(conn, &state)
                && state.config.log
                && !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                )
            {
                eprintln!("hermes-model-server: connection: {e}");
            }
        });
    }
}

fn serve_connection(conn: TcpStream, state: &State) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(300)))?;
    let _ = conn.set_nodelay(true);
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = BufWriter::new(conn);
    while let Some(req) = http::read_request(&mut reader)? {
        let record = handle(&req, state, &mut writer)?;
        let close = req.wants_close() || record.broken;
        if state.config.log {
            eprintln!(
                "hermes-model-server: {} {} scenario={} kind={:?} turn={} model={} stream={} status={}{}",
                record.method,
                record.path,
                record.scenario.as_deref().unwrap_or("-"),
                record.kind,
                record.turn.map_or("-".to_owned(), |t| t.to_string()),
                record.model.as_deref().unwrap_or("-"),
                record.stream,
                record.status,
                if record.broken {
                    " (stream broken on purpose)"
                } else {
                    ""
                },
            );
        }
        if let Ok(mut r) = state.records.lock() {
            r.push(record);
        }
        if close {
            break;
        }
    }
    Ok(())
}

/// Splits `/s/<name>/rest` into (`Some(name)`, `/rest`).
fn split_scenario(path: &str) -> (Option<&str>, &str) {
    match path.strip_prefix(SCENARIO_PREFIX) {
        Some(rest) => match rest.find('/') {
            Some(i) => (Some(&rest[..i]), &rest[i..]),
            None => (Some(rest), "/"),
        },
        None => (None, path),
    }
}

fn authorized(req: &Request, key: &str) -> bool {
    req.header("x-api-key") == Some(key)
        || req
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            == Some(key)
}

struct Reply {
    status: u16,
    body: Value,
}

fn err(status: u16, kind: &str, message: &str) -> Reply {
    Reply {
        status,
        body: api::error(kind, message),
    }
}

fn handle(req: &Request, state: &State, w: &mut impl Write) -> std::io::Result<Record> {
    let (named, rest) = split_scenario(&req.path);
    let scenario = named
        .map(str::to_owned)
        .or_else(|| state.config.default_scenario.clone());
    let mut record = Record {
        method: req.method.clone(),
        path: req.path.clone(),
        host: req.header("host").unwrap_or("").to_owned(),
        user_agent: req.header("user-agent").unwrap_or("").to_owned(),
        scenario: scenario.clone(),
        kind: Kind::Other,
        turn: None,
        model: None,
        status: 200,
        tool_results: Vec::new(),
        stream: false,
        broken: false,
    };
    let head = req.method == "HEAD";
    let reply = match (req.method.as_str(), rest) {
        ("HEAD" | "GET", "/" | "") => {
            record.kind = Kind::Probe;
            Reply {
                status: 200,
                body: json!({"server": "hermes-model-server"}),
            }
        }
        ("POST", "/v1/messages" | "/v1/messages/count_tokens") => {
            match messages(req, state, scenario.as_deref(), rest, &mut record) {
                Ok((inspected, turn)) => {
                    return send_turn(w, state, &inspected, &turn, record);
                }
                Err(reply) => reply,
            }
        }
        (_, "/v1/messages" | "/v1/messages/count_tokens") => {
            err(405, "invalid_request_error", "method not allowed")
        }
        _ => err(
            404,
            "not_found_error",
            &format!(
                "hermes-model-server does not serve {} {}",
                req.method, req.path
            ),
        ),
    };
    record.status = reply.status;
    let body = serde_json::to_vec(&reply.body).unwrap_or_default();
    http::write_response(
        w,
        head,
        reply.status,
        "application/json",
        &[(
            "request-id",
            format!("req_hms{:08}", state.seq.load(Ordering::Relaxed)),
        )],
        &body,
    )?;
    Ok(record)
}

/// Handles a Messages request: `Ok` is a turn (or side reply) to send,
/// `Err` a complete reply (an error, or count_tokens' answer).
fn messages(
    req: &Request,
    state: &State,
    scenario: Option<&str>,
    rest: &str,
    record: &mut Record,
) -> Result<(Inspected, Turn), Reply> {
    let n = state.seq.fetch_add(1, Ordering::Relaxed);
    let counting = rest.ends_with("/count_tokens");
    if let Some(key) = &state.config.api_key
        && !authorized(req, key)
    {
        return Err(err(401, "authentication_error", "invalid x-api-key"));
    }
    let body: Value = serde_json::from_slice(&req.body).map_err(|e| {
        err(
            400,
            "invalid_request_error",
            &format!("body is not JSON: {e}"),
        )
    })?;
    let inspected = api::inspect(&body);
    record.model = Some(inspected.model.clone());
    record.stream = inspected.stream;
    record.tool_results = inspected.tool_results.clone();
    if counting {
        record.kind = Kind::CountTokens;
        dump(state, n, "count_tokens", &req.body);
        let estimate = req.body.len() / 4;
        return Err(Reply {
            status: 200,
            body: json!({"input_tokens": estimate}),
        });
    }
    // The main conversation offers tools and states the working directory;
    // the CLI's side requests (titles, summaries, topic checks) do neither.
    if inspected.tools == 0 && inspected.cwd.is_none() {
        record.kind = Kind::Side;
        dump(state, n, "side", &req.body);
        let turn = Turn {
            content: vec![Block::Text {
                text: "{\"title\": \"Scripted task\", \"isNewTopic\": false}".into(),
            }],
            stop_reason: Some("end_turn".into()),
            usage: Usage::default(),
        };
        return Ok((inspected, turn));
    }
    record.kind = Kind::Turn;
    dump(state, n, "turn", &req.body);
    let Some(name) = scenario else {
        return Err(err(
            404,
            "not_found_error",
            "no scenario selected: use a base URL ending in /s/<scenario>",
        ));
    };
    let Some(sc) = state.config.scenarios.get(name) else {
        return Err(err(
            404,
            "not_found_error",
            &format!("no scenario named {name:?}"),
        ));
    };
    let index = inspected.assistant_turns;
    record.turn = Some(index);
    let Some(turn) = sc.turns.get(index) else {
        return Err(err(
            400,
            "invalid_request_error",
            &format!(
                "scenario {name:?} has {} turns; the history asks for turn {index}",
                sc.turns.len()
            ),
        ));
    };
    let vars = Vars {
        cwd: inspected.cwd.clone(),
    };
    Ok((inspected, vars.render(turn)))
}

fn dump(state: &State, n: u64, kind: &str, body: &[u8]) {
    if let Some(dir) = &state.config.dump_dir {
        let _ = std::fs::write(dir.join(format!("{n:04}-{kind}.json")), body);
    }
}

/// Waits `events` times `interval` (the server's pace), if any.
fn pause(interval: std::time::Duration, events: usize) {
    if !interval.is_zero() {
        std::thread::sleep(interval.saturating_mul(u32::try_from(events).unwrap_or(u32::MAX)));
    }
}

fn send_turn(
    w: &mut impl Write,
    state: &State,
    inspected: &Inspected,
    turn: &Turn,
    mut record: Record,
) -> std::io::Result<Record> {
    record.status = 200;
    if inspected.stream {
        let mut c = Chunked::start(w, 200, "text/event-stream", &[])?;
        for (name, data) in api::stream_events(&inspected.model, turn) {
            pause(state.config.event_interval, 1);
            c.send(api::sse(name, &data).as_bytes())?;
            if state.config.break_streams {
                // The caller closes the connection mid-body.
                record.broken = true;
                return Ok(record);
            }
        }
        c.finish()?;
    } else {
        pause(
            state.config.event_interval,
            api::stream_events(&inspected.model, turn).len(),
        );
        let body = serde_json::to_vec(&api::message(&inspected.model, turn)).unwrap_or_default();
        http::write_response(w, false, 200, "application/json", &[], &body)?;
    }
    Ok(record)
}
