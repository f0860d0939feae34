use std::path::Path;

use hermes_crds::task::{PublishMode, ReviewMode};
use kube::CustomResourceExt;

use super::*;
use crate::taskfile::{Origin, TaskFile};

const FILE: &str = "---
name: add-flag
repo:
  url: https://git.example.com/o/r.git
  baseRef: main
scope:
  - src/**
review:
  mode: manual
  instructions: Check the help text.
publish: branch
priority: 5
dependsOn: [base-task]
labels:
  team: cli
---

# Add a --verbose flag

Done when `cargo test` passes.
";

fn parse(text: &str) -> TaskFile {
    TaskFile::parse(text).expect("parses")
}

fn problems(text: &str, o: &Overrides) -> Vec<Problem> {
    build(Path::new("t.md"), &parse(text), o, &BTreeMap::new()).expect_err("refused")
}

#[test]
fn front_matter_becomes_the_spec_and_the_body_the_task() {
    let t = build(
        Path::new("x.md"),
        &parse(FILE),
        &Overrides::default(),
        &BTreeMap::new(),
    )
    .expect("valid");
    assert_eq!(t.metadata.name.as_deref(), Some("add-flag"));
    let s = &t.spec;
    assert_eq!(s.repo.url.as_str(), "https://git.example.com/o/r.git");
    assert_eq!(s.repo.base_ref.as_str(), "main");
    assert_eq!(s.scope, vec![ScopeGlob::from("src/**")]);
    assert_eq!(s.review.mode, ReviewMode::Manual);
    assert_eq!(
        s.review.instructions.as_deref(),
        Some("Check the help text.")
    );
    assert_eq!(s.publish.mode, PublishMode::Branch);
    assert_eq!(s.priority, 5);
    assert_eq!(s.depends_on, vec![ObjectName::from("base-task")]);
    assert_eq!(
        s.task.as_deref(),
        Some("# Add a --verbose flag\n\nDone when `cargo test` passes.\n")
    );
    assert_eq!(
        t.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("team"))
            .map(String::as_str),
        Some("cli")
    );
    assert_eq!(s.profile.as_str(), "default");
}

#[test]
fn flags_override_the_front_matter() {
    let o = Overrides {
        name: Some("other".into()),
        base: Some("develop".into()),
        scope: vec!["lib/**".into(), "docs/*.md".into()],
        review: Some(ReviewMode::Auto),
        publish: Some(PublishMode::None),
        priority: Some(-3),
        profile: Some("fast".into()),
        ..Overrides::default()
    };
    let t = build(Path::new("x.md"), &parse(FILE), &o, &BTreeMap::new()).expect("valid");
    assert_eq!(t.metadata.name.as_deref(), Some("other"));
    assert_eq!(t.spec.repo.base_ref.as_str(), "develop");
    assert_eq!(t.spec.repo.url.as_str(), "https://git.example.com/o/r.git");
    assert_eq!(t.spec.scope.len(), 2);
    assert_eq!(t.spec.review.mode, ReviewMode::Auto);
    // The instructions of the front matter stay: the flag sets the mode only.
    assert_eq!(
        t.spec.review.instructions.as_deref(),
        Some("Check the help text.")
    );
    assert_eq!(t.spec.publish.mode, PublishMode::None);
    assert_eq!(t.spec.priority, -3);
    assert_eq!(t.spec.profile.as_str(), "fast");
}

#[test]
fn the_name_defaults_to_a_slug_of_the_file_name() {
    let tf = parse("# Task\n");
    let o = Overrides {
        repo: Some("https://git.example.com/o/r.git".into()),
        base: Some("main".into()),
        scope: vec!["**".into()],
        ..Overrides::default()
    };
    let t = build(
        Path::new("tasks/Add Verbose_Flag!.md"),
        &tf,
        &o,
        &BTreeMap::new(),
    )
    .expect("valid");
    assert_eq!(t.metadata.name.as_deref(), Some("add-verbose-flag"));
    assert_eq!(slug(Path::new("__.md")), "");
    assert_eq!(slug(Path::new(&format!("{}.md", "a".repeat(80)))).len(), 63);
    let e = build(Path::new("__.md"), &tf, &o, &BTreeMap::new()).expect_err("refused");
    assert_eq!(e[0].origin, Origin::FileName);
    assert!(e[0].to_string().contains("--name"), "{}", e[0]);
}

#[test]
fn an_invalid_front_matter_value_names_the_field_and_its_line() {
    let text = FILE.replace("baseRef: main", "baseRef: feature..x");
    let p = problems(&text, &Overrides::default());
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field, "spec.repo.baseRef");
    assert_eq!(p[0].origin, Origin::Line(5));
    assert!(p[0].message.contains("'..'"), "{}", p[0].message);
    assert!(
        p[0].to_string().starts_with("line 5: spec.repo.baseRef: "),
        "{}",
        p[0]
    );
}

#[test]
fn an_invalid_flag_names_the_flag() {
    let o = Overrides {
        repo: Some("https://user:token@git.example.com/o/r.git".into()),
        scope: vec!["../etc/**".into()],
        priority: Some(5000),
        ..Overrides::default()
    };
    let p = problems(FILE, &o);
    let by_field = |f: &str| {
        p.iter()
            .find(|p| p.field == f)
            .unwrap_or_else(|| panic!("{f}: {p:?}"))
    };
    assert_eq!(by_field("spec.repo.url").origin, Origin::Flag("--repo"));
    assert!(by_field("spec.repo.url").message.contains("credentials"));
    assert_eq!(by_field("spec.scope[0]").origin, Origin::Flag("--scope"));
    assert_eq!(by_field("spec.priority").origin, Origin::Flag("--priority"));
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = "---\nscope: ['/abs', 'a[b']\nreview: sometimes\npublish: {mode: everywhere}\ndependsOn: [Bad_Name, Bad_Name]\nlabels:\n  'bad key!': x\nbudget:\n  costUsd: '-1'\ntimeouts:\n  implement: 48h\n---\n\n";
    let p = problems(text, &Overrides::default());
    let fields: BTreeSet<&str> = p.iter().map(|p| p.field.as_str()).collect();
    for f in [
        "spec.repo.url",
        "spec.repo.baseRef",
        "spec.task",
        "spec.scope[0]",
        "spec.scope[1]",
        "spec.review.mode",
        "spec.publish.mode",
        "spec.dependsOn[0]",
        "spec.dependsOn[1]",
        "spec.budget.costUsd",
        "spec.timeouts.implement",
    ] {
        assert!(fields.contains(f), "{f} missing from {fields:?}");
    }
    assert!(
        p.iter().any(|p| p.field.starts_with("metadata.labels")),
        "{p:?}"
    );
    let review = p
        .iter()
        .find(|p| p.field == "spec.review.mode")
        .expect("review");
    assert_eq!(review.origin, Origin::Line(3));
}

#[test]
fn branch_must_differ_from_base() {
    let o = Overrides {
        branch: Some("main".into()),
        ..Overrides::default()
    };
    let p = problems(FILE, &o);
    assert_eq!(p[0].field, "spec.repo.branch");
    assert_eq!(p[0].origin, Origin::Flag("--branch"));
}

#[test]
fn batch_labels_are_added() {
    let extra = BTreeMap::from([(LABEL_BATCH.to_owned(), "b1".to_owned())]);
    let t = build(
        Path::new("x.md"),
        &parse(FILE),
        &Overrides::default(),
        &extra,
    )
    .expect("valid");
    let labels = t.metadata.labels.expect("labels");
    assert_eq!(labels.get(LABEL_BATCH).map(String::as_str), Some("b1"));
    assert_eq!(labels.get("team").map(String::as_str), Some("cli"));
}

fn schema_at<'a>(schema: &'a serde_json::Value, path: &[&str]) -> &'a serde_json::Value {
    let mut v = schema;
    for p in path {
        v = &v["properties"][p];
    }
    v
}

/// The bounds the CLI checks are the schema's: a change of one fails here.
#[test]
fn bounds_match_the_generated_crd() {
    let crd = serde_json::to_value(hermes_crds::HermesTask::crd()).expect("json");
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let spec = schema_at(root, &["spec"]);
    let prio = schema_at(spec, &["priority"]);
    assert_eq!(prio["minimum"].as_f64(), Some(bounds::PRIORITY.0 as f64));
    assert_eq!(prio["maximum"].as_f64(), Some(bounds::PRIORITY.1 as f64));
    assert_eq!(
        schema_at(spec, &["scope"])["maxItems"].as_u64(),
        Some(bounds::MAX_SCOPE as u64)
    );
    assert_eq!(
        schema_at(spec, &["dependsOn"])["maxItems"].as_u64(),
        Some(bounds::MAX_DEPENDS_ON as u64)
    );
    assert_eq!(
        schema_at(spec, &["review", "instructions"])["maxLength"].as_u64(),
        Some(bounds::MAX_INSTRUCTIONS as u64)
    );
    assert_eq!(
        schema_at(spec, &["task"])["maxLength"].as_u64(),
        Some(MAX_TASK_CHARS as u64)
    );
    let tokens = schema_at(spec, &["budget", "tokens"]);
    assert_eq!(
        tokens["minimum"].as_f64(),
        Some(bounds::BUDGET_TOKENS.0 as f64)
    );
    assert_eq!(
        tokens["maximum"].as_f64(),
        Some(bounds::BUDGET_TOKENS.1 as f64)
    );
    let turns = schema_at(spec, &["budget", "turns"]);
    assert_eq!(
        turns["minimum"].as_f64(),
        Some(f64::from(bounds::BUDGET_TURNS.0))
    );
    assert_eq!(
        turns["maximum"].as_f64(),
        Some(f64::from(bounds::BUDGET_TURNS.1))
    );
}

#[test]
fn label_rules_follow_the_api_server() {
    assert!(label_key("team").is_ok());
    assert!(label_key("hermes.dev/batch").is_ok());
    assert!(label_key("Bad Key").is_err());
    assert!(label_key(&"a".repeat(64)).is_err());
    assert!(label_key("UPPER.example/x").is_err());
    assert!(label_value("").is_ok());
    assert!(label_value("v1.2_3-x").is_ok());
    assert!(label_value("-x").is_err());
}

#[test]
fn a_flag_replaces_an_invalid_front_matter_mode() {
    let text = FILE
        .replace("mode: manual", "mode: sometimes")
        .replace("publish: branch", "publish: everywhere");
    let p = problems(&text, &Overrides::default());
    assert_eq!(p.len(), 2, "{p:?}");
    let o = Overrides {
        review: Some(ReviewMode::Manual),
        publish: Some(PublishMode::Merge),
        ..Overrides::default()
    };
    let t = build(Path::new("x.md"), &parse(&text), &o, &BTreeMap::new()).expect("valid");
    assert_eq!(t.spec.review.mode, ReviewMode::Manual);
    assert_eq!(t.spec.publish.mode, PublishMode::Merge);
}
