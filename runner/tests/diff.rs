//! `hermes-runner diff` as `kubectl hermes diff` runs it: the patch alone on
//! standard output, nothing on standard error; a failure says why on
//! standard error and in the termination message, and prints no patch.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
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
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn runner(args: &[&str], termination: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_hermes-runner"))
        .args(args)
        .env_clear()
        .env("HERMES_TERMINATION_PATH", termination)
        .output()
        .unwrap()
}

#[test]
fn diff_prints_the_same_patch_as_git_and_nothing_else() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("volume/repo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("src/a.txt"), "one\ntwo\nthree\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "base"]);
    let base = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("src/a.txt"), "one\n2\nthree\n").unwrap();
    std::fs::write(repo.join("src/b.txt"), "bee\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "change"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // A planted hook and config: never run, never read.
    std::fs::write(
        repo.join(".git/hooks/post-checkout"),
        "#!/bin/sh\ntouch /tmp/pwned\n",
    )
    .unwrap();
    let term = tmp.path().join("termination");
    let scratch = tmp.path().join("scratch");
    let out = runner(
        &[
            "diff",
            "--repo-dir",
            repo.to_str().unwrap(),
            "--base-commit",
            &base,
            "--commit",
            &head,
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        &term,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch = String::from_utf8(out.stdout).unwrap();
    let expected = git(
        &repo,
        &["diff", "--no-color", "--no-ext-diff", &base, &head],
    );
    // The same hunks as git's own diff (index line abbreviations may differ).
    let body = |s: &str| -> Vec<String> {
        s.lines()
            .filter(|l| !l.starts_with("index "))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(body(&patch), body(&expected), "{patch}");
    assert!(!term.exists(), "no termination message on success");

    // A commit that is not in the volume: an error, no patch.
    let out = runner(
        &[
            "diff",
            "--repo-dir",
            repo.to_str().unwrap(),
            "--base-commit",
            &base,
            "--commit",
            &"0".repeat(40),
            "--scratch-dir",
            scratch.to_str().unwrap(),
        ],
        &term,
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let message = std::fs::read_to_string(&term).unwrap();
    assert!(message.contains("not in the volume's objects"), "{message}");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&message));
}
