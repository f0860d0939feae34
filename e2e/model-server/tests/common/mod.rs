//! Running the real Claude Code CLI against the scripted server: finding the
//! pinned install, a contained environment in temp dirs, a recording proxy.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hermes_model_server::{Config, Scenarios, Server};
use serde_json::Value;

/// The pinned CLI version (also read by install-claude.sh).
pub const CLAUDE_VERSION: &str = include_str!("../../CLAUDE_CODE_VERSION");

/// The model the tests ask for, so the CLI prices usage at a known rate.
pub const MODEL: &str = "claude-sonnet-4-5";
/// That model's prices as the CLI applies them, in USD per million tokens:
/// input, output, cache write (5 min), cache read.
pub const PRICE_PER_MTOK: [f64; 4] = [3.0, 15.0, 3.75, 0.30];

fn required() -> bool {
    std::env::var("HERMES_E2E").is_ok_and(|v| v == "require")
}

/// The installed CLI (`e2e/model-server/install-claude.sh`), or `None` (with
/// a message) when it is missing and the run does not require it.
pub fn claude() -> Option<PathBuf> {
    let path = match std::env::var_os("HERMES_CLAUDE") {
        Some(p) => PathBuf::from(p),
        None => {
            let cache = std::env::var_os("HERMES_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/cache/hermes"));
            cache
                .join(format!("claude-code-{}", CLAUDE_VERSION.trim()))
                .join("node_modules/.bin/claude")
        }
    };
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "the Claude Code CLI is not installed at {}; run e2e/model-server/install-claude.sh (scripts/install-deps does)",
        path.display()
    );
    if required() {
        panic!("HERMES_E2E=require: {why}");
    }
    eprintln!("skipped: {why}");
    None
}

/// The checked-in fixture repository.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/fixtures")
        .join(name)
}

/// Runs git in `dir` with a fixed identity, asserting success.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Hermes Test",
            "-c",
            "user.email=test@hermes.dev",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// A git repository made from a fixture, one commit on `main`.
pub fn repo_from_fixture(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join("repo");
    copy_dir(&fixture(name), &dir);
    git(&dir, &["init", "-q", "."]);
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "fixture"]);
    dir
}

/// A loopback listener standing in for an HTTP(S) proxy: it records the
/// request line of every connection (`CONNECT host:443`, `GET http://...`)
/// and refuses it. Pointed at by the proxy variables, it sees any connection
/// the CLI makes to a host other than the base URL.
pub struct ProxyRecorder {
    /// Its address.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ProxyRecorder {
    /// Starts one on a free loopback port.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut line = String::new();
                    let _ = BufReader::new(&mut conn).read_line(&mut line);
                    s.lock().unwrap().push(line.trim().to_owned());
                    let _ = conn.write_all(
                        b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    );
                });
            }
        });
        Self { addr, seen }
    }

    /// The request lines seen so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// What one CLI run produced.
pub struct Outcome {
    /// The exit code.
    pub code: Option<i32>,
    /// The `--output-format json` result object.
    pub result: Value,
    /// Its stderr.
    pub stderr: String,
}

/// A contained run of the CLI: HOME, CLAUDE_CONFIG_DIR and TMPDIR in temp
/// dirs, no inherited environment but PATH, the base URL of one scenario,
/// every proxy variable pointed at a recorder (the base URL exempted), and
/// the variables that stop the CLI's other traffic.
pub struct Contained {
    /// The scripted server.
    pub server: Server,
    /// The proxy recorder.
    pub proxy: ProxyRecorder,
    /// Holds HOME, TMPDIR and whatever the test puts there.
    pub temp: tempfile::TempDir,
    api_key: String,
}

impl Contained {
    /// A server with the built-in scenarios (requiring `api_key` when set).
    pub fn new(api_key: Option<&str>) -> Self {
        Self::with_config(api_key, |_| {})
    }

    /// Like [`Contained::new`], with the server's config adjusted by `f`.
    pub fn with_config(api_key: Option<&str>, f: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::loopback(Scenarios::builtin().unwrap());
        config.api_key = api_key.map(str::to_owned);
        f(&mut config);
        let server = Server::start(config).unwrap();
        Self {
            server,
            proxy: ProxyRecorder::start(),
            temp: tempfile::tempdir().unwrap(),
            api_key: api_key.unwrap_or("sk-hermes-test").to_owned(),
        }
    }

