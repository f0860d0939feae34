#![allow(clippy::expect_used, clippy::unwrap_used)] // Tests: a failed expectation is the report.

//! Keeps the docs honest.
//!
//! - Every ```` ```yaml ```` block of `docs/*.md` and every YAML file under
//!   `examples/` (recursively) parses. A document that looks like a
//!   Kubernetes object (it has `apiVersion`, `kind`, `metadata` or `spec`)
//!   must be a whole one, and on Tier A every object is *created* (not a dry
//!   run) in a fresh namespace of its own, with the CRDs installed. A block
//!   opts out only by starting with the comment `# fragment`.
//! - `docs/threat-model.md`: every test its threat table cites exists, by
//!   name, in the file the table names, so renaming or deleting a test
//!   breaks the doc check; a row that cites no test is listed under Gaps.
//! - `docs/user-guide.md` names every condition reason the operator can set
//!   (`conditions::reasons` and the step failure reasons of `decide`), so a
//!   new reason cannot skip the troubleshooting table.
//!
//! Only the creation of the objects needs a cluster (Tier A).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hermes_e2e::{TierA, repo_root};
use kube::Resource as _;
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::Scope;
use serde_json::Value;

/// The comment a YAML block starts with to opt out of the checks.
const FRAGMENT: &str = "# fragment";

/// One unit of YAML: an example file, or one fenced block of a doc.
struct Source {
    /// Where it is, for messages: `docs/x.md:12` or `examples/a.yaml`.
    place: String,
    text: String,
    fragment: bool,
}

/// The ```` ```yaml ```` (or `yml`) fenced blocks of a markdown text, with
/// the line each opens on. Indented fences (inside list items) are read
/// with their indentation removed.
fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, bool, String)> = None; // (line, indent, yaml, text)
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.as_mut() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let lang = info.split_whitespace().next().unwrap_or("");
                    open = Some((i + 1, indent, matches!(lang, "yaml" | "yml"), String::new()));
                }
            }
            Some((_, fence_indent, _, text)) => {
                if trimmed.starts_with("```") && trimmed.trim_end().chars().all(|c| c == '`') {
                    let (line_no, _, yaml, text) = open.take().expect("open block");
                    if yaml {
                        blocks.push((line_no, text));
                    }
                } else {
                    let cut = line
                        .char_indices()
                        .take_while(|(n, c)| *n < *fence_indent && *c == ' ')
                        .count();
                    text.push_str(&line[cut..]);
                    text.push('\n');
                }
            }
        }
    }
    blocks
}

fn is_fragment(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with(FRAGMENT))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Every YAML source: the example files (recursively), then every doc's blocks.
fn sources() -> Vec<Source> {
    let root = repo_root();
    let mut out = Vec::new();
    let mut examples = Vec::new();
    files_under(&root.join("examples"), &mut examples);
    examples.retain(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"));
    examples.sort();
    for path in examples {
        let text = std::fs::read_to_string(&path).expect("read example");
        out.push(Source {
            place: relative(&path),
            fragment: is_fragment(&text),
            text,
        });
    }
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    for path in docs {
        let text = std::fs::read_to_string(&path).expect("read doc");
        for (line, block) in yaml_blocks(&text) {
            out.push(Source {
                place: format!("{}:{line}", relative(&path)),
                fragment: is_fragment(&block),
                text: block,
            });
        }
    }
    out
}

/// The documents of a YAML text, without empty ones.
fn documents(text: &str) -> Result<Vec<Value>, serde_yaml::Error> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value: Value = serde::Deserialize::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// Whether a document is (meant as) a Kubernetes object.
fn looks_like_object(doc: &Value) -> bool {
    ["apiVersion", "kind", "metadata", "spec"]
        .iter()
        .any(|k| doc.get(k).is_some())
}

/// What is wrong with a document meant as an object, if anything, before
/// the server sees it.
fn incomplete(doc: &Value) -> Option<String> {
    let missing: Vec<&str> = ["apiVersion", "kind"]
        .into_iter()
        .filter(|k| !doc.get(*k).is_some_and(Value::is_string))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "an object without {}: complete it, or start the block with `{FRAGMENT}`",
            missing.join(" and ")
        ));
    }
    if !doc.pointer("/metadata/name").is_some_and(Value::is_string) {
        return Some("an object without metadata.name".into());
    }
    None
}

