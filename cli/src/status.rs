//! `status`: one task in detail, or a table of tasks.

use std::fmt::Write as _;
use std::io::Write;

use hermes_crds::TaskPhase;
use hermes_crds::task::{HermesTask, PublishMode, Severity};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};

use crate::args::{GlobalArgs, StatusArgs};
use crate::client::connect;
use crate::run::print;
use crate::{Error, Result};

/// A condition of the task, if present.
pub fn condition<'a>(task: &'a HermesTask, type_: &str) -> Option<&'a Condition> {
    task.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
}

/// The phase's name as the API writes it.
pub fn phase_name(p: TaskPhase) -> String {
    format!("{p:?}")
}

/// The task's phase, or `Pending` before the operator has written one.
pub fn phase_of(task: &HermesTask) -> Option<TaskPhase> {
    task.status.as_ref().and_then(|s| s.phase)
}

/// `5s`, `3m`, `2h`, `4d`, as kubectl writes ages.
pub fn age(since: Option<&Time>, now: Timestamp) -> String {
    let Some(t) = since else {
        return "<unknown>".into();
    };
    let secs = now.duration_since(t.0).as_secs().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// A table of tasks: NAME, PHASE, VERDICT, FINDINGS, BRANCH, AGE (and
/// NAMESPACE first with `-A`).
pub fn table(tasks: &[HermesTask], all_namespaces: bool, now: Timestamp) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut header = vec!["NAME", "PHASE", "VERDICT", "FINDINGS", "BRANCH", "AGE"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    rows.push(header.into_iter().map(str::to_owned).collect());
    for t in tasks {
        let s = t.status.as_ref();
        let review = s.and_then(|s| s.review.as_ref());
        let mut row = vec![
            t.metadata.name.clone().unwrap_or_default(),
            phase_of(t).map_or_else(|| "-".into(), phase_name),
            review.map_or_else(|| "-".into(), |r| format!("{:?}", r.verdict).to_lowercase()),
            review.map_or_else(|| "-".into(), |r| r.findings.len().to_string()),
            s.and_then(|s| s.branch.clone())
                .unwrap_or_else(|| "-".into()),
            age(t.metadata.creation_timestamp.as_ref(), now),
        ];
        if all_namespaces {
            row.insert(0, t.metadata.namespace.clone().unwrap_or_default());
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "{}", line.join("   ").trim_end());
    }
    out
}

/// One task in detail.
pub fn detail(t: &HermesTask, now: Timestamp) -> String {
    let mut o = String::new();
    let name = t.metadata.name.clone().unwrap_or_default();
    let s = t.status.clone().unwrap_or_default();
    let spec = &t.spec;
    let line = |o: &mut String, k: &str, v: &str| {
        let _ = writeln!(o, "{:<13}{v}", format!("{k}:"));
    };
    line(&mut o, "Name", &name);
    line(
        &mut o,
        "Namespace",
        t.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let phase = s
        .phase
        .map_or_else(|| "(not yet reconciled)".into(), phase_name);
    let attempt = s
        .attempt
        .filter(|a| *a > 1)
        .map(|a| format!(" (attempt {a})"))
        .unwrap_or_default();
    line(&mut o, "Phase", &format!("{phase}{attempt}"));
    if let Some(ready) =
        condition(t, "Ready").filter(|_| s.phase.is_some_and(TaskPhase::is_terminal))
    {
        line(
            &mut o,
            "Reason",
            &format!("{}: {}", ready.reason, ready.message),
        );
    }
    line(&mut o, "Profile", spec.profile.as_str());
    line(
        &mut o,
        "Repository",
        &format!(
            "{} ({} → {})",
            spec.repo.url,
            spec.repo.base_ref,
            s.branch.clone().unwrap_or_else(|| t.work_branch().0)
        ),
    );
    line(
        &mut o,
        "Review",
        &format!(
            "{:?}, publish {}",
            spec.review.mode,
            match spec.publish.mode {
                PublishMode::Merge => "merge",
                PublishMode::Branch => "branch",
                PublishMode::None => "none",
            }
        )
        .to_lowercase(),
    );
    if !spec.depends_on.is_empty() {
        let deps: Vec<&str> = spec.depends_on.iter().map(|d| d.as_str()).collect();
        line(&mut o, "Depends on", &deps.join(", "));
    }
    line(
        &mut o,
        "Age",
        &age(t.metadata.creation_timestamp.as_ref(), now),
    );
    if let Some(base) = &s.base_commit {
        line(&mut o, "Base commit", base);
    }
    if let Some(head) = &s.head_commit {
        line(&mut o, "Head commit", head);
    }
    if let Some(d) = &s.diff {
        let oos = if d.out_of_scope.is_empty() {
            String::new()
        } else {
            format!("; out of scope: {}", d.out_of_scope.join(", "))
        };
        line(
            &mut o,
            "Diff",
            &format!(
                "{} file(s), +{} -{}{oos}",
                d.files, d.insertions, d.deletions
            ),
        );
    }
    if let Some(r) = &s.review {
        let by = match r.decided_by {
            Some(d) => format!(", decided by {d:?}").to_lowercase(),
            None if spec.review.mode == hermes_crds::task::ReviewMode::Manual => {
                " (the reviewer's advice; a person decides)".to_owned()
            }
            None => String::new(),
        };
        line(
            &mut o,
            "Verdict",
            &format!(
                "{}{by} on {}",
                format!("{:?}", r.verdict).to_lowercase(),
                r.reviewed_commit
            ),
        );
        if let Some(summary) = &r.summary {
            line(&mut o, "Summary", summary);
        }
        let count = |sev: Severity| r.findings.iter().filter(|f| f.severity == sev).count();
        line(
            &mut o,
            "Findings",
            &format!(
                "{} ({} reject, {} warn, {} info)",
                r.findings.len(),
                count(Severity::Reject),
                count(Severity::Warn),
                count(Severity::Info)
            ),
        );
        for f in &r.findings {
            let path = f
                .path
                .as_deref()
                .map(|p| format!("{p}: "))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "  - [{}/{}] {path}{}",
                format!("{:?}", f.severity).to_lowercase(),
                format!("{:?}", f.source).to_lowercase(),
                f.message
            );
        }
    }
    if let Some(p) = &s.publish {
        let merge = p
            .merge_commit
            .as_deref()
            .map(|m| format!(", merge commit {m}"))
            .unwrap_or_default();
        let text = if p.pushed {
            format!("pushed{merge}")
        } else {
            format!(
                "push failed{merge}: {} (retry with `kubectl hermes retry-publish {name}`)",
                p.push_error.as_deref().unwrap_or("no reason given")
            )
        };
        line(&mut o, "Publish", &text);
    }
    if let Some(u) = &s.usage {
        let cost = u
            .cost_usd
            .as_deref()
            .map(|c| format!(", ${c}"))
            .unwrap_or_default();
        line(
            &mut o,
            "Usage",
            &format!(
                "{} turns, {} input + {} output tokens (cache: {} read, {} written){cost}",
                u.turns,
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.cache_creation_tokens
            ),
        );
    }
    if let Some(v) = &s.agent_version {
        line(&mut o, "Agent", v);
    }
    if let Some(h) = &s.task_file_sha256 {
        line(&mut o, "Task file", &format!("sha256 {h}"));
    }
    if let Some(n) = &s.task_file_notes {
        line(&mut o, "Task notes", n);
    }
    if let Some(st) = &s.start_time {
        line(&mut o, "Started", &st.0.to_string());
    }
    if let Some(c) = &s.completion_time {
        line(&mut o, "Completed", &c.0.to_string());
    }
    if !s.conditions.is_empty() {
        let _ = writeln!(o, "Conditions:");
        let w = s
            .conditions
            .iter()
            .map(|c| c.type_.len())
            .max()
            .unwrap_or(4);
        let r = s
            .conditions
            .iter()
            .map(|c| c.reason.len())
            .max()
            .unwrap_or(6);
        for c in &s.conditions {
            let _ = writeln!(
                o,
                "  {:<w$}  {:<5}  {:<r$}  {}",
                c.type_, c.status, c.reason, c.message
            );
        }
    }
    o
}

/// Runs `status`.
pub async fn run(global: &GlobalArgs, args: &StatusArgs, out: &mut impl Write) -> Result<()> {
    let conn = connect(global).await?;
    let now = Timestamp::now();
    match &args.task {
        Some(name) => {
            let api: Api<HermesTask> = Api::namespaced(conn.client.clone(), &conn.namespace);
            let task = get_task(&api, name, &conn.namespace).await?;
            match args.output {
                Some(f) => print(out, f, &[without_managed_fields(&task)])?,
                None => write!(out, "{}", detail(&task, now)).map_err(Error::Write)?,
            }
        }
        None => {
            let api: Api<HermesTask> = if args.all_namespaces {
                Api::all(conn.client.clone())
            } else {
                Api::namespaced(conn.client.clone(), &conn.namespace)
            };
            let mut tasks = api
                .list(&ListParams::default())
                .await
                .map_err(Error::api("listing hermestasks"))?
                .items;
            tasks.sort_by(|a, b| {
                (&a.metadata.namespace, &a.metadata.name)
                    .cmp(&(&b.metadata.namespace, &b.metadata.name))
            });
            match args.output {
                Some(f) => {
                    let items: Vec<_> = tasks.iter().map(without_managed_fields).collect();
                    let list =
                        serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items});
                    print(out, f, &[list])?;
                }
                None if tasks.is_empty() => {
                    let scope = if args.all_namespaces {
                        "any namespace".to_owned()
                    } else {
                        format!("namespace {}", conn.namespace)
                    };
                    writeln!(out, "No hermestasks in {scope}.").map_err(Error::Write)?;
                }
                None => write!(out, "{}", table(&tasks, args.all_namespaces, now))
                    .map_err(Error::Write)?,
            }
        }
    }
    Ok(())
}

