//! The real Claude Code CLI (pinned, installed by install-claude.sh) against
//! the scripted server, in a contained environment. Skipped when the CLI is
//! not installed, unless `HERMES_E2E=require`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{Contained, assert_scripted_usage, claude, git, repo_from_fixture};
use hermes_model_server::Kind;
use serde_json::Value;

/// Asserts the server saw one probe and the scenario's turns in order, each
/// once, and nothing else.
fn assert_turns_in_order(c: &Contained, scenario: &str, turns: usize) {
    let records = c.server.records();
    let played: Vec<_> = records
        .iter()
        .filter(|r| r.kind == Kind::Turn)
        .map(|r| (r.scenario.clone().unwrap_or_default(), r.turn, r.status))
        .collect();
    let want: Vec<_> = (0..turns)
        .map(|t| (scenario.to_owned(), Some(t), 200))
        .collect();
    assert_eq!(played, want, "{records:#?}");
    for r in &records {
        assert!(
            matches!(r.kind, Kind::Turn | Kind::Probe),
            "unexpected request {r:?}"
        );
    }
}

#[test]
fn implementer_edits_in_scope_runs_the_tests_and_reports_the_scripted_usage() {
    let Some(claude) = claude() else { return };
    let c = Contained::new(None);
    let repo = repo_from_fixture(c.temp.path(), "greeter");
    let task = std::fs::read_to_string(repo.join("task.md")).unwrap();

    let out = c.run(&claude, "implementer-happy", &repo, &task, "Bash");

    assert_eq!(out.code, Some(0), "{}\n{}", out.result, out.stderr);
    assert_eq!(out.result["is_error"], false);
    assert_eq!(
        out.result["result"],
        "src/greet.sh now prints `Hello, NAME!`; the tests pass (sh test.sh)."
    );
    // The Edit tool changed the file, and only that file.
    let greet = std::fs::read_to_string(repo.join("src/greet.sh")).unwrap();
    assert!(greet.contains("echo \"Hello, $name!\""), "{greet}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), " M src/greet.sh\n");
    // The Bash tool ran the tests on the edited file: their output came back
    // to the model as the tool result of turn 2.
    let results: Vec<_> = c
        .server
        .records()
        .into_iter()
        .filter(|r| r.turn == Some(3))
        .flat_map(|r| r.tool_results)
        .collect();
    assert_eq!(
        results,
        vec!["ok - greet Hermes\nok - greet world\nGREETER TESTS PASSED".to_owned()]
    );
    assert_eq!(out.result["permission_denials"], Value::Array(vec![]));
    assert_scripted_usage(&out.result, "implementer-happy");
    assert_turns_in_order(&c, "implementer-happy", 4);
    c.assert_only_base_url_contacted();
}

/// A review bundle: the fixture changed by `change`, its diff in
/// `diff.patch`, the task in `task.md`.
fn bundle(c: &Contained, change: impl FnOnce(&Path)) -> std::path::PathBuf {
    let repo = repo_from_fixture(c.temp.path(), "greeter");
    change(&repo);
    let dir = c.temp.path().join("bundle");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("diff.patch"), git(&repo, &["diff"])).unwrap();
    std::fs::copy(repo.join("task.md"), dir.join("task.md")).unwrap();
    dir
}

/// Checks the verdict object against the schema of
/// runner/src/steps/verdict/instruction.md and returns it.
fn verdict_of(result: &Value) -> Value {
    let text = result["result"].as_str().unwrap();
    let v: Value = serde_json::from_str(text).unwrap();
    let obj = v.as_object().unwrap();
    for k in obj.keys() {
        assert!(
            ["verdict", "summary", "findings", "taskFileNotes"].contains(&k.as_str()),
            "unknown field {k}"
        );
    }
    let summary = v["summary"].as_str().unwrap();
    assert!(!summary.is_empty() && summary.chars().count() <= 1000);
    for f in v["findings"].as_array().unwrap() {
        assert!(["info", "warn", "reject"].contains(&f["severity"].as_str().unwrap()));
        assert!(!f["message"].as_str().unwrap().is_empty());
    }
    assert!(v["taskFileNotes"].as_str().unwrap().chars().count() <= 1000);
    v
}

const REVIEW_PROMPT: &str = "Review the change: read diff.patch and task.md in the working \
directory and answer with the verdict JSON object only.";

