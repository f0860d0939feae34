//! From a task file and the command line to a `HermesTask`: flags override
//! the front matter, the name defaults to a slug of the file name, and the
//! result is checked with the same rules the API server applies (the string
//! rules of `hermes_crds::validation`, the schema's bounds) before anything
//! is sent. Each problem names the field and where it was set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hermes_crds::task::{
    HermesTask, HermesTaskSpec, MAX_TASK_CHARS, PublishMode, PublishSpec, RepoSpec, ReviewMode,
    ReviewSpec,
};
use hermes_crds::validation::{BranchName, ObjectName, RepoUrl, ScopeGlob, ValidationError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::taskfile::{Origin, Problem, Seg, TaskFile};

/// Label every task of a batch carries, valued with the batch's id.
pub const LABEL_BATCH: &str = "hermes.dev/batch";

/// The schema's bounds the CLI checks besides the string rules (a unit test
/// holds them equal to the generated CRD's).
pub mod bounds {
    /// Lowest and highest `spec.priority`.
    pub const PRIORITY: (i64, i64) = (-1000, 1000);
    /// Most `spec.scope` entries.
    pub const MAX_SCOPE: usize = 64;
    /// Most `spec.dependsOn` entries.
    pub const MAX_DEPENDS_ON: usize = 32;
    /// Longest `spec.review.instructions`, in characters.
    pub const MAX_INSTRUCTIONS: usize = 8192;
    /// Token budget range.
    pub const BUDGET_TOKENS: (i64, i64) = (1, 1_000_000_000);
    /// Turn budget range.
    pub const BUDGET_TURNS: (i32, i32) = (1, 10_000);
}

/// What the command line sets; each wins over the front matter.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--name`.
    pub name: Option<String>,
    /// `--repo`.
    pub repo: Option<String>,
    /// `--base`.
    pub base: Option<String>,
    /// `--branch`.
    pub branch: Option<String>,
    /// `--scope` (repeatable; replaces the front matter's list).
    pub scope: Vec<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--review`.
    pub review: Option<ReviewMode>,
    /// `--publish`.
    pub publish: Option<PublishMode>,
    /// `--priority`.
    pub priority: Option<i64>,
    /// `--depends-on` (repeatable; replaces the front matter's list).
    pub depends_on: Vec<String>,
}

/// A value and where it was set.
struct At<T> {
    value: T,
    origin: Origin,
}

fn pick<T>(flag: Option<T>, flag_name: &'static str, front: Option<(T, Origin)>) -> Option<At<T>> {
    match flag {
        Some(value) => Some(At {
            value,
            origin: Origin::Flag(flag_name),
        }),
        None => front.map(|(value, origin)| At { value, origin }),
    }
}

/// Builds and checks the task of `file` (a path, for the default name) with
/// `overrides` and, for a batch, extra labels. The namespace is left unset.
pub fn build(
    file: &Path,
    tf: &TaskFile,
    overrides: &Overrides,
    extra_labels: &BTreeMap<String, String>,
) -> Result<HermesTask, Vec<Problem>> {
    let mut problems = Vec::new();
    let front = &tf.front;
    let loc = |path: &[Seg<'_>]| tf.locate(path);

    // metadata.name
    let name = pick(
        overrides.name.clone(),
        "--name",
        front.name.clone().map(|n| (n, loc(&[Seg::Key("name")]))),
    )
    .unwrap_or_else(|| At {
        value: slug(file),
        origin: Origin::FileName,
    });
    if name.value.is_empty() {
        problems.push(Problem::new(
            name.origin.clone(),
            "metadata.name",
            "is empty",
        ));
    } else {
        check(
            &mut problems,
            &name.origin,
            ObjectName(name.value.clone()).validate("metadata.name"),
        );
    }

    // spec.repo
    let repo_front = front.repo.clone().unwrap_or_default();
    let url = pick(
        overrides.repo.clone(),
        "--repo",
        repo_front
            .url
            .map(|u| (u, loc(&[Seg::Key("repo"), Seg::Key("url")]))),
    );
    let base = pick(
        overrides.base.clone(),
        "--base",
        repo_front
            .base_ref
            .map(|b| (b, loc(&[Seg::Key("repo"), Seg::Key("baseRef")]))),
    );
    let branch = pick(
        overrides.branch.clone(),
        "--branch",
        repo_front
            .branch
            .map(|b| (b, loc(&[Seg::Key("repo"), Seg::Key("branch")]))),
    );
    match &url {
        None => problems.push(Problem::new(
            Origin::File,
            "spec.repo.url",
            "is required: set `repo: {url: ...}` in the front matter or pass --repo",
        )),
        Some(u) => check(
            &mut problems,
            &u.origin,
            RepoUrl(u.value.clone()).validate("spec.repo.url"),
        ),
    }
    match &base {
        None => problems.push(Problem::new(
            Origin::File,
            "spec.repo.baseRef",
            "is required: set `repo: {baseRef: ...}` in the front matter or pass --base",
        )),
        Some(b) => check(
            &mut problems,
            &b.origin,
            BranchName(b.value.clone()).validate("spec.repo.baseRef"),
        ),
    }
    if let Some(b) = &branch {
        check(
            &mut problems,
            &b.origin,
            BranchName(b.value.clone()).validate("spec.repo.branch"),
        );
        if base.as_ref().is_some_and(|base| base.value == b.value) {
            problems.push(Problem::new(
                b.origin.clone(),
                "spec.repo.branch",
                "must differ from spec.repo.baseRef: the agent never works on the base branch",
            ));
        }
    }

    // spec.task: the body
    let body_origin = Origin::Line(tf.body_line);
    if tf.body.trim().is_empty() {
        problems.push(Problem::new(
            Origin::File,
            "spec.task",
            "the task file has no markdown body: write the task below the front matter",
        ));
    } else if tf.body.chars().count() > MAX_TASK_CHARS {
        problems.push(Problem::new(
            body_origin,
            "spec.task",
            format!(
                "the markdown body has {} characters, more than the {MAX_TASK_CHARS} allowed",
                tf.body.chars().count()
            ),
        ));
    }

    // spec.scope
    let scope: Vec<(String, Origin)> = if overrides.scope.is_empty() {
        front
            .scope
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, g)| (g, loc(&[Seg::Key("scope"), Seg::Index(i)])))
            .collect()
    } else {
        overrides
            .scope
            .iter()
            .map(|g| (g.clone(), Origin::Flag("--scope")))
            .collect()
    };
    if scope.is_empty() {
        problems.push(Problem::new(
            Origin::File,
            "spec.scope",
            "at least one glob is required: set `scope:` in the front matter or pass --scope",
        ));
    }
    if scope.len() > bounds::MAX_SCOPE {
        problems.push(Problem::new(
            scope[bounds::MAX_SCOPE].1.clone(),
            "spec.scope",
            format!("at most {} globs", bounds::MAX_SCOPE),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, (glob, origin)) in scope.iter().enumerate() {
        let field = format!("spec.scope[{i}]");
        check(
            &mut problems,
            origin,
            ScopeGlob(glob.clone()).validate(&field),
        );
        if !seen.insert(glob.as_str()) {
            problems.push(Problem::new(
                origin.clone(),
                field,
                format!("{glob:?} is listed twice"),
            ));
        }
    }

    // spec.profile
    let profile = pick(
        overrides.profile.clone(),
        "--profile",
        front
            .profile
            .clone()
            .map(|p| (p, loc(&[Seg::Key("profile")]))),
    )
    .unwrap_or(At {
        value: "default".to_owned(),
        origin: Origin::Default,
    });
    check(
        &mut problems,
        &profile.origin,
        ObjectName(profile.value.clone()).validate("spec.profile"),
    );

    // spec.review, spec.publish
    let review = review_spec(tf, overrides, &mut problems);
    let publish = publish_spec(tf, overrides, &mut problems);

    // spec.priority
    let priority = pick(
        overrides.priority,
        "--priority",
        front.priority.map(|p| (p, loc(&[Seg::Key("priority")]))),
    );
    let priority = match priority {
        None => 0,
        Some(p) => {
            let (lo, hi) = bounds::PRIORITY;
            if p.value < lo || p.value > hi {
                problems.push(Problem::new(
                    p.origin,
                    "spec.priority",
                    format!("{} is out of range: from {lo} to {hi}", p.value),
                ));
            }
            i32::try_from(p.value).unwrap_or_default()
        }
    };

    // spec.dependsOn
    let depends_on: Vec<(String, Origin)> = if overrides.depends_on.is_empty() {
        front
            .depends_on
            .clone()
            .map(|s| s.into_vec())
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, d)| (d, loc(&[Seg::Key("dependsOn"), Seg::Index(i)])))
            .collect()
    } else {
        overrides
            .depends_on
            .iter()
            .map(|d| (d.clone(), Origin::Flag("--depends-on")))
            .collect()
    };
    if depends_on.len() > bounds::MAX_DEPENDS_ON {
        problems.push(Problem::new(
            depends_on[bounds::MAX_DEPENDS_ON].1.clone(),
            "spec.dependsOn",
            format!("at most {} tasks", bounds::MAX_DEPENDS_ON),
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, (dep, origin)) in depends_on.iter().enumerate() {
        let field = format!("spec.dependsOn[{i}]");
        check(
            &mut problems,
            origin,
            ObjectName(dep.clone()).validate(&field),
        );
        if *dep == name.value {
            problems.push(Problem::new(
                origin.clone(),
                field.clone(),
                "a task cannot depend on itself",
            ));
        }
        if !seen.insert(dep.as_str()) {
            problems.push(Problem::new(
                origin.clone(),
                field,
                format!("{dep:?} is listed twice"),
            ));
        }
    }

    // spec.timeouts, spec.budget
    if let Some(t) = &front.timeouts {
        for (key, value) in [
            ("prepare", &t.prepare),
            ("implement", &t.implement),
            ("review", &t.review),
            ("publish", &t.publish),
        ] {
            if let Some(v) = value {
                let field = format!("spec.timeouts.{key}");
                if let Err(e) = v.duration(&field) {
                    problems.push(Problem::new(
                        loc(&[Seg::Key("timeouts"), Seg::Key(key)]),
                        field,
                        strip_field(&e),
                    ));
                }
            }
        }
    }
    if let Some(b) = &front.budget {
        let (lo, hi) = bounds::BUDGET_TOKENS;
        if let Some(t) = b.tokens.filter(|t| *t < lo || *t > hi) {
            problems.push(Problem::new(
                loc(&[Seg::Key("budget"), Seg::Key("tokens")]),
                "spec.budget.tokens",
                format!("{t} is out of range: from {lo} to {hi}"),
            ));
        }
        let (lo, hi) = bounds::BUDGET_TURNS;
        if let Some(t) = b.turns.filter(|t| *t < lo || *t > hi) {
            problems.push(Problem::new(
                loc(&[Seg::Key("budget"), Seg::Key("turns")]),
                "spec.budget.turns",
                format!("{t} is out of range: from {lo} to {hi}"),
            ));
        }
        if let Some(c) = &b.cost_usd
            && let Err(e) = c.micros("spec.budget.costUsd")
        {
            problems.push(Problem::new(
                loc(&[Seg::Key("budget"), Seg::Key("costUsd")]),
                "spec.budget.costUsd",
                strip_field(&e),
            ));
        }
    }

    // metadata.labels
    let mut labels = front.labels.clone().unwrap_or_default();
    for (key, value) in &labels {
        let origin = loc(&[Seg::Key("labels"), Seg::Key(key)]);
        if let Err(why) = label_key(key) {
            problems.push(Problem::new(
                origin.clone(),
                format!("metadata.labels[{key:?}]"),
                format!("not a valid label key: {why}"),
            ));
        }
        if let Err(why) = label_value(value) {
            problems.push(Problem::new(
                origin,
                format!("metadata.labels[{key:?}]"),
                format!("not a valid label value: {why}"),
            ));
        }
    }
    labels.extend(extra_labels.clone());

    if !problems.is_empty() {
        return Err(problems);
    }
    let spec = HermesTaskSpec {
        repo: RepoSpec {
            url: RepoUrl(url.map(|u| u.value).unwrap_or_default()),
            base_ref: BranchName(base.map(|b| b.value).unwrap_or_default()),
            branch: branch.map(|b| BranchName(b.value)),
        },
        task: Some(tf.body.clone()),
        task_ref: None,
        scope: scope.into_iter().map(|(g, _)| ScopeGlob(g)).collect(),
        profile: ObjectName(profile.value),
        review,
        publish,
        timeouts: front.timeouts.clone(),
        budget: front.budget.clone(),
        egress: None,
        egress_hosts: None,
        priority,
        depends_on: depends_on.into_iter().map(|(d, _)| ObjectName(d)).collect(),
    };
    let mut task = HermesTask::new(&name.value, spec);
    task.metadata = ObjectMeta {
        name: Some(name.value),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    Ok(task)
}

fn check(problems: &mut Vec<Problem>, origin: &Origin, result: Result<(), ValidationError>) {
    if let Err(e) = result {
        let field = match &e {
            ValidationError::Rule { field, .. }
            | ValidationError::GlobSyntax { field, .. }
            | ValidationError::Cidr { field, .. }
            | ValidationError::Duration { field, .. }
            | ValidationError::Money { field, .. } => field.clone(),
        };
        problems.push(Problem::new(origin.clone(), field, strip_field(&e)));
    }
}

/// The error's message without its leading `field: `.
fn strip_field(e: &ValidationError) -> String {
    let text = e.to_string();
    match text.split_once(": ") {
        Some((_, rest)) => rest.to_owned(),
        None => text,
    }
}

fn review_spec(tf: &TaskFile, o: &Overrides, problems: &mut Vec<Problem>) -> ReviewSpec {
    let origin = tf.locate(&[Seg::Key("review")]);
    let mut spec = ReviewSpec::default();
    // A mode the flag replaces is not checked.
    let mut mode_problems = Vec::new();
    match &tf.front.review {
        None => {}
        Some(serde_yaml::Value::String(mode)) => match parse_review_mode(mode) {
            Some(m) => spec.mode = m,
            None => problems.push(mode_problem(
                origin,
                "spec.review.mode",
                mode,
                "auto, manual",
            )),
        },
        Some(serde_yaml::Value::Mapping(map)) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    (Some("mode"), serde_yaml::Value::String(mode)) => {
                        match parse_review_mode(mode) {
                            Some(m) => spec.mode = m,
                            None => mode_problems.push(mode_problem(
                                tf.locate(&[Seg::Key("review"), Seg::Key("mode")]),
                                "spec.review.mode",
                                mode,
                                "auto, manual",
                            )),
                        }
                    }
                    (Some("instructions"), serde_yaml::Value::String(text)) => {
                        if text.chars().count() > bounds::MAX_INSTRUCTIONS {
                            problems.push(Problem::new(
                                tf.locate(&[Seg::Key("review"), Seg::Key("instructions")]),
                                "spec.review.instructions",
                                format!("at most {} characters", bounds::MAX_INSTRUCTIONS),
                            ));
                        }
                        spec.instructions = Some(text.clone());
                    }
                    (Some(key @ ("mode" | "instructions")), _) => problems.push(Problem::new(
                        tf.locate(&[Seg::Key("review"), Seg::Key(key)]),
                        format!("spec.review.{key}"),
                        "must be a string",
                    )),
                    (key, _) => problems.push(Problem::new(
                        origin.clone(),
                        "spec.review",
                        format!(
                            "unknown key {:?}: expected mode, instructions",
                            key.unwrap_or("?")
                        ),
                    )),
                }
            }
        }
        Some(_) => problems.push(Problem::new(
            origin,
            "spec.review",
            "must be auto, manual, or {mode: ..., instructions: ...}",
        )),
    }
    match o.review {
        Some(m) => spec.mode = m,
        None => problems.extend(mode_problems),
    }
    spec
}

fn publish_spec(tf: &TaskFile, o: &Overrides, problems: &mut Vec<Problem>) -> PublishSpec {
    let origin = tf.locate(&[Seg::Key("publish")]);
    let mut spec = PublishSpec::default();
    let mode = match &tf.front.publish {
        None => None,
        Some(serde_yaml::Value::String(mode)) => Some((mode.clone(), origin)),
        Some(serde_yaml::Value::Mapping(map)) => {
            let mut mode = None;
            for (k, v) in map {
                match (k.as_str(), v) {
                    (Some("mode"), serde_yaml::Value::String(m)) => {
                        mode = Some((
                            m.clone(),
                            tf.locate(&[Seg::Key("publish"), Seg::Key("mode")]),
                        ));
                    }
                    (key, _) => problems.push(Problem::new(
                        origin.clone(),
                        "spec.publish",
                        format!("unexpected {:?}: expected mode", key.unwrap_or("?")),
                    )),
                }
            }
            mode
        }
        Some(_) => {
            problems.push(Problem::new(
                origin,
                "spec.publish",
                "must be merge, branch, none, or {mode: ...}",
            ));
            None
        }
    };
    if let Some((mode, origin)) = mode.filter(|_| o.publish.is_none()) {
        match parse_publish_mode(&mode) {
            Some(m) => spec.mode = m,
            None => problems.push(mode_problem(
                origin,
                "spec.publish.mode",
                &mode,
                "merge, branch, none",
            )),
        }
    }
    if let Some(m) = o.publish {
        spec.mode = m;
    }
    spec
}

fn mode_problem(origin: Origin, field: &str, value: &str, allowed: &str) -> Problem {
    Problem::new(origin, field, format!("{value:?} is not one of {allowed}"))
}

/// `auto` or `manual`.
pub fn parse_review_mode(s: &str) -> Option<ReviewMode> {
    match s {
        "auto" => Some(ReviewMode::Auto),
        "manual" => Some(ReviewMode::Manual),
        _ => None,
    }
}

/// `merge`, `branch` or `none`.
pub fn parse_publish_mode(s: &str) -> Option<PublishMode> {
    match s {
        "merge" => Some(PublishMode::Merge),
        "branch" => Some(PublishMode::Branch),
        "none" => Some(PublishMode::None),
        _ => None,
    }
}

/// The default task name: the file's stem, lowercased, every run of other
/// characters than letters and digits made one `-`, at most 63 characters.
pub fn slug(file: &Path) -> String {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut out = String::new();
    for c in stem.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_owned()
}

fn name_part(s: &str, max: usize) -> Result<(), String> {
    if s.is_empty() || s.len() > max {
        return Err(format!("must be 1 to {max} characters"));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !s.chars().all(ok_char) {
        return Err("only letters, digits, '-', '_' and '.'".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(s.chars().next()) || !edge(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks a label key (`[prefix/]name`), as the API server does.
pub fn label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        ObjectName(p.to_owned())
            .validate("prefix")
            .map_err(|_| "the prefix must be a DNS subdomain".to_owned())?;
    }
    name_part(name, 63)
}

/// Checks a label value, as the API server does (empty is allowed).
pub fn label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    name_part(value, 63)
}

#[cfg(test)]
mod tests;