/// Reads a task, with a clear error when it does not exist.
pub async fn get_task(api: &Api<HermesTask>, name: &str, namespace: &str) -> Result<HermesTask> {
    api.get_opt(name)
        .await
        .map_err(Error::api(format!("reading hermestask {name}")))?
        .ok_or_else(|| Error::TaskNotFound {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        })
}

fn without_managed_fields(t: &HermesTask) -> serde_json::Value {
    let mut t = t.clone();
    t.metadata.managed_fields = None;
    serde_json::to_value(&t).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(status: serde_json::Value) -> HermesTask {
        serde_json::from_value(json!({
            "apiVersion": "hermes.dev/v1alpha1", "kind": "HermesTask",
            "metadata": {"name": "add-flag", "namespace": "team", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"repo": {"url": "https://git.example.com/o/r.git", "baseRef": "main"},
                     "task": "x", "scope": ["src/**"], "review": {"mode": "manual"}},
            "status": status,
        }))
        .expect("task")
    }

    fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().expect("time")
    }

    #[test]
    fn the_table_lists_phase_verdict_findings_branch_and_age() {
        let t = task(
            json!({"phase": "AwaitingApproval", "branch": "hermes/add-flag",
            "review": {"verdict": "approve", "reviewedCommit": "a".repeat(40),
                       "findings": [{"severity": "warn", "source": "policy", "message": "m"}]}}),
        );
        let text = table(std::slice::from_ref(&t), false, now());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        let cols: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "add-flag",
                "AwaitingApproval",
                "approve",
                "1",
                "hermes/add-flag",
                "10m"
            ]
        );
        let text = table(&[t], true, now());
        assert!(
            text.lines().nth(1).is_some_and(|l| l.starts_with("team ")),
            "{text}"
        );
    }

    #[test]
    fn the_detail_shows_commits_verdict_findings_publish_and_usage() {
        let t = task(
            json!({"phase": "Succeeded", "baseCommit": "b".repeat(40), "headCommit": "c".repeat(40),
            "review": {"verdict": "approve", "reviewedCommit": "c".repeat(40), "decidedBy": "person",
                       "summary": "Adds the flag.",
                       "findings": [{"severity": "reject", "source": "policy", "path": ".github/x", "message": "protected"}]},
            "publish": {"pushed": false, "mergeCommit": "d".repeat(40), "pushError": "refused"},
            "usage": {"turns": 4, "inputTokens": 1200, "outputTokens": 340, "costUsd": "0.0123"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "approved and published",
                            "lastTransitionTime": "2026-01-01T00:05:00Z"}]}),
        );
        let text = detail(&t, now());
        for want in [
            "Phase:       Succeeded",
            &format!("Base commit: {}", "b".repeat(40)),
            &format!("approve, decided by person on {}", "c".repeat(40)),
            "Findings:    1 (1 reject, 0 warn, 0 info)",
            "[reject/policy] .github/x: protected",
            "push failed",
            "kubectl hermes retry-publish add-flag",
            "4 turns, 1200 input + 340 output tokens",
            "$0.0123",
            "Ready",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn ages_read_like_kubectls() {
        let t = |s: &str| Time(s.parse().expect("time"));
        assert_eq!(age(Some(&t("2026-01-01T00:09:30Z")), now()), "30s");
        assert_eq!(age(Some(&t("2025-12-31T20:00:00Z")), now()), "4h");
        assert_eq!(age(Some(&t("2025-12-20T00:00:00Z")), now()), "12d");
        assert_eq!(age(None, now()), "<unknown>");
    }
}