#[test]
fn approving_reviewer_reads_the_diff_and_its_result_is_the_verdict_object() {
    let Some(claude) = claude() else { return };
    // The server demands a key: the CLI must send the one it was given.
    let c = Contained::new(Some("sk-hermes-review"));
    let dir = bundle(&c, |repo| {
        let p = repo.join("src/greet.sh");
        let s = std::fs::read_to_string(&p).unwrap();
        std::fs::write(p, s.replace("\"Hello $name\"", "\"Hello, $name!\"")).unwrap();
    });

    let out = c.run(&claude, "reviewer-approve", &dir, REVIEW_PROMPT, "Read");

    assert_eq!(out.code, Some(0), "{}\n{}", out.result, out.stderr);
    let v = verdict_of(&out.result);
    assert_eq!(v["verdict"], "approve");
    assert!(!v["taskFileNotes"].as_str().unwrap().is_empty());
    // The Read tool returned the diff to the model.
    let read: Vec<_> = c
        .server
        .records()
        .into_iter()
        .filter(|r| r.turn == Some(1))
        .flat_map(|r| r.tool_results)
        .collect();
    assert!(
        read.iter().any(|t| t.contains("+echo \"Hello, $name!\"")),
        "{read:?}"
    );
    assert_scripted_usage(&out.result, "reviewer-approve");
    assert_turns_in_order(&c, "reviewer-approve", 2);
    c.assert_only_base_url_contacted();
}

#[test]
fn rejecting_reviewer_result_is_a_verdict_with_a_reject_finding() {
    let Some(claude) = claude() else { return };
    let c = Contained::new(None);
    let dir = bundle(&c, |repo| {
        std::fs::write(repo.join("test.sh"), "#!/bin/sh\nexit 0\n").unwrap();
    });

    let out = c.run(&claude, "reviewer-reject", &dir, REVIEW_PROMPT, "Read");

    assert_eq!(out.code, Some(0), "{}\n{}", out.result, out.stderr);
    let v = verdict_of(&out.result);
    assert_eq!(v["verdict"], "reject");
    assert_eq!(v["findings"][0]["severity"], "reject");
    assert_eq!(v["findings"][0]["path"], "test.sh");
    assert_scripted_usage(&out.result, "reviewer-reject");
    assert_turns_in_order(&c, "reviewer-reject", 2);
    c.assert_only_base_url_contacted();
}

#[test]
fn network_probe_records_each_address_it_tried() {
    let Some(claude) = claude() else { return };
    let c = Contained::new(None);
    let repo = repo_from_fixture(c.temp.path(), "greeter");

    let out = c.run(
        &claude,
        "implementer-network-probe",
        &repo,
        "Check the network, then stop.",
        "Bash",
    );

    assert_eq!(out.code, Some(0), "{}\n{}", out.result, out.stderr);
    let report = std::fs::read_to_string(repo.join("network-probe.txt")).unwrap();
    eprintln!("network-probe.txt:\n{report}");
    let lines: Vec<_> = report.lines().collect();
    assert_eq!(lines.len(), 4, "{report}");
    assert!(lines[0].starts_with("http://169.254.169.254/"), "{report}");
    for l in &lines {
        assert!(
            l.contains(" reachable ")
                || l.contains(" unreachable (curl exit ")
                || l.contains(" unknown (no curl)"),
            "{report}"
        );
    }
    assert_scripted_usage(&out.result, "implementer-network-probe");
    assert_turns_in_order(&c, "implementer-network-probe", 2);
    // curl went around the proxy (`--noproxy '*'`), so the recorder still
    // proves the CLI itself contacted only the base URL.
    c.assert_only_base_url_contacted();
}

#[test]
fn implementer_falls_back_to_plain_replies_when_every_stream_breaks() {
    let Some(claude) = claude() else { return };
    let c = Contained::with_config(None, |config| config.break_streams = true);
    let repo = repo_from_fixture(c.temp.path(), "greeter");
    let task = std::fs::read_to_string(repo.join("task.md")).unwrap();

    let out = c.run(&claude, "implementer-happy", &repo, &task, "Bash");

    assert_eq!(out.code, Some(0), "{}\n{}", out.result, out.stderr);
    assert_eq!(git(&repo, &["status", "--porcelain"]), " M src/greet.sh\n");
    // Each turn: a stream cut after message_start, then the same turn
    // asked for again without streaming.
    let seen: Vec<_> = c
        .server
        .records()
        .into_iter()
        .filter(|r| r.kind == Kind::Turn)
        .map(|r| (r.turn, r.stream, r.broken))
        .collect();
    let want: Vec<_> = (0..4)
        .flat_map(|t| [(Some(t), true, true), (Some(t), false, false)])
        .collect();
    assert_eq!(seen, want);
    // The cost and the per-model usage follow the plain replies' usage...
    let cost = out.result["total_cost_usd"].as_f64().unwrap();
    assert!((cost - common::expected_cost("implementer-happy")).abs() < 1e-9);
    let per_model = &out.result["modelUsage"][common::MODEL];
    assert_eq!(per_model["inputTokens"], 1670);
    assert_eq!(per_model["outputTokens"], 180);
    assert_eq!(per_model["cacheCreationInputTokens"], 3000);
    assert_eq!(per_model["cacheReadInputTokens"], 13100);
    // ...but the top-level `usage` of 2.1.197 counts streamed messages only:
    // after fallbacks it says 0. Read tokens from `modelUsage`.
    assert_eq!(out.result["usage"]["input_tokens"], 0);
    assert_eq!(out.result["usage"]["output_tokens"], 0);
    c.assert_only_base_url_contacted();
}
