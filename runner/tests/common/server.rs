//! The test git server: `git http-backend` (smart HTTP) behind a small
//! tiny_http front on loopback, with basic auth (a read user and a push user)
//! and a request log; and the git CLI as fixture builder. Shared by the tests
//! (`common/mod.rs`) and the benchmark (`benches/git_steps.rs`, by `#[path]`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;

pub const READ_USER: (&str, &str) = ("reader", "read-secret-4711");
pub const PUSH_USER: (&str, &str) = ("pusher", "push-secret-0815");

/// One logged request.
#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub user: Option<String>,
    pub status: u16,
    /// Any Authorization header at all, valid or not.
    pub authorization: Option<String>,
}

/// A git smart-HTTP server on loopback.
pub struct GitServer {
    pub root: PathBuf,
    pub port: u16,
    pub log: Arc<Mutex<Vec<Logged>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GitServer {
    pub fn start(root: &Path) -> Self {
        std::fs::create_dir_all(root).unwrap();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (s, l, r) = (server.clone(), log.clone(), root.to_owned());
        let thread = std::thread::spawn(move || {
            for req in s.incoming_requests() {
                handle(req, &r, &l);
            }
        });
        Self {
            root: root.to_owned(),
            port,
            log,
            server,
            thread: Some(thread),
        }
    }

    pub fn url(&self, repo: &str) -> String {
        format!("http://127.0.0.1:{}/{repo}", self.port)
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn user_of(auth: Option<&str>) -> Option<(String, bool)> {
    let b64 = auth?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (u, p) = raw.split_once(':')?;
    if (u, p) == READ_USER {
        Some((u.to_owned(), false))
    } else if (u, p) == PUSH_USER {
        Some((u.to_owned(), true))
    } else {
        None
    }
}

fn handle(mut req: tiny_http::Request, root: &Path, log: &Mutex<Vec<Logged>>) {
    let method = req.method().as_str().to_owned();
    let url = req.url().to_owned();
    let (path, query) = url
        .split_once('?')
        .map_or((url.clone(), String::new()), |(p, q)| {
            (p.to_owned(), q.to_owned())
        });
    let header = |name: &str| {
        req.headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let authorization = header("Authorization");
    let content_type = header("Content-Type");
    let content_encoding = header("Content-Encoding");
    let user = user_of(authorization.as_deref());
    let write = path.ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    let mut entry = Logged {
        method: method.clone(),
        path: path.clone(),
        user: user.as_ref().map(|u| u.0.clone()),
        status: 0,
        authorization: authorization.clone(),
    };
    let respond = |req: tiny_http::Request,
                   status: u16,
                   headers: Vec<(String, String)>,
                   body: Vec<u8>,
                   entry: &mut Logged| {
        entry.status = status;
        let mut resp = tiny_http::Response::from_data(body).with_status_code(status);
        for (k, v) in headers {
            resp.add_header(tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()).unwrap());
        }
        let _ = req.respond(resp);
    };
    let Some((user, can_push)) = user else {
        respond(
            req,
            401,
            vec![(
                "WWW-Authenticate".into(),
                "Basic realm=\"hermes-test\"".into(),
            )],
            b"auth required".to_vec(),
            &mut entry,
        );
        log.lock().unwrap().push(entry);
        return;
    };
    if write && !can_push {
        respond(req, 403, vec![], b"read-only user".to_vec(), &mut entry);
        log.lock().unwrap().push(entry);
        return;
    }
    let mut body = Vec::new();
    req.as_reader().read_to_end(&mut body).unwrap();
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", root)
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("REQUEST_METHOD", &method)
        .env("REMOTE_USER", &user)
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ct) = &content_type {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = &content_encoding {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    let _ = writer.join();
    let raw = out.stdout;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&raw[..i]).into_owned(),
            raw[i + n..].to_vec(),
        ),
        None => (String::new(), raw),
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("Status") {
                status = v
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(500);
            } else {
                headers.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    respond(req, status, headers, body, &mut entry);
    log.lock().unwrap().push(entry);
}

/// Runs the git CLI (fixture builder) with an isolated config.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/nonexistent")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.invalid")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
