//! Test support: a real git smart-HTTP server (`hermes-git-server`: `git
//! http-backend` behind a small tiny_http front with basic auth and a request
//! log), fixtures built with the git CLI (as server and fixture builder only),
//! and a runner invocation that reads back the termination message.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use hermes_results::StepResult;

pub use hermes_git_server::{GitServer, PUSH_USER, READ_USER, git};

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
        let server = GitServer::loopback(&root).unwrap();
        let evil = GitServer::loopback(tmp.path().join("evil-srv")).unwrap();
        let remote = root.join("repo.git");
        hermes_git_server::init_bare(&remote).unwrap();
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
        let mk = |name: &str, user: (&str, &str)| {
            hermes_git_server::write_credentials(&tmp.path().join(name), user).unwrap()
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
        self.runner_env(args, &[])
    }

    /// Runs the runner binary with a clean environment plus `env`.
    pub fn runner_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let (success, stderr, message) = self.exec(args, env);
        let result = hermes_results::decode(&message).unwrap_or_else(|e| {
            panic!("runner {args:?} wrote no valid result ({e}): {message:?}\n{stderr}")
        });
        Run {
            success,
            result,
            stderr,
            message,
        }
    }

    /// Runs the runner binary; its exit status, standard error and
    /// termination message (empty when it wrote none).
    pub fn exec(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let term = self.path(&format!("termination-{n}"));
        let out = Command::new(env!("CARGO_BIN_EXE_hermes-runner"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("HERMES_TERMINATION_PATH", &term)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let message = std::fs::read_to_string(&term).unwrap_or_default();
        (out.status.success(), stderr, message)
    }

    /// `verify` as the publish pod's init container runs it: the volume's
    /// reviewed range into a fresh verified copy at `publish-verified`.
    /// `Err` carries its failure (a result, as the pod reports it).
    pub fn verify(&self, base: &str, reviewed: &str) -> Result<std::path::PathBuf, Box<Run>> {
        let out = self.path("publish-verified");
        let work = self.path("publish-verify-work");
        for d in [&out, &work] {
            let _ = std::fs::remove_dir_all(d);
            std::fs::create_dir_all(d).unwrap();
        }
        let (success, stderr, message) = self.exec(
            &[
                "verify",
                "--repo-dir",
                self.repo_dir().to_str().unwrap(),
                "--base-commit",
                base,
                "--reviewed-commit",
                reviewed,
                "--out-dir",
                out.to_str().unwrap(),
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &[],
        );
        if success {
            assert!(
                message.is_empty(),
                "verify wrote a result on success: {message}"
            );
            return Ok(out);
        }
        let result = hermes_results::decode(&message).unwrap_or_else(|e| {
            panic!("verify failed and wrote no valid result ({e}): {message:?}\n{stderr}")
        });
        Err(Box::new(Run {
            success,
            result,
            stderr,
            message,
        }))
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

    /// The publish pod: `verify`, then (when it passed) `publish` from the
    /// verified copy.
    pub fn publish(&self, mode: &str, base: &str, reviewed: &str, creds: &Path) -> Run {
        match self.verify(base, reviewed) {
            Ok(verified) => self.publish_from(&verified, mode, base, reviewed, creds),
            Err(failed) => *failed,
        }
    }

    /// The pushing container alone, from the verified copy at `verified`.
    pub fn publish_from(
        &self,
        verified: &Path,
        mode: &str,
        base: &str,
        reviewed: &str,
        creds: &Path,
    ) -> Run {
        let argv = self.publish_argv(&self.url, verified, mode, base, reviewed, creds);
        self.runner(&argv.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// `publish`'s command line against `url`, in a fresh `publish-work`.
    pub fn publish_argv(
        &self,
        url: &str,
        verified: &Path,
        mode: &str,
        base: &str,
        reviewed: &str,
        creds: &Path,
    ) -> Vec<String> {
        let work = self.path("publish-work");
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).unwrap();
        [
            "publish",
            "--url",
            url,
            "--base-ref",
            "main",
            "--branch",
            BRANCH,
            "--mode",
            mode,
            "--verified-dir",
            verified.to_str().unwrap(),
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
        ]
        .map(str::to_owned)
        .to_vec()
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
