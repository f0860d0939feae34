use super::*;
use crate::*;

const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";
const BASE: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn finding(i: usize, severity: Severity) -> Finding {
    Finding {
        severity,
        source: FindingSource::Policy,
        code: "outOfScope".into(),
        path: Some(format!("vendor/lib{i}/very/long/path/name/file.rs")),
        message: format!("vendor/lib{i} is outside the task's scope"),
    }
}

fn context(n: usize) -> StepResult {
    StepResult::Context(ContextReport {
        base_commit: BASE.into(),
        head_commit: HEAD.into(),
        diff: DiffStats {
            files: 3,
            insertions: 10,
            deletions: 2,
        },
        out_of_scope: (0..n).map(|i| format!("vendor/lib{i}/file.rs")).collect(),
        findings: (0..n)
            .map(|i| {
                finding(
                    i,
                    if i == n / 2 {
                        Severity::Reject
                    } else {
                        Severity::Warn
                    },
                )
            })
            .collect(),
        truncated: false,
    })
}

#[test]
fn every_result_round_trips() {
    let results = [
        StepResult::Prepared(Prepared {
            base_commit: BASE.into(),
            branch: "hermes/t".into(),
            task_file_sha256: Some("ab".repeat(32)),
        }),
        StepResult::Collected(Collected {
            head_commit: HEAD.into(),
            commits: 2,
            diff: DiffStats {
                files: 1,
                insertions: 4,
                deletions: 0,
            },
            out_of_scope: vec![],
            agent: Some(AgentReport {
                exit_code: 0,
                turns: 3,
                input_tokens: 1200,
                output_tokens: 300,
                cost_usd: Some("0.0123".into()),
                version: Some("2.1.197".into()),
                ..AgentReport::default()
            }),
            truncated: false,
        }),
        context(3),
        StepResult::Verdict(VerdictReport {
            verdict: Verdict::Approve,
            reviewed_commit: HEAD.into(),
            summary: "Adds the flag and a test.".into(),
            findings: vec![],
            task_file_notes: Some("The task did not say which help text to use.".into()),
            reviewer: None,
            truncated: false,
        }),
        StepResult::Published(Published {
            mode: PublishMode::Merge,
            merge_commit: Some(HEAD.into()),
            pushed: false,
            push_error: Some("remote refused: protected branch".into()),
        }),
        StepResult::Failed(Failure {
            step: Step::Publish,
            reason: FailureReason::MergeConflict,
            message: "conflict in src/lib.rs".into(),
        }),
    ];
    for r in results {
        let text = encode(&r).expect("fits");
        assert!(text.starts_with("{\"v\":1,"), "{text}");
        assert_eq!(decode(&text), Ok(r));
    }
}

#[test]
fn empty_message_is_an_error_not_a_default() {
    assert_eq!(decode(""), Err(Error::Empty));
    assert_eq!(decode(" \n"), Err(Error::Empty));
}

#[test]
fn oversized_message_is_refused_before_parsing() {
    let big = format!("{{\"v\":1,\"pad\":\"{}\"}}", "x".repeat(MAX_MESSAGE_BYTES));
    assert!(matches!(decode(&big), Err(Error::TooLarge { .. })));
}

#[test]
fn other_schema_versions_are_refused() {
    let text = encode(&context(1))
        .expect("fits")
        .replacen("\"v\":1", "\"v\":2", 1);
    assert_eq!(decode(&text), Err(Error::UnsupportedVersion { found: 2 }));
    assert!(matches!(
        decode("{\"result\":{}}"),
        Err(Error::Malformed(_))
    ));
}

#[test]
fn unknown_fields_are_refused() {
    let text = encode(&context(1)).expect("fits");
    let text = text.replacen("\"diff\"", "\"approvedBy\":\"me\",\"diff\"", 1);
    assert!(text.contains("approvedBy"));
    assert!(matches!(decode(&text), Err(Error::Malformed(_))), "{text}");
}

#[test]
fn malformed_values_are_refused() {
    let bad_commit = encode(&context(1)).expect("fits").replace(HEAD, "HEAD");
    assert_eq!(
        decode(&bad_commit),
        Err(Error::Invalid {
            field: "headCommit",
            problem: "not a full commit id"
        })
    );
    let short = encode(&context(1))
        .expect("fits")
        .replace(HEAD, &HEAD[..12]);
    assert!(matches!(decode(&short), Err(Error::Invalid { .. })));
    let control = StepResult::Failed(Failure {
        step: Step::Prepare,
        reason: FailureReason::Internal,
        message: "a\u{1b}[31mred".into(),
    });
    let text = encode(&control).expect("fits");
    assert!(matches!(
        decode(&text),
        Err(Error::Invalid {
            field: "message",
            ..
        })
    ));
    assert!(matches!(decode("not json"), Err(Error::Malformed(_))));
}