    /// Runs `claude -p --output-format json` in `workdir` with `prompt` on
    /// stdin against `scenario`, with edits accepted and `allowed_tools`.
    pub fn run(
        &self,
        claude: &Path,
        scenario: &str,
        workdir: &Path,
        prompt: &str,
        allowed_tools: &str,
    ) -> Outcome {
        let home = self.temp.path().join("home");
        let tmp = self.temp.path().join("tmp");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&tmp).unwrap();
        let proxy = format!("http://{}", self.proxy.addr);
        let mut child = Command::new(claude)
            .args([
                "-p",
                "--output-format",
                "json",
                "--model",
                MODEL,
                "--permission-mode",
                "acceptEdits",
                "--allowedTools",
                allowed_tools,
            ])
            .current_dir(workdir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("CLAUDE_CONFIG_DIR", home.join(".claude"))
            .env("TMPDIR", &tmp)
            .env("ANTHROPIC_BASE_URL", self.server.base_url(scenario))
            .env("ANTHROPIC_API_KEY", &self.api_key)
            .env("DISABLE_AUTOUPDATER", "1")
            .env("DISABLE_TELEMETRY", "1")
            .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
            .env("CLAUDE_CODE_MAX_RETRIES", "1")
            .env("HTTPS_PROXY", &proxy)
            .env("https_proxy", &proxy)
            .env("HTTP_PROXY", &proxy)
            .env("http_proxy", &proxy)
            .env("NO_PROXY", "127.0.0.1")
            .env("no_proxy", "127.0.0.1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(prompt.as_bytes())
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let out_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_t = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(180);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("claude did not finish in 180s");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let stdout = out_t.join().unwrap();
        let stderr = err_t.join().unwrap();
        let result = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
            panic!("claude's stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{stderr}")
        });
        Outcome {
            code: status.code(),
            result,
            stderr,
        }
    }

    /// Asserts the CLI talked to the scripted server only: every request
    /// came to its address, and the proxy saw no connection.
    pub fn assert_only_base_url_contacted(&self) {
        let addr = self.server.addr().to_string();
        for r in self.server.records() {
            assert_eq!(r.host, addr, "a request named another host: {r:?}");
        }
        assert_eq!(
            self.proxy.seen(),
            Vec::<String>::new(),
            "the CLI connected elsewhere"
        );
    }
}

/// The cost the CLI should report for a scenario's total usage at [`MODEL`].
pub fn expected_cost(scenario: &str) -> f64 {
    let s = Scenarios::builtin().unwrap();
    let u = hermes_model_server::Usage::total(&s.get(scenario).unwrap().turns);
    let [i, o, cw, cr] = PRICE_PER_MTOK;
    (u.input_tokens as f64 * i
        + u.output_tokens as f64 * o
        + u.cache_creation_input_tokens as f64 * cw
        + u.cache_read_input_tokens as f64 * cr)
        / 1_000_000.0
}

/// Asserts the result's usage and cost are exactly the scenario's.
pub fn assert_scripted_usage(result: &Value, scenario: &str) {
    let s = Scenarios::builtin().unwrap();
    let turns = &s.get(scenario).unwrap().turns;
    let u = hermes_model_server::Usage::total(turns);
    let usage = &result["usage"];
    assert_eq!(usage["input_tokens"], u.input_tokens, "{result}");
    assert_eq!(usage["output_tokens"], u.output_tokens, "{result}");
    assert_eq!(
        usage["cache_creation_input_tokens"],
        u.cache_creation_input_tokens
    );
    assert_eq!(usage["cache_read_input_tokens"], u.cache_read_input_tokens);
    assert_eq!(result["num_turns"], turns.len(), "{result}");
    let cost = result["total_cost_usd"].as_f64().unwrap();
    let want = expected_cost(scenario);
    assert!(
        (cost - want).abs() < 1e-9,
        "total_cost_usd {cost}, scenario says {want}"
    );
    assert_eq!(
        result["modelUsage"][MODEL]["costUSD"]
            .as_f64()
            .map(|c| (c - want).abs() < 1e-9),
        Some(true),
        "{result}"
    );
}
