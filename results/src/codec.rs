//! Encoding in the pod, decoding in the operator.

use crate::{
    Envelope, Error, Finding, MAX_MESSAGE_BYTES, MAX_PATH_BYTES, MAX_TEXT_BYTES, StepResult,
    VERSION,
};

/// Most findings a result may carry.
pub const MAX_FINDINGS: usize = 50;
/// Most paths a list of paths may carry.
pub const MAX_PATHS: usize = 100;

/// Serializes a result; fails with [`Error::TooLarge`] when it would not fit
/// in a termination message.
pub fn encode(result: &StepResult) -> Result<String, Error> {
    let envelope = Envelope {
        v: VERSION,
        result: result.clone(),
    };
    let text = serde_json::to_string(&envelope).map_err(|e| Error::Serialize(e.to_string()))?;
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge { bytes: text.len() });
    }
    Ok(text)
}

/// Serializes a result, first replacing control characters in texts (but
/// newline and tab) with spaces and cutting texts to their bounds, then
/// dropping list entries from the end (marking the result `truncated`) until
/// it fits. What it returns, [`decode`] accepts as far as texts go: a text
/// that comes from outside (a reviewer's summary, a path) cannot make the
/// message unreadable.
pub fn encode_fitting(mut result: StepResult) -> Result<String, Error> {
    // Redacted here too: the termination message is also in the pod's
    // status, which whoever reads pods sees.
    redact_texts(&mut result);
    clamp_texts(&mut result);
    loop {
        match encode(&result) {
            Err(Error::TooLarge { bytes }) => {
                if !drop_one(&mut result) {
                    return Err(Error::TooLarge { bytes });
                }
            }
            other => return other,
        }
    }
}

/// Parses a termination message strictly: size bound, schema version,
/// unknown fields refused, then every value checked.
pub fn decode(message: &str) -> Result<StepResult, Error> {
    let message = message.trim();
    if message.is_empty() {
        return Err(Error::Empty);
    }
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(Error::TooLarge {
            bytes: message.len(),
        });
    }
    let loose: serde_json::Value =
        serde_json::from_str(message).map_err(|e| Error::Malformed(e.to_string()))?;
    match loose.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => {}
        Some(found) => return Err(Error::UnsupportedVersion { found }),
        None => return Err(Error::Malformed("no schema version `v`".into())),
    }
    let envelope: Envelope =
        serde_json::from_value(loose).map_err(|e| Error::Malformed(e.to_string()))?;
    let mut result = envelope.result;
    check(&result)?;
    redact_texts(&mut result);
    strict_agents(&mut result);
    Ok(result)
}

/// The CLI's version as CLIs write it (`2.1.197 (Claude Code)`, `0.42.0`).
fn is_version(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" .+_()-".contains(&b))
}

/// A decimal amount, at most 20 characters, one point at most.
fn is_amount(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 20
        && c.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && c.bytes().filter(|b| *b == b'.').count() <= 1
}

/// An agent's report with a version or cost not of its strict form (or
/// carrying a credential) is ignored: both dropped, and why recorded.
fn strict_agent(a: &mut crate::AgentReport) {
    use crate::Ignored;
    if a.cost_usd.as_deref().is_some_and(|c| !is_amount(c)) {
        a.ignored = Some(Ignored::CostNotAnAmount);
    } else if a
        .version
        .as_deref()
        .is_some_and(|v| !is_version(v) || !crate::secrets::find(v).is_empty())
    {
        a.ignored = Some(Ignored::VersionNotAVersion);
    }
    // Ignored (now, or by the pod's own word): nothing of it is kept.
    if a.ignored.is_some() {
        a.version = None;
        a.cost_usd = None;
    }
}

fn redact_findings(list: &mut [Finding]) {
    for f in list {
        crate::secrets::redact_in_place(&mut f.code);
        crate::secrets::redact_in_place(&mut f.message);
        if let Some(p) = &mut f.path {
            crate::secrets::redact_in_place(p);
        }
    }
}

fn redact_all(list: &mut [String]) {
    for s in list {
        crate::secrets::redact_in_place(s);
    }
}