#[test]
fn every_yaml_block_and_example_parses_and_objects_are_whole() {
    let sources = sources();
    let mut problems = Vec::new();
    let mut objects = 0;
    for s in &sources {
        let docs = match documents(&s.text) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("{}: not YAML: {e}", s.place));
                continue;
            }
        };
        if s.fragment {
            continue;
        }
        if docs.is_empty() {
            problems.push(format!("{}: an empty YAML block", s.place));
        }
        for doc in docs.iter().filter(|d| looks_like_object(d)) {
            match incomplete(doc) {
                Some(why) => problems.push(format!("{}: {why}", s.place)),
                None => objects += 1,
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The guide and every example are in the set: a broken walk finds nothing.
    for expected in [
        "examples/profile-default.yaml",
        "examples/hello/task.yaml",
        "docs/user-guide.md:",
    ] {
        assert!(
            sources.iter().any(|s| s.place.starts_with(expected)),
            "no YAML from {expected}"
        );
    }
    assert!(objects >= 20, "only {objects} objects found");
}

#[test]
fn the_block_reader_finds_indented_blocks_and_fragments_and_catches_halves() {
    let md = "text\n\n```yaml\na: 1\n```\n\n- item\n\n  ```yaml\n  # fragment\n  spec: {}\n  ```\n\n```sh\nls\n```\n";
    let blocks = yaml_blocks(md);
    assert_eq!(blocks.len(), 2, "{blocks:?}");
    assert_eq!(blocks[0], (3, "a: 1\n".to_owned()));
    assert_eq!(blocks[1].1, "# fragment\nspec: {}\n");
    assert!(!is_fragment(&blocks[0].1) && is_fragment(&blocks[1].1));
    // A spec without apiVersion and kind is half an object.
    let half = documents("spec:\n  scope: [src/**]\n").expect("yaml");
    assert!(looks_like_object(&half[0]));
    assert!(incomplete(&half[0]).is_some());
    let whole = documents("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n").expect("yaml");
    assert_eq!(incomplete(&whole[0]), None);
    // Not an object at all (a scenario file): parsed only.
    let other = documents("description: d\nturns: []\n").expect("yaml");
    assert!(!looks_like_object(&other[0]));
}

/// Creates `obj` in `namespace` as `kubectl create` does: with strict field
/// validation, so a misspelled or misplaced field is refused rather than
/// silently dropped. A Service whose fixed clusterIP another run still holds
/// (a namespace of an earlier run being deleted) is tried again for a while.
async fn create(
    client: &kube::Client,
    ar: &ApiResource,
    namespace: &str,
    obj: &DynamicObject,
) -> Result<(), String> {
    let params = PostParams {
        dry_run: false,
        field_manager: Some(hermes_e2e::TEST_FIELD_MANAGER.into()),
    };
    let body = serde_json::to_vec(obj).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut request = kube::core::Request::new(DynamicObject::url_path(ar, Some(namespace)))
            .create(&params, body.clone())
            .map_err(|e| e.to_string())?;
        let uri = request.uri().to_string();
        let sep = if uri.contains('?') { '&' } else { '?' };
        *request.uri_mut() = format!("{uri}{sep}fieldValidation=Strict")
            .parse()
            .map_err(|e| format!("{e}"))?;
        match client.request::<DynamicObject>(request).await {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s))
                if s.message.contains("already allocated") && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(kube::Error::Api(s)) => return Err(s.message.clone()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[tokio::test]
async fn every_object_in_the_docs_and_examples_is_created_on_tier_a() {
    let Some(cluster) = TierA::connect().await else {
        return;
    };
    cluster.install_crds().await.expect("CRDs install");
    let discovery = kube::Discovery::new(cluster.client.clone())
        .run()
        .await
        .expect("discovery");
    let mut failures = Vec::new();
    let mut created = 0;
    let mut from_guide = 0;
    for source in sources().into_iter().filter(|s| !s.fragment) {
        let docs = documents(&source.text).expect("parsed (checked by the offline test)");
        let objects: Vec<Value> = docs
            .into_iter()
            .filter(|d| d.get("apiVersion").is_some() && d.get("kind").is_some())
            .collect();
        if objects.is_empty() {
            continue;
        }
        // A namespace of its own per file or block: examples reuse names.
        let ns = cluster.namespace("docs").await.expect("namespace");
        for value in objects {
            let mut obj: DynamicObject = match serde_json::from_value(value) {
                Ok(o) => o,
                Err(e) => {
                    failures.push(format!("{}: not an object: {e}", source.place));
                    continue;
                }
            };
            let what = format!(
                "{}: {} {}",
                source.place,
                obj.types.as_ref().map_or("", |t| t.kind.as_str()),
                obj.metadata.name.as_deref().unwrap_or("")
            );
            let Some(gvk) = obj
                .types
                .as_ref()
                .and_then(|t| GroupVersionKind::try_from(t).ok())
            else {
                failures.push(format!("{what}: invalid apiVersion"));
                continue;
            };
            let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
                failures.push(format!("{what}: a kind the server does not serve"));
                continue;
            };
            if caps.scope != Scope::Namespaced {
                failures.push(format!(
                    "{what}: cluster-scoped; show it as a command, or mark the block `{FRAGMENT}`"
                ));
                continue;
            }
            obj.metadata.namespace = Some(ns.name.clone());
            match create(&cluster.client, &ar, &ns.name, &obj).await {
                Ok(()) => {
                    created += 1;
                    if source.place.starts_with("docs/user-guide.md") {
                        from_guide += 1;
                    }
                }
                Err(e) => failures.push(format!("{what}: refused: {e}")),
            }
        }
    }
    eprintln!("created {created} objects, {from_guide} of them from the user guide");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(created >= 20, "created {created} objects");
    assert!(
        from_guide >= 8,
        "created {from_guide} objects from the guide"
    );
}

// --- the threat model ------------------------------------------------------

/// The crates whose tests the threat model may cite.
const CRATES: [&str; 6] = ["operator", "runner", "e2e", "cli", "crds", "results"];

/// One citation: a test name and the file it is said to be in.
#[derive(Debug, PartialEq, Eq)]
struct Citation {
    row: String,
    name: String,
    file: String,
}

/// The threat table's rows: (row id, tests cell). The table is the one whose
/// header has a `test` column; the row id is its first cell.
fn threat_rows(markdown: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    // Inside a table: the index of its tests column, if it has one.
    let mut table: Option<Option<usize>> = None;
    for line in markdown.lines() {
        let line = line.trim();
        if !line.starts_with('|') {
            table = None;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        match table {
            None => {
                table = Some(
                    cells
                        .iter()
                        .position(|c| c.to_ascii_lowercase().starts_with("test")),
                );
            }
            Some(None) => {}
            Some(Some(_)) if cells.iter().all(|c| c.chars().all(|ch| "-: ".contains(ch))) => {}
            Some(Some(i)) => rows.push((
                cells.first().copied().unwrap_or_default().to_owned(),
                cells.get(i).copied().unwrap_or_default().to_owned(),
            )),
        }
    }
    rows
}

/// The citations of a tests cell: `` `name` (path/file.rs) ``. Anything else
/// in backticks that looks like a test name is an error (no file given).
fn citations(row: &str, cell: &str) -> Result<Vec<Citation>, String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = cell.split('`').collect();
    // Odd indices are inside backticks.
    for i in (1..parts.len()).step_by(2) {
        let name = parts[i];
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            continue;
        }
        let after = parts.get(i + 1).copied().unwrap_or_default().trim_start();
        let file = after
            .strip_prefix('(')
            .and_then(|rest| rest.split_once(')'))
            .map(|(f, _)| f.trim())
            .filter(|f| f.ends_with(".rs"));
        match file {
            Some(f) => out.push(Citation {
                row: row.to_owned(),
                name: name.to_owned(),
                file: f.to_owned(),
            }),
            None => {
                return Err(format!(
                    "{row}: `{name}` without its file, as `name` (path.rs)"
                ));
            }
        }
    }
    Ok(out)
}

