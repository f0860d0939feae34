//! Test support: a real git smart-HTTP server (`git http-backend` behind a
//! small tiny_http front with basic auth and a request log), fixtures built
//! with the git CLI (as server and fixture builder only), and a runner
//! invocation that reads back the termination message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hermes_results::StepResult;

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

/// What a runner invocation produced.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub result: StepResult,
    pub stderr: String,
    pub message: String,
}

/// A test world: a server with one repository, credentials, a canary dir.
pub struct World {
    pub tmp: tempfile::TempDir,
    pub server: GitServer,
    pub evil: GitServer,
    pub url: String,
    pub remote: PathBuf,
    pub read_creds: PathBuf,
    pub push_creds: PathBuf,
    pub canary: PathBuf,
    pub home: PathBuf,
    runs: std::cell::Cell<u32>,
}

pub const BRANCH: &str = "hermes/t1";
pub const TASK: &str = "t1";

impl World {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("srv");
        let server = GitServer::start(&root);
        let evil = GitServer::start(&tmp.path().join("evil-srv"));
        let remote = root.join("repo.git");
        std::fs::create_dir_all(&remote).unwrap();
        git(&remote, &["init", "-q", "--bare", "-b", "main"]);
        // A seed work tree (outside every runner path) to build the base.
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(seed.join("src")).unwrap();
        git(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# demo\n").unwrap();
        std::fs::write(seed.join("src/lib.txt"), "one\ntwo\nthree\n").unwrap();
        std::fs::write(seed.join("task.md"), "# Task\nAdd a greeting.\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "base"]);
        git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
        let mk = |name: &str, (u, p): (&str, &str)| {
            let d = tmp.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("username"), format!("{u}\n")).unwrap();
            std::fs::write(d.join("password"), format!("{p}\n")).unwrap();
            d
        };
        let read_creds = mk("read-creds", READ_USER);
        let push_creds = mk("push-creds", PUSH_USER);
        let canary = tmp.path().join("canary");
        std::fs::create_dir_all(&canary).unwrap();
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let url = server.url("repo.git");
        Self {
            tmp,
            server,
            evil,
            url,
            remote,
            read_creds,
            push_creds,
            canary,
            home,
            runs: 0.into(),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    pub fn repo_dir(&self) -> PathBuf {
        self.path("volume/repo")
    }

    /// Runs the runner binary with a clean environment.
    pub fn runner(&self, args: &[&str]) -> Run {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let term = self.path(&format!("termination-{n}"));
        let out = Command::new(env!("CARGO_BIN_EXE_hermes-runner"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("HERMES_TERMINATION_PATH", &term)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let message = std::fs::read_to_string(&term).unwrap_or_default();
        let result = hermes_results::decode(&message).unwrap_or_else(|e| {
            panic!("runner {args:?} wrote no valid result ({e}): {message:?}\n{stderr}")
        });
        Run {
            success: out.status.success(),
            result,
            stderr,
            message,
        }
    }

    pub fn remote_ref(&self, name: &str) -> Option<String> {
        let out = Command::new("git")
            .args(["rev-parse", "--verify", "-q", name])
            .current_dir(&self.remote)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    pub fn remote_refs(&self) -> Vec<String> {
        git(&self.remote, &["for-each-ref", "--format=%(refname)"])
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Pushes a commit changing `file` to the remote's main, from a side clone.
    pub fn move_base(&self, file: &str, content: &str) -> String {
        let side = self.path("side");
        if !side.exists() {
            git(
                self.tmp.path(),
                &["clone", "-q", self.remote.to_str().unwrap(), "side"],
            );
        }
        git(&side, &["pull", "-q", "--ff-only"]);
        std::fs::write(side.join(file), content).unwrap();
        git(&side, &["add", "-A"]);
        git(&side, &["commit", "-q", "-m", "base moved"]);
        git(&side, &["push", "-q", "origin", "main"]);
        git(&side, &["rev-parse", "HEAD"])
    }

    pub fn prepare(&self) -> hermes_results::Prepared {
        let repo = self.repo_dir();
        let r = self.runner(&[
            "prepare",
            "--url",
            &self.url,
            "--base-ref",
            "main",
            "--branch",
            BRANCH,
            "--repo-dir",
            repo.to_str().unwrap(),
            "--credentials-dir",
            self.read_creds.to_str().unwrap(),
            "--task-path",
            "task.md",
            "--task-out",
            self.path("task.md").to_str().unwrap(),
        ]);
        match r.result {
            StepResult::Prepared(p) if r.success => p,
            other => panic!("prepare failed: {other:?}\n{}", r.stderr),
        }
    }

    /// The scripted agent: one commit of its own, one uncommitted change.
    pub fn agent_edits(&self) {
        let repo = self.repo_dir();
        std::fs::write(repo.join("src/greeting.txt"), "hello\n").unwrap();
        git(&repo, &["add", "src/greeting.txt"]);
        git(&repo, &["commit", "-q", "-m", "agent: add greeting"]);
        std::fs::write(repo.join("src/lib.txt"), "one\ntwo\nthree\nfour\n").unwrap();
    }

    pub fn collect(&self, base: &str) -> hermes_results::Collected {
        let repo = self.repo_dir();
        let r = self.runner(&[
            "collect",
            "--repo-dir",
            repo.to_str().unwrap(),
            "--base-commit",
            base,
            "--branch",
            BRANCH,
            "--task-name",
            TASK,
            "--scope",
            "src/**",
        ]);
        match r.result {
            StepResult::Collected(c) if r.success => c,
            other => panic!("collect failed: {other:?}\n{}", r.stderr),
        }
    }

    pub fn context(&self, base: &str, extra: &[&str]) -> Run {
        let repo = self.repo_dir();
        let out = self.path("bundle");
        let _ = std::fs::remove_dir_all(&out);
        let mut args = vec![
            "context",
            "--repo-dir",
            repo.to_str().unwrap(),
            "--base-commit",
            base,
            "--branch",
            BRANCH,
            "--protected",
            ".github/**",
            "--protected",
            "**/CLAUDE.md",
            "--task-file",
            self.path("task.md").to_str().unwrap().to_owned().leak(),
            "--out-dir",
            out.to_str().unwrap().to_owned().leak(),
        ];
        if !extra.contains(&"--max-file-bytes") {
            args.extend(["--max-file-bytes", "100000"]);
        }
        if !extra.contains(&"--scope") {
            args.extend(["--scope", "src/**"]);
        }
        args.extend_from_slice(extra);
        self.runner(&args)
    }

    pub fn verdict(&self, reviewer_output: &str) -> Run {
        let f = self.path("reviewer.json");
        std::fs::write(&f, reviewer_output).unwrap();
        self.runner(&[
            "verdict",
            "--bundle-dir",
            self.path("bundle").to_str().unwrap(),
            "--reviewer-output",
            f.to_str().unwrap(),
        ])
    }

    pub fn publish(&self, mode: &str, base: &str, reviewed: &str, creds: &Path) -> Run {
        let work = self.path("publish-work");
        let _ = std::fs::remove_dir_all(&work);
        self.runner(&[
            "publish",
            "--url",
            &self.url,
            "--base-ref",
            "main",
            "--branch",
            BRANCH,
            "--mode",
            mode,
            "--repo-dir",
            self.repo_dir().to_str().unwrap(),
            "--base-commit",
            base,
            "--reviewed-commit",
            reviewed,
            "--credentials-dir",
            creds.to_str().unwrap(),
            "--work-dir",
            work.to_str().unwrap(),
            "--task-name",
            TASK,
        ])
    }

    /// Files in the canary directory: anything here means planted code ran.
    pub fn canaries(&self) -> Vec<String> {
        std::fs::read_dir(&self.canary)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A shell script that drops a canary named `name` when run.
    pub fn canary_script(&self, name: &str) -> String {
        format!("#!/bin/sh\necho ran > '{}/{name}'\n", self.canary.display())
    }

    pub fn canary_path(&self, name: &str) -> String {
        format!("{}/{name}", self.canary.display())
    }
}

pub const APPROVE: &str = r#"{"verdict":"approve","summary":"Adds a greeting file and a line.","findings":[],"taskFileNotes":"Clear enough."}"#;