/// Agents' reports held to their strict form ([`strict_agent`]), on decode.
fn strict_agents(result: &mut StepResult) {
    match result {
        StepResult::Collected(c) => {
            if let Some(a) = &mut c.agent {
                strict_agent(a);
            }
        }
        StepResult::Verdict(v) => {
            if let Some(a) = &mut v.reviewer {
                strict_agent(a);
            }
        }
        _ => {}
    }
}

/// What a pod reports comes from bytes the agent (file names, its CLI's
/// output), the reviewer model or the remote chose: every free-form text is
/// redacted of credentials ([`crate::secrets`]) before it leaves the pod
/// ([`encode_fitting`]) and again before anyone reads it ([`decode`]).
fn redact_texts(result: &mut StepResult) {
    use crate::secrets::redact_in_place;
    match result {
        StepResult::Prepared(p) => {
            redact_in_place(&mut p.branch);
        }
        StepResult::Collected(c) => {
            redact_all(&mut c.out_of_scope);
        }
        StepResult::Context(c) => {
            redact_all(&mut c.out_of_scope);
            redact_findings(&mut c.findings);
        }
        StepResult::Verdict(v) => {
            redact_in_place(&mut v.summary);
            redact_findings(&mut v.findings);
            if let Some(n) = &mut v.task_file_notes {
                redact_in_place(n);
            }
        }
        StepResult::Published(p) => {
            if let Some(e) = &mut p.push_error {
                redact_in_place(e);
            }
        }
        StepResult::Failed(f) => {
            redact_in_place(&mut f.message);
        }
    }
}

fn invalid(field: &'static str, problem: &'static str) -> Error {
    Error::Invalid { field, problem }
}

/// A full commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
pub fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn commit(field: &'static str, s: &str) -> Result<(), Error> {
    if is_commit_id(s) {
        Ok(())
    } else {
        Err(invalid(field, "not a full commit id"))
    }
}

fn text(field: &'static str, s: &str, max: usize) -> Result<(), Error> {
    if s.len() > max {
        return Err(invalid(field, "too long"));
    }
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(invalid(field, "contains control characters"));
    }
    Ok(())
}

fn paths(field: &'static str, list: &[String]) -> Result<(), Error> {
    if list.len() > MAX_PATHS {
        return Err(invalid(field, "too many paths"));
    }
    list.iter().try_for_each(|p| text(field, p, MAX_PATH_BYTES))
}

fn findings(list: &[Finding]) -> Result<(), Error> {
    if list.len() > MAX_FINDINGS {
        return Err(invalid("findings", "too many findings"));
    }
    for f in list {
        text("findings.code", &f.code, 64)?;
        text("findings.message", &f.message, MAX_TEXT_BYTES)?;
        if let Some(p) = &f.path {
            text("findings.path", p, MAX_PATH_BYTES)?;
        }
    }
    Ok(())
}

fn agent(a: &crate::AgentReport) -> Result<(), Error> {
    // Form is judged in `strict_agent` (an odd report is ignored, not a
    // failed step); here only what could not be read at all.
    if let Some(c) = &a.cost_usd {
        text("agent.costUsd", c, 128)?;
    }
    if let Some(v) = &a.version {
        text("agent.version", v, 128)?;
    }
    Ok(())
}