/// Whether `source` defines the test `name`: `fn name(`, or an entry
/// `name => ...` of a macro that generates named tests (the runner's
/// hostile-volume corpus).
fn defines(source: &str, name: &str) -> bool {
    source.lines().any(|line| {
        let l = line.trim_start();
        let after_fn = l
            .strip_prefix("async fn ")
            .or_else(|| l.strip_prefix("fn "))
            .or_else(|| l.strip_prefix("pub fn "))
            .or_else(|| l.strip_prefix("pub async fn "));
        match after_fn {
            Some(rest) => rest.strip_prefix(name).is_some_and(|r| r.starts_with('(')),
            None => l
                .strip_prefix(name)
                .is_some_and(|r| r.trim_start().starts_with("=>")),
        }
    })
}

/// The problems with the citations of a threat-model text, checked against
/// the files under the repository root `root`.
fn check_threat_model(markdown: &str, root: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let rows = threat_rows(markdown);
    if rows.is_empty() {
        return vec!["no threat table (a table with a tests column)".into()];
    }
    let gaps = markdown
        .split_once("\n## Gaps")
        .map(|(_, rest)| rest.to_owned())
        .unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (row, cell) in &rows {
        if !ids.insert(row.clone()) {
            problems.push(format!("{row}: two rows with this id"));
        }
        let cited = match citations(row, cell) {
            Ok(c) => c,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        if cited.is_empty() {
            // No test: the row must say so and be listed under Gaps.
            let says_none = cell.to_ascii_lowercase().starts_with("none");
            let listed = gaps.contains(&format!("{row}:")) || gaps.contains(&format!("{row} "));
            if !says_none || !listed {
                problems.push(format!(
                    "{row}: cites no test; say `none` and list {row} under ## Gaps"
                ));
            }
        }
        for c in cited {
            let top = c.file.split('/').next().unwrap_or_default();
            if !CRATES.contains(&top) {
                problems.push(format!(
                    "{}: {} is not in a crate of {CRATES:?}",
                    c.row, c.file
                ));
                continue;
            }
            let path = root.join(&c.file);
            match std::fs::read_to_string(&path) {
                Ok(text) if defines(&text, &c.name) => {}
                Ok(_) => problems.push(format!("{}: no test `{}` in {}", c.row, c.name, c.file)),
                Err(e) => problems.push(format!("{}: {}: {e}", c.row, c.file)),
            }
        }
    }
    problems
}

#[test]
fn every_test_the_threat_model_cites_exists_where_it_says() {
    let root = repo_root();
    let text =
        std::fs::read_to_string(root.join("docs/threat-model.md")).expect("docs/threat-model.md");
    let problems = check_threat_model(&text, &root);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let cited: usize = threat_rows(&text)
        .iter()
        .map(|(r, c)| citations(r, c).map(|v| v.len()).unwrap_or(0))
        .sum();
    assert!(cited >= 40, "the table cites {cited} tests");
}

#[test]
fn the_threat_model_check_catches_a_missing_test_a_missing_file_and_an_unlisted_gap() {
    let root = repo_root();
    let table = |cells: &str, gaps: &str| {
        format!("| id | threat | tests |\n|---|---|---|\n{cells}\n\n## Gaps\n\n{gaps}\n")
    };
    // A real test, in its real file: fine (a plain fn, and a macro entry).
    let ok = table(
        "| T1 | x | `every_pod_and_container_is_restricted` (operator/src/builders/tests.rs), `context_rejects_huge_blob` (runner/tests/hostile.rs) |\n| T2 | y | none |",
        "- T2: nothing yet.",
    );
    assert_eq!(check_threat_model(&ok, &root), Vec::<String>::new());
    // Renamed, moved, uncited, unlisted: each one is caught.
    let cases = [
        "| T1 | x | `no_such_test_anywhere` (operator/tests/tier_a.rs) |",
        "| T1 | x | `every_pod_and_container_is_restricted` (operator/tests/tier_a.rs) |",
        "| T1 | x | `every_pod_and_container_is_restricted` |",
        "| T1 | x | `every_pod_and_container_is_restricted` (scripts/x.rs) |",
        "| T1 | x | none |",
        "| T1 | x | to do |",
    ];
    for cells in cases {
        let md = table(cells, "- T9: another row.");
        assert!(
            !check_threat_model(&md, &root).is_empty(),
            "not caught: {cells}"
        );
    }
}

// --- the troubleshooting table ---------------------------------------------

/// The condition reasons the operator can set: the constants of
/// `conditions::reasons` and the step failure reasons `decide` maps.
fn operator_reasons(root: &Path) -> Vec<String> {
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect(p);
    let quoted = |line: &str| -> Option<String> {
        let (_, rest) = line.split_once('"')?;
        let (value, _) = rest.split_once('"')?;
        Some(value.to_owned())
    };
    let conditions = read("operator/src/controller/conditions.rs");
    let reasons = conditions
        .split_once("pub mod reasons")
        .map(|(_, r)| r)
        .expect("a reasons module");
    let mut out: Vec<String> = reasons
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const "))
        .filter_map(quoted)
        .collect();
    let decide = read("operator/src/controller/decide.rs");
    out.extend(
        decide
            .lines()
            .filter(|l| l.trim_start().starts_with("F::") && l.contains("=> \""))
            .filter_map(quoted),
    );
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_condition_reason_the_operator_sets_is_in_the_user_guide() {
    let root = repo_root();
    let reasons = operator_reasons(&root);
    assert!(reasons.len() >= 40, "found only {reasons:?}");
    let guide = std::fs::read_to_string(root.join("docs/user-guide.md")).expect("guide");
    let missing: Vec<&String> = reasons
        .iter()
        .filter(|r| !guide.contains(&format!("`{r}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/user-guide.md does not mention these condition reasons: {missing:?}"
    );
}