#[test]
fn a_push_error_with_a_successful_push_is_inconsistent() {
    let r = StepResult::Published(Published {
        mode: PublishMode::Branch,
        merge_commit: None,
        pushed: true,
        push_error: Some("x".into()),
    });
    assert!(matches!(
        decode(&encode(&r).expect("fits")),
        Err(Error::Invalid {
            field: "pushError",
            ..
        })
    ));
}

#[test]
fn encode_refuses_what_does_not_fit() {
    assert!(matches!(encode(&context(200)), Err(Error::TooLarge { .. })));
}

#[test]
fn encode_fitting_drops_entries_keeps_the_most_severe_and_marks_truncation() {
    let text = encode_fitting(context(200)).expect("fits after dropping");
    assert!(text.len() <= MAX_MESSAGE_BYTES);
    let StepResult::Context(c) = decode(&text).expect("parses") else {
        panic!("a context report")
    };
    assert!(c.truncated);
    assert!(!c.findings.is_empty());
    assert_eq!(
        c.findings[0].severity,
        Severity::Reject,
        "the reject finding survives the cut"
    );
    assert_eq!(c.head_commit, HEAD);
}

#[test]
fn encode_fitting_cuts_long_texts_on_character_boundaries() {
    let r = StepResult::Verdict(VerdictReport {
        verdict: Verdict::Reject,
        reviewed_commit: HEAD.into(),
        summary: "é".repeat(3000),
        findings: vec![],
        task_file_notes: None,
        reviewer: None,
        truncated: false,
    });
    let text = encode_fitting(r).expect("fits");
    let StepResult::Verdict(v) = decode(&text).expect("parses") else {
        panic!("a verdict")
    };
    assert!(v.truncated);
    assert!(v.summary.len() <= MAX_TEXT_BYTES && v.summary.chars().all(|c| c == 'é'));
    assert_eq!(v.verdict, Verdict::Reject);
}

#[test]
fn encode_fitting_replaces_control_characters_so_the_message_decodes() {
    // Found by the verdict fuzz target: a reviewer's text (here a DEL, a CR
    // and a C1 control) made the runner write a result the operator refuses.
    let r = StepResult::Verdict(VerdictReport {
        verdict: Verdict::Approve,
        reviewed_commit: HEAD.into(),
        summary: "line one\r\nline\u{7f}two\u{85}\tend".into(),
        findings: vec![Finding {
            severity: Severity::Info,
            source: FindingSource::Reviewer,
            code: "reviewer".into(),
            path: Some("src/\u{1b}[31m.rs".into()),
            message: "bell\u{7}".into(),
        }],
        task_file_notes: Some("\u{0}".into()),
        reviewer: None,
        truncated: false,
    });
    assert!(encode(&r).is_ok_and(|t| decode(&t).is_err()));
    let StepResult::Verdict(v) = decode(&encode_fitting(r).expect("fits")).expect("decodes") else {
        panic!("a verdict")
    };
    assert_eq!(v.summary, "line one \nline two \tend");
    assert_eq!(v.findings[0].path.as_deref(), Some("src/ [31m.rs"));
    assert_eq!(v.findings[0].message, "bell ");
    assert_eq!(v.task_file_notes.as_deref(), Some(" "));
    assert!(!v.truncated, "replacing is not cutting");
}

