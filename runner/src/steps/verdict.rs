//! `verdict`: turn the reviewer's output into the decision, strictly.
//!
//! The reviewer must answer with one JSON object of the schema in
//! `verdict/instruction.md` ([`ReviewerVerdict`]); its CLI may wrap it in a
//! Claude Code result object (`{"type":"result","result":"..."}`), inside
//! which the verdict is the whole text or one ```json fenced block. Output
//! that does not parse rejects; an error the CLI reports rejects; any
//! reject-severity finding (policy, from the bundle, or the reviewer's own)
//! rejects whatever the model said. The reviewed commit is the head that
//! `context` recomputed.

use std::path::Path;

use hermes_results::{
    AgentReport, ContextReport, Finding, FindingSource, Severity, Verdict, VerdictReport,
};
use serde::Deserialize;

use crate::cli::VerdictArgs;
use crate::{Error, Result, agent};

/// The instruction given to the reviewer (`hermes-runner reviewer-instruction`).
pub const INSTRUCTION: &str = include_str!("verdict/instruction.md");

/// Largest reviewer output read.
const MAX_OUTPUT: u64 = 4 << 20;
/// Most findings the reviewer may give.
const MAX_REVIEWER_FINDINGS: usize = 40;
/// Longest summary, notes or message, in characters.
const MAX_TEXT_CHARS: usize = 1000;

/// The verdict the reviewer must produce.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewerVerdict {
    /// approve or reject.
    pub verdict: Verdict,
    /// What the change does and why it is (not) safe.
    pub summary: String,
    /// What the reviewer found.
    #[serde(default)]
    pub findings: Vec<ReviewerFinding>,
    /// Notes on the task file.
    #[serde(default)]
    pub task_file_notes: Option<String>,
}

/// One reviewer finding.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewerFinding {
    /// info, warn or reject.
    pub severity: Severity,
    /// The path concerned.
    #[serde(default)]
    pub path: Option<String>,
    /// What was found.
    pub message: String,
}

/// Why reviewer output was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON of the schema.
    #[error("reviewer output is not a verdict object: {0}")]
    Schema(String),
    /// No verdict found in the CLI's result text.
    #[error("reviewer output holds no single verdict object")]
    NotFound,
    /// A value is out of bounds.
    #[error("reviewer verdict field {0} is out of bounds")]
    Bounds(&'static str),
}

/// Extracts the verdict from the reviewer's output, strictly.
pub fn parse_reviewer_output(
    text: &str,
) -> std::result::Result<(ReviewerVerdict, Option<serde_json::Value>), ParseError> {
    let outer = agent::result_object(text);
    let (inner, cli) = match &outer {
        Some(v) if v.get("type").and_then(serde_json::Value::as_str) == Some("result") => {
            let r = v
                .get("result")
                .and_then(serde_json::Value::as_str)
                .ok_or(ParseError::NotFound)?;
            (r.to_owned(), Some(v.clone()))
        }
        _ => (text.to_owned(), None),
    };
    let json = extract(&inner).ok_or(ParseError::NotFound)?;
    let verdict: ReviewerVerdict =
        serde_json::from_str(json).map_err(|e| ParseError::Schema(e.to_string()))?;
    check(&verdict)?;
    Ok((verdict, cli))
}

/// The verdict JSON in a text: the whole trimmed text, or the content of
/// exactly one ```json (or bare ```) fenced block.
fn extract(text: &str) -> Option<&str> {
    let t = text.trim();
    if t.starts_with('{') && t.ends_with('}') {
        return Some(t);
    }
    let mut blocks = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        let body_start = after.find('\n')?;
        let lang = after[..body_start].trim();
        let body = &after[body_start + 1..];
        let end = body.find("```")?;
        if lang.is_empty() || lang.eq_ignore_ascii_case("json") {
            blocks.push(body[..end].trim());
        }
        rest = &body[end + 3..];
    }
    match blocks.as_slice() {
        [one] if one.starts_with('{') => Some(one),
        _ => None,
    }
}

fn check(v: &ReviewerVerdict) -> std::result::Result<(), ParseError> {
    let text_ok = |s: &str| s.chars().count() <= MAX_TEXT_CHARS;
    if v.summary.trim().is_empty() || !text_ok(&v.summary) {
        return Err(ParseError::Bounds("summary"));
    }
    if v.findings.len() > MAX_REVIEWER_FINDINGS {
        return Err(ParseError::Bounds("findings"));
    }
    for f in &v.findings {
        if f.message.trim().is_empty() || !text_ok(&f.message) {
            return Err(ParseError::Bounds("findings.message"));
        }
        if f.path
            .as_deref()
            .is_some_and(|p| p.len() > hermes_results::MAX_PATH_BYTES)
        {
            return Err(ParseError::Bounds("findings.path"));
        }
    }
    if v.task_file_notes.as_deref().is_some_and(|n| !text_ok(n)) {
        return Err(ParseError::Bounds("taskFileNotes"));
    }
    Ok(())
}