fn check(result: &StepResult) -> Result<(), Error> {
    match result {
        StepResult::Prepared(p) => {
            commit("baseCommit", &p.base_commit)?;
            text("branch", &p.branch, 255)?;
            if let Some(h) = &p.task_file_sha256
                && !(h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(invalid("taskFileSha256", "not a sha256 in hex"));
            }
        }
        StepResult::Collected(c) => {
            commit("headCommit", &c.head_commit)?;
            paths("outOfScope", &c.out_of_scope)?;
            if let Some(a) = &c.agent {
                agent(a)?;
            }
        }
        StepResult::Context(c) => {
            commit("baseCommit", &c.base_commit)?;
            commit("headCommit", &c.head_commit)?;
            paths("outOfScope", &c.out_of_scope)?;
            findings(&c.findings)?;
        }
        StepResult::Verdict(v) => {
            commit("reviewedCommit", &v.reviewed_commit)?;
            text("summary", &v.summary, MAX_TEXT_BYTES)?;
            findings(&v.findings)?;
            if let Some(n) = &v.task_file_notes {
                text("taskFileNotes", n, MAX_TEXT_BYTES)?;
            }
            if let Some(a) = &v.reviewer {
                agent(a)?;
            }
        }
        StepResult::Published(p) => {
            if let Some(m) = &p.merge_commit {
                commit("mergeCommit", m)?;
            }
            if let Some(e) = &p.push_error {
                text("pushError", e, MAX_TEXT_BYTES)?;
            }
            if p.pushed && p.push_error.is_some() {
                return Err(invalid("pushError", "set although the push succeeded"));
            }
        }
        StepResult::Failed(f) => text("message", &f.message, MAX_TEXT_BYTES)?,
    }
    Ok(())
}

/// Replaces the control characters [`text`] refuses with spaces, then cuts
/// `s` to at most `max` bytes on a character boundary; true when it cut.
fn clamp(s: &mut String, max: usize) -> bool {
    if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        *s = s
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect();
    }
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

fn clamp_findings(list: &mut Vec<Finding>) -> bool {
    let mut cut = false;
    list.sort_by_key(|f| std::cmp::Reverse(f.severity));
    if list.len() > MAX_FINDINGS {
        list.truncate(MAX_FINDINGS);
        cut = true;
    }
    for f in list.iter_mut() {
        cut |= clamp(&mut f.code, 64);
        cut |= clamp(&mut f.message, MAX_TEXT_BYTES);
        if let Some(p) = &mut f.path {
            cut |= clamp(p, MAX_PATH_BYTES);
        }
    }
    cut
}

fn clamp_paths(list: &mut Vec<String>) -> bool {
    let mut cut = list.len() > MAX_PATHS;
    list.truncate(MAX_PATHS);
    for p in list.iter_mut() {
        cut |= clamp(p, MAX_PATH_BYTES);
    }
    cut
}

fn clamp_texts(result: &mut StepResult) {
    match result {
        StepResult::Collected(c) => c.truncated |= clamp_paths(&mut c.out_of_scope),
        StepResult::Context(c) => {
            c.truncated |= clamp_paths(&mut c.out_of_scope) | clamp_findings(&mut c.findings);
        }
        StepResult::Verdict(v) => {
            let mut cut = clamp(&mut v.summary, MAX_TEXT_BYTES) | clamp_findings(&mut v.findings);
            if let Some(n) = &mut v.task_file_notes {
                cut |= clamp(n, MAX_TEXT_BYTES);
            }
            v.truncated |= cut;
        }
        StepResult::Published(p) => {
            if let Some(e) = &mut p.push_error {
                clamp(e, MAX_TEXT_BYTES);
            }
        }
        StepResult::Failed(f) => {
            clamp(&mut f.message, MAX_TEXT_BYTES);
        }
        StepResult::Prepared(_) => {}
    }
}

/// Drops the least important list entry; false when nothing is left to drop.
fn drop_one(result: &mut StepResult) -> bool {
    fn shorten(s: &mut String) -> bool {
        let half = s.len() / 2;
        half > 0 && clamp(s, half)
    }
    match result {
        StepResult::Collected(c) => {
            c.truncated = true;
            c.out_of_scope.pop().is_some()
        }
        StepResult::Context(c) => {
            c.truncated = true;
            c.out_of_scope.pop().is_some() || c.findings.pop().is_some()
        }
        StepResult::Verdict(v) => {
            v.truncated = true;
            v.findings.pop().is_some()
                || v.task_file_notes.take().is_some()
                || shorten(&mut v.summary)
        }
        StepResult::Published(p) => p.push_error.as_mut().is_some_and(shorten),
        StepResult::Failed(f) => shorten(&mut f.message),
        StepResult::Prepared(_) => false,
    }
}

#[cfg(test)]
mod tests;
