//! The reviewer verdict parser (`steps::verdict::parse_reviewer_output`) and
//! the decision built on it (`steps::verdict::decide`), on arbitrary reviewer
//! output: the reviewer is a model that read attacker-written files.
//!
//! Invariants: nothing panics; the decision approves only when the output
//! holds a valid approving verdict object (checked by an independent oracle
//! below that follows the documented schema, not the parser's code), the CLI
//! reported no error, and no finding rejects; a reject-severity policy
//! finding in the bundle always rejects; and the result the runner would write
//! for the decision (`encode_fitting`) is one the operator's `decode` accepts.

#![no_main]

use hermes_results::{
    ContextReport, DiffStats, Finding, FindingSource, Severity, StepResult, Verdict,
};
use hermes_runner::steps::verdict::{decide, parse_reviewer_output};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const HEAD: &str = "0123456789abcdef0123456789abcdef01234567";

fn context(findings: Vec<Finding>) -> ContextReport {
    ContextReport {
        base_commit: "89abcdef0123456789abcdef0123456789abcdef".to_owned(),
        head_commit: HEAD.to_owned(),
        diff: DiffStats::default(),
        out_of_scope: Vec::new(),
        findings,
        truncated: false,
    }
}

fuzz_target!(|data: &[u8]| {
    // `verdict` reads the output file lossily, as here.
    let text = String::from_utf8_lossy(data);
    let parsed = parse_reviewer_output(&text);

    let report = decide(&context(Vec::new()), Some(&text));
    assert_eq!(report.reviewed_commit, HEAD);
    if report.verdict == Verdict::Approve {
        let Ok((v, _)) = &parsed else {
            panic!("approved output the parser refused: {parsed:?}");
        };
        assert_eq!(v.verdict, Verdict::Approve);
        assert!(
            oracle::holds_approving_verdict(&text),
            "approved output that holds no valid approving verdict object"
        );
        assert!(
            !report
                .findings
                .iter()
                .any(|f| f.severity == Severity::Reject)
        );
        assert!(!report.reviewer.as_ref().is_some_and(|r| r.is_error));
    }

    // Whatever the reviewer says, a reject policy finding rejects.
    let policy = Finding {
        severity: Severity::Reject,
        source: FindingSource::Policy,
        code: "outOfScope".to_owned(),
        path: Some("Makefile".to_owned()),
        message: "outside the scope".to_owned(),
    };
    let vetoed = decide(&context(vec![policy]), Some(&text));
    assert_eq!(vetoed.verdict, Verdict::Reject);

    // The termination message the runner would write must be readable by the
    // operator, or a reviewer could turn any verdict into a broken result.
    let message = match hermes_results::encode_fitting(StepResult::Verdict(report)) {
        Ok(m) => m,
        Err(e) => panic!("verdict result does not encode: {e}"),
    };
    if let Err(e) = hermes_results::decode(&message) {
        panic!("the operator cannot decode the verdict result ({e}): {message}");
    }
});

/// The schema of `verdict/instruction.md`, checked on `serde_json::Value`
/// without the parser's types or code.
mod oracle {
    use super::{Map, Value};

    /// True when some JSON object in `text` (or in the `result` string of a
    /// CLI result object, whole or on one line) is a valid approving verdict.
    pub fn holds_approving_verdict(text: &str) -> bool {
        let mut candidates = vec![text.to_owned()];
        let wrappers = std::iter::once(text.trim()).chain(text.lines().map(str::trim));
        for w in wrappers {
            if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(w)
                && let Some(Value::String(r)) = o.get("result")
            {
                candidates.push(r.clone());
            }
        }
        candidates
            .iter()
            .any(|c| objects_in(c).any(|o| approving(&o)))
    }

    /// Every JSON object that starts at some `{` of the text.
    fn objects_in(text: &str) -> impl Iterator<Item = Map<String, Value>> + '_ {
        text.match_indices('{').filter_map(|(i, _)| {
            let mut stream = serde_json::Deserializer::from_str(&text[i..]).into_iter::<Value>();
            match stream.next() {
                Some(Ok(Value::Object(o))) => Some(o),
                _ => None,
            }
        })
    }

    fn text_ok(v: &Value, nonblank: bool) -> bool {
        matches!(v, Value::String(s) if s.chars().count() <= 1000 && (!nonblank || !s.trim().is_empty()))
    }

    fn approving(o: &Map<String, Value>) -> bool {
        let known = ["verdict", "summary", "findings", "taskFileNotes"];
        o.keys().all(|k| known.contains(&k.as_str()))
            && o.get("verdict") == Some(&Value::String("approve".to_owned()))
            && o.get("summary").is_some_and(|s| text_ok(s, true))
            && o.get("taskFileNotes")
                .is_none_or(|n| n.is_null() || text_ok(n, false))
            && match o.get("findings") {
                None => true,
                Some(Value::Array(list)) => list.len() <= 40 && list.iter().all(finding),
                Some(_) => false,
            }
    }

    fn finding(f: &Value) -> bool {
        let Value::Object(f) = f else { return false };
        let known = ["severity", "path", "message"];
        f.keys().all(|k| known.contains(&k.as_str()))
            && matches!(
                f.get("severity").and_then(Value::as_str),
                Some("info" | "warn")
            )
            && f.get("message").is_some_and(|m| text_ok(m, true))
            && f.get("path")
                .is_none_or(|p| p.is_null() || matches!(p, Value::String(s) if s.len() <= 512))
    }
}
