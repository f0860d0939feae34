//! T38 in part: a remote that accepts the connection and then never answers
//! (or answers nothing after the request) fails prepare and publish with
//! `CloneFailed` in about `--network-timeout`, instead of holding the pod to
//! its deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::io::Read as _;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use hermes_results::{FailureReason, StepResult};

/// A loopback listener that reads what it is sent and answers nothing,
/// holding every connection open. Returns its URL.
fn silent_remote() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
    format!("http://127.0.0.1:{port}/o/r.git")
}

fn assert_timed_out(what: &str, r: &Run, took: Duration) {
    let StepResult::Failed(f) = &r.result else {
        panic!("{what}: {:?}\n{}", r.result, r.stderr)
    };
    assert!(!r.success, "{what}");
    assert_eq!(
        f.reason,
        FailureReason::CloneFailed,
        "{what}: {}",
        f.message
    );
    assert!(f.message.contains("timed out"), "{what}: {}", f.message);
    // 2 s a wait; the bound leaves room for a slow machine, far below the
    // phase's deadline (minutes) that held it before.
    assert!(took < Duration::from_secs(30), "{what} took {took:?}");
}

#[test]
fn prepare_and_publish_give_up_on_a_remote_that_never_answers() {
    let w = World::new();
    let url = silent_remote();

    let start = Instant::now();
    let r = w.runner(&[
        "prepare",
        "--url",
        &url,
        "--base-ref",
        "main",
        "--branch",
        BRANCH,
        "--repo-dir",
        w.path("silent-clone").to_str().unwrap(),
        "--credentials-dir",
        w.read_creds.to_str().unwrap(),
        "--network-timeout",
        "2",
    ]);
    assert_timed_out("prepare", &r, start.elapsed());

    // publish: a verified copy of a real change, and a base fetched from
    // the silent remote.
    let p = w.prepare();
    w.agent_edits();
    let c = w.collect(&p.base_commit);
    let verified = w.verify(&p.base_commit, &c.head_commit).unwrap();
    let mut argv = w.publish_argv(
        &url,
        &verified,
        "merge",
        &p.base_commit,
        &c.head_commit,
        &w.push_creds,
    );
    argv.extend(["--network-timeout".to_owned(), "2".to_owned()]);
    let start = Instant::now();
    let r = w.runner(&argv.iter().map(String::as_str).collect::<Vec<_>>());
    assert_timed_out("publish", &r, start.elapsed());
    assert_eq!(w.remote_ref("refs/heads/main"), Some(p.base_commit.clone()));
}
