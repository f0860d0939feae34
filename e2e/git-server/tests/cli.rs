//! The binary: password files, the request log on stderr (no credentials),
//! clone and push, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hermes_git_server::{git, init_bare, try_git, with_userinfo};

const READ: (&str, &str) = ("ci-reader", "file-read-pw-1");
const PUSH: (&str, &str) = ("ci-pusher", "file-push-pw-2");

struct Server {
    child: Child,
    url: String,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Server {
    fn start(dir: &std::path::Path) -> Self {
        std::fs::write(dir.join("read-pw"), format!("{}\n", READ.1)).unwrap();
        std::fs::write(dir.join("push-pw"), PUSH.1).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hermes-git-server"))
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(dir.join("srv"))
            .args(["--read-user", READ.0, "--read-password-file"])
            .arg(dir.join("read-pw"))
            .args(["--push-user", PUSH.0, "--push-password-file"])
            .arg(dir.join("push-pw"))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let addr = first
            .split("listening on http://")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("{first}"))
            .to_owned();
        Self {
            child,
            url: format!("http://{addr}/repo.git"),
            stderr: rx,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serves_with_users_from_files_logs_without_secrets_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let mut s = Server::start(t);
    let remote = t.join("srv/repo.git");
    init_bare(&remote).unwrap();

    let clone = t.join("clone");
    git(
        t,
        &[
            "clone",
            "-q",
            &with_userinfo(&s.url, READ),
            clone.to_str().unwrap(),
        ],
    );
    std::fs::write(clone.join("a.txt"), "a\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "a"]);
    assert!(
        try_git(
            &clone,
            &[
                "push",
                "-q",
                &with_userinfo(&s.url, READ),
                "HEAD:refs/heads/main"
            ]
        )
        .is_err()
    );
    git(
        &clone,
        &[
            "push",
            "-q",
            &with_userinfo(&s.url, PUSH),
            "HEAD:refs/heads/main",
        ],
    );
    assert_eq!(
        git(&remote, &["rev-parse", "main"]),
        git(&clone, &["rev-parse", "HEAD"])
    );

    std::thread::sleep(Duration::from_millis(200));
    let lines = s.lines();
    let log = lines.join("\n");
    assert!(
        log.contains(&format!(
            "POST /repo.git/git-receive-pack user={} auth=yes status=200",
            PUSH.0
        )),
        "{log}"
    );
    assert!(log.contains("status=403"), "{log}");
    assert!(log.contains("user=- auth=no status=401"), "{log}");
    for secret in [READ.1, PUSH.1] {
        assert!(!log.contains(secret), "{log}");
    }
    assert!(!log.to_ascii_lowercase().contains("authorization"), "{log}");
    assert!(!log.contains("Basic "), "{log}");

    Command::new("kill")
        .args(["-TERM", &s.child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    std::thread::sleep(Duration::from_millis(100));
    assert!(s.lines().join("\n").contains("SIGTERM"));
}

#[test]
fn refuses_missing_or_empty_password_files() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    std::fs::write(t.join("empty"), "\n").unwrap();
    std::fs::write(t.join("pw"), "x\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_hermes-git-server");
    let run = |args: &[&str]| {
        Command::new(bin)
            .args(["--listen", "127.0.0.1:0", "--root"])
            .arg(t.join("srv"))
            .args(args)
            .current_dir(t)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--read-password-file",
        "empty",
        "--push-password-file",
        "pw",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no password"));
    let out = run(&[
        "--read-password-file",
        "missing",
        "--push-password-file",
        "pw",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = run(&["--push-password-file", "pw"]);
    assert!(!out.status.success());
    // A password is never a flag.
    let out = run(&["--read-password", "x", "--push-password-file", "pw"]);
    assert!(!out.status.success());
}