fn read_context(bundle: &Path) -> Result<ContextReport> {
    let path = bundle.join("context.json");
    let text = agent::read_bounded(&path, 16 << 20).ok_or_else(|| Error::ReadInput {
        what: "bundle context.json",
        path: path.clone(),
        source: std::io::Error::other("missing or too large"),
    })?;
    serde_json::from_str(&text).map_err(|e| Error::ReadInput {
        what: "bundle context.json",
        path,
        source: std::io::Error::other(e.to_string()),
    })
}

/// Runs `verdict`: reads the bundle's context and the reviewer's output,
/// then [`decide`]s.
pub fn run(args: &VerdictArgs) -> Result<VerdictReport> {
    let context = read_context(&args.bundle_dir)?;
    let output = agent::read_bounded(&args.reviewer_output, MAX_OUTPUT);
    Ok(decide(&context, output.as_deref()))
}

/// The decision, from the bundle's context report and the reviewer's output
/// (`None` when there was none): pure, so that it can be fuzzed. Approves
/// only when the output holds a valid verdict object that approves, the
/// reviewer CLI reported no error, and no finding (policy or reviewer) has
/// severity `reject`.
pub fn decide(context: &ContextReport, output: Option<&str>) -> VerdictReport {
    let mut findings: Vec<Finding> = context.findings.clone();
    let (mut verdict, summary, notes, reviewer) = match output.map(parse_reviewer_output) {
        Some(Ok((v, cli))) => {
            findings.extend(v.findings.iter().map(|f| Finding {
                severity: f.severity,
                source: FindingSource::Reviewer,
                code: "reviewer".to_owned(),
                path: f.path.clone(),
                message: f.message.clone(),
            }));
            let report: Option<AgentReport> = cli.as_ref().map(|c| agent::report_from(c, 0));
            (v.verdict, v.summary, v.task_file_notes, report)
        }
        Some(Err(e)) => (Verdict::Reject, format!("rejected: {e}"), None, None),
        None => (
            Verdict::Reject,
            "rejected: the reviewer produced no output".to_owned(),
            None,
            None,
        ),
    };
    if reviewer.as_ref().is_some_and(|r| r.is_error) {
        verdict = Verdict::Reject;
        findings.push(Finding {
            severity: Severity::Reject,
            source: FindingSource::Policy,
            code: "reviewerError".to_owned(),
            path: None,
            message: "the reviewer CLI reported an error".to_owned(),
        });
    }
    if findings.iter().any(|f| f.severity == Severity::Reject) {
        verdict = Verdict::Reject;
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    VerdictReport {
        verdict,
        reviewed_commit: context.head_commit.clone(),
        summary,
        findings,
        task_file_notes: notes,
        reviewer,
        truncated: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"verdict":"approve","summary":"Adds a greeting.","findings":[],"taskFileNotes":"fine"}"#;

    #[test]
    fn verdict_parses_bare_object() {
        let (v, cli) = parse_reviewer_output(GOOD).unwrap();
        assert_eq!(v.verdict, Verdict::Approve);
        assert!(cli.is_none());
    }

    #[test]
    fn verdict_parses_claude_result_with_json_fence() {
        let inner = format!("```json\n{GOOD}\n```");
        let outer = serde_json::json!({"type":"result","subtype":"success","is_error":false,"num_turns":2,"result":inner});
        let (v, cli) = parse_reviewer_output(&outer.to_string()).unwrap();
        assert_eq!(v.summary, "Adds a greeting.");
        assert!(cli.is_some());
    }

    #[test]
    fn verdict_refuses_prose_unknown_fields_and_two_blocks() {
        assert!(parse_reviewer_output("Looks good to me! approve").is_err());
        assert!(parse_reviewer_output(r#"{"verdict":"approve","summary":"x","extra":1}"#).is_err());
        assert!(parse_reviewer_output(r#"{"verdict":"yes","summary":"x"}"#).is_err());
        let two = format!("```json\n{GOOD}\n```\n```json\n{GOOD}\n```");
        assert!(parse_reviewer_output(&two).is_err());
        assert!(parse_reviewer_output(r#"{"verdict":"approve","summary":""}"#).is_err());
    }

    #[test]
    fn verdict_of_output_with_control_characters_encodes_to_a_readable_result() {
        // Fuzz finding (verdict_parse): the parse error echoes a field name
        // holding a DEL; the summary carried it into an undecodable result.
        let context = ContextReport {
            base_commit: "89abcdef0123456789abcdef0123456789abcdef".into(),
            head_commit: "0123456789abcdef0123456789abcdef01234567".into(),
            diff: hermes_results::DiffStats::default(),
            out_of_scope: vec![],
            findings: vec![],
            truncated: false,
        };
        let approve = "{\"verdict\":\"approve\",\"summary\":\"ok\\r\\nfine\"}";
        for output in ["{\"vo\u{7f}e\":1,\"summary\":\"x\"}", approve] {
            let report = decide(&context, Some(output));
            let message =
                hermes_results::encode_fitting(hermes_results::StepResult::Verdict(report))
                    .unwrap();
            assert!(hermes_results::decode(&message).is_ok(), "{message}");
        }
        assert_eq!(decide(&context, Some(approve)).verdict, Verdict::Approve);
    }
}