/// A key planted in every free-form field a pod reports (file names, the
/// reviewer's words, the remote's error, the agent's version) reaches no
/// reader of the decoded result; the rest of each text stays.
#[test]
fn a_key_planted_in_any_free_form_field_is_redacted_on_decode() {
    const KEY: &str = "sk-ant-api03-Zq3vXw9Lm2Kp7Rt4Ys1Hu6Jb8Nc0Df5Gh2Aa9Bb7Cc";
    let planted = |what: &str| format!("{what} {KEY} end");
    let hostile_finding = Finding {
        severity: Severity::Warn,
        source: FindingSource::Reviewer,
        code: KEY.into(),
        path: Some(format!("src/{KEY}.txt")),
        message: planted("message"),
    };
    let agent = AgentReport {
        version: Some(KEY.into()),
        cost_usd: Some("0.5".into()),
        turns: 7,
        ..AgentReport::default()
    };
    let results = [
        StepResult::Prepared(Prepared {
            base_commit: BASE.into(),
            branch: format!("hermes/{KEY}"),
            task_file_sha256: None,
        }),
        StepResult::Collected(Collected {
            head_commit: HEAD.into(),
            commits: 1,
            diff: DiffStats::default(),
            out_of_scope: vec![format!("{KEY}.env")],
            agent: Some(agent.clone()),
            truncated: false,
        }),
        StepResult::Context(ContextReport {
            base_commit: BASE.into(),
            head_commit: HEAD.into(),
            diff: DiffStats::default(),
            out_of_scope: vec![format!("docs/{KEY}")],
            findings: vec![hostile_finding.clone()],
            truncated: false,
        }),
        StepResult::Verdict(VerdictReport {
            verdict: Verdict::Approve,
            reviewed_commit: HEAD.into(),
            summary: planted("summary"),
            findings: vec![hostile_finding],
            task_file_notes: Some(planted("notes")),
            reviewer: Some(agent),
            truncated: false,
        }),
        StepResult::Published(Published {
            mode: PublishMode::Merge,
            merge_commit: None,
            pushed: false,
            push_error: Some(planted("remote said")),
        }),
        StepResult::Failed(Failure {
            step: Step::Publish,
            reason: FailureReason::InvalidInput,
            message: planted("failed"),
        }),
    ];
    for r in results {
        let decoded = decode(&encode(&r).unwrap()).unwrap();
        let text = serde_json::to_string(&decoded).unwrap();
        assert!(!text.contains(KEY), "{text}");
        assert!(text.contains(crate::secrets::REDACTED), "{text}");
        // The agent's report with a key for a version is ignored whole.
        let agents = match &decoded {
            StepResult::Collected(c) => vec![c.agent.clone()],
            StepResult::Verdict(v) => vec![v.reviewer.clone()],
            _ => vec![],
        };
        for a in agents.into_iter().flatten() {
            assert_eq!(a.version, None);
            assert_eq!(a.cost_usd, None);
            assert!(a.ignored.is_some());
        }
    }
}

/// An agent's cost that is not an amount no longer fails the step: the
/// report is ignored, and why is kept for the operator's warning.
#[test]
fn an_agent_report_out_of_form_is_ignored_not_fatal() {
    let collected = |version: &str, cost: &str| {
        StepResult::Collected(Collected {
            head_commit: HEAD.into(),
            commits: 1,
            diff: DiffStats::default(),
            out_of_scope: vec![],
            agent: Some(AgentReport {
                version: Some(version.into()),
                cost_usd: Some(cost.into()),
                ..AgentReport::default()
            }),
            truncated: false,
        })
    };
    let agent_of = |r: StepResult| match decode(&encode(&r).unwrap()).unwrap() {
        StepResult::Collected(c) => c.agent.unwrap(),
        _ => unreachable!(),
    };
    let ok = agent_of(collected("2.1.197 (Claude Code)", "0.0123"));
    assert_eq!(ok.ignored, None);
    assert_eq!(ok.version.as_deref(), Some("2.1.197 (Claude Code)"));
    for (version, cost) in [
        ("2.1.197", "1e9"),
        ("2.1.197", "-1"),
        ("$(curl evil)", "0.1"),
        ("2.1.197; see http://x", "0.1"),
        ("", "0.1"),
    ] {
        let a = agent_of(collected(version, cost));
        assert!(a.ignored.is_some(), "{version:?} {cost:?}");
        assert_eq!((a.version, a.cost_usd), (None, None));
    }
}

/// What the pod writes is redacted too: the termination message is also in
/// the pod's status.
#[test]
fn encode_fitting_redacts_before_the_message_leaves_the_pod() {
    const KEY: &str = "AKIAQ3EGRMSW7LXEXAMP";
    let r = StepResult::Failed(Failure {
        step: Step::Publish,
        reason: FailureReason::InvalidInput,
        message: format!("the key {KEY} was refused"),
    });
    let text = encode_fitting(r).unwrap();
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("the key [redacted] was refused"), "{text}");
}

/// An ignored report is a fixed point like every decoded result: it encodes
/// with why it was ignored and decodes to itself (the fuzz target's
/// invariant; its first crash was this case).
#[test]
fn an_ignored_report_round_trips_to_itself() {
    let r = StepResult::Collected(Collected {
        head_commit: HEAD.into(),
        commits: 2,
        diff: DiffStats::default(),
        out_of_scope: vec!["Makefile".into()],
        agent: Some(AgentReport {
            cost_usd: Some("1e9".into()),
            version: Some("2.1.197".into()),
            turns: 7,
            ..AgentReport::default()
        }),
        truncated: false,
    });
    let once = decode(&encode(&r).unwrap()).unwrap();
    let again = encode(&once).unwrap();
    let twice = decode(&again).unwrap();
    assert_eq!(twice, once);
    assert_eq!(encode(&twice).unwrap(), again);
    let StepResult::Collected(c) = twice else {
        unreachable!()
    };
    let a = c.agent.unwrap();
    assert_eq!(a.ignored, Some(Ignored::CostNotAnAmount));
    assert_eq!((a.version, a.cost_usd), (None, None));
}
