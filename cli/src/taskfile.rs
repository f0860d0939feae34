//! A markdown task file: optional YAML front matter between `---` lines at
//! the top, then the markdown body, which becomes `spec.task`.
//!
//! ```text
//!   ---                          line 1
//!   repo:                        front matter (YAML): name, repo, scope,
//!     url: https://...           profile, review, publish, priority,
//!     baseRef: main              dependsOn, labels, timeouts, budget
//!   scope: ["src/**"]
//!   ---
//!   # Add a --verbose flag       the body: the agent's prompt
//! ```
//!
//! Every problem found carries where it was set ([`Origin`]): a line of the
//! file, a flag, or the file's name, so an error can say where to look.

use std::collections::BTreeMap;
use std::fmt;

use hermes_crds::shared::Budget;
use hermes_crds::task::PhaseTimeouts;
use serde::Deserialize;

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of the task file (1-based).
    Line(usize),
    /// The task file, where no line applies.
    File,
    /// A command-line flag.
    Flag(&'static str),
    /// The file's name (the default task name).
    FileName,
    /// A built-in default.
    Default,
}

/// One problem with a task, naming the field and where it was set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where the value was set.
    pub origin: Origin,
    /// The field, as the API names it (`spec.repo.baseRef`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A problem with `field`, set at `origin`.
    pub fn new(origin: Origin, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            origin,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let field = &self.field;
        let message = &self.message;
        match &self.origin {
            Origin::Line(n) => write!(f, "line {n}: {field}: {message}"),
            Origin::File | Origin::Default => write!(f, "{field}: {message}"),
            Origin::Flag(flag) => write!(f, "{flag}: {field}: {message}"),
            Origin::FileName => write!(
                f,
                "{field} (from the file name): {message}; set a name with --name or `name:` in the front matter"
            ),
        }
    }
}

/// The front matter's keys. Unknown keys are refused, so a typo is an
/// error rather than a silently ignored setting.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FrontMatter {
    /// The task's name (`metadata.name`).
    pub name: Option<String>,
    /// The repository.
    pub repo: Option<RepoFront>,
    /// Scope globs: a list, or one string.
    pub scope: Option<OneOrMany>,
    /// The HermesProfile.
    pub profile: Option<String>,
    /// `auto`, `manual`, or `{mode, instructions}`.
    pub review: Option<serde_yaml::Value>,
    /// `merge`, `branch`, `none`, or `{mode}`.
    pub publish: Option<serde_yaml::Value>,
    /// Admission priority.
    pub priority: Option<i64>,
    /// Tasks that must have succeeded first: a list, or one string.
    pub depends_on: Option<OneOrMany>,
    /// Labels of the task.
    pub labels: Option<BTreeMap<String, String>>,
    /// Per-phase timeouts.
    pub timeouts: Option<PhaseTimeouts>,
    /// The agent's budget.
    pub budget: Option<Budget>,
}

/// `repo:` in the front matter.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RepoFront {
    /// The git URL.
    pub url: Option<String>,
    /// The base branch.
    pub base_ref: Option<String>,
    /// The task branch.
    pub branch: Option<String>,
}

/// A list of strings, or one string.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One string.
    One(String),
    /// A list.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A parsed task file.
#[derive(Clone, Debug, Default)]
pub struct TaskFile {
    /// The front matter (empty when there is none).
    pub front: FrontMatter,
    /// The front matter's YAML text, for locating fields.
    pub yaml: String,
    /// The file line of the YAML text's first line.
    pub yaml_first_line: usize,
    /// The markdown body.
    pub body: String,
    /// The file line the body starts on.
    pub body_line: usize,
}

impl TaskFile {
    /// Parses a task file's text. Fails with the problems found (a front
    /// matter that is not closed, is not YAML, or has unknown keys).
    pub fn parse(text: &str) -> Result<Self, Vec<Problem>> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let text = text.replace("\r\n", "\n");
        let mut lines = text.split_inclusive('\n');
        let first = lines.next().unwrap_or_default();
        if first.trim_end() != "---" {
            return Ok(Self {
                body: text.trim_start_matches('\n').to_owned(),
                body_line: 1 + leading_newlines(&text),
                ..Self::default()
            });
        }
        let mut yaml = String::new();
        let mut closed_at = None;
        for (i, line) in lines.by_ref().enumerate() {
            if matches!(line.trim_end(), "---" | "...") {
                closed_at = Some(i + 2);
                break;
            }
            yaml.push_str(line);
        }
        let Some(closing_line) = closed_at else {
            return Err(vec![Problem::new(
                Origin::Line(1),
                "front matter",
                "the front matter opened on line 1 is not closed: end it with a line `---`",
            )]);
        };
        let rest: String = lines.collect();
        let front = if yaml.trim().is_empty() {
            FrontMatter::default()
        } else {
            serde_yaml::from_str::<FrontMatter>(&yaml).map_err(|e| {
                let origin = e
                    .location()
                    .map_or(Origin::File, |l| Origin::Line(l.line() + 1));
                vec![Problem::new(origin, "front matter", yaml_message(&e))]
            })?
        };
        Ok(Self {
            front,
            yaml,
            yaml_first_line: 2,
            body: rest.trim_start_matches('\n').to_owned(),
            body_line: closing_line + 1 + leading_newlines(&rest),
        })
    }

    /// The file line where the front matter sets `path` (keys and list
    /// indexes), or of its nearest enclosing key that it does set.
    pub fn locate(&self, path: &[Seg<'_>]) -> Origin {
        locate(&self.yaml, path)
            .map_or(Origin::File, |l| Origin::Line(l + self.yaml_first_line - 1))
    }
}

fn leading_newlines(s: &str) -> usize {
    s.len() - s.trim_start_matches('\n').len()
}

/// serde_yaml's message without its own " at line N column M" suffix (the
/// problem says the file line itself).
fn yaml_message(e: &serde_yaml::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

/// One step of a path in the front matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seg<'a> {
    /// A mapping key.
    Key(&'a str),
    /// A list index.
    Index(usize),
}

/// The 1-based line, in `yaml`, where `path` is set, or where its nearest
/// enclosing key is set. Reads block-style YAML (as front matter is
/// written); a flow-style list (`[a, b]`) locates to its key's line.
pub fn locate(yaml: &str, path: &[Seg<'_>]) -> Option<usize> {
    // (indent, path, opens a block) of the open keys and items, innermost last.
    let mut stack: Vec<(usize, Vec<String>, bool)> = vec![];
    let mut counters: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let want: Vec<String> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => (*k).to_owned(),
            Seg::Index(i) => format!("[{i}]"),
        })
        .collect();
    let mut best: Option<(usize, usize)> = None; // (matched depth, line)
    for (n, raw) in yaml.lines().enumerate() {
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut indent = raw.len() - trimmed.len();
        let mut rest = trimmed;
        let item = rest.starts_with("- ") || rest == "-";
        while let Some((parent_indent, _, opens)) = stack.last() {
            // `key:` followed by `- item` at the same indent is still its block.
            let same_block = *parent_indent == indent && *opens && item;
            if *parent_indent > indent || (*parent_indent == indent && !same_block) {
                stack.pop();
            } else {
                break;
            }
        }
        let mut here: Vec<String> = stack.last().map(|(_, p, _)| p.clone()).unwrap_or_default();
        // Sequence items: `- value` or `- key: value`.
        while let Some(item) = rest
            .strip_prefix("- ")
            .or_else(|| (rest == "-").then_some(""))
        {
            let count = counters.entry(here.clone()).or_insert(0);
            here.push(format!("[{count}]"));
            *count += 1;
            stack.push((indent, here.clone(), false));
            let consumed = rest.len() - item.len();
            indent += consumed + (item.len() - item.trim_start().len());
            rest = item.trim_start();
        }
        if let Some(key) = mapping_key(rest) {
            here.push(key);
            let opens = rest.trim_end().ends_with(':');
            stack.push((indent, here.clone(), opens));
        }
        let depth = here.iter().zip(&want).take_while(|(a, b)| a == b).count();
        if depth == here.len() && best.is_none_or(|(d, _)| depth > d) {
            best = Some((depth, n + 1));
        }
    }
    best.filter(|(d, _)| *d > 0).map(|(_, line)| line)
}

/// The key of a `key: value` or `key:` line.
fn mapping_key(line: &str) -> Option<String> {
    let (key, _) = if let Some(stripped) = line.strip_prefix('"') {
        let end = stripped.find('"')?;
        let after = &stripped[end + 1..];
        after.strip_prefix(':')?;
        (stripped[..end].to_owned(), ())
    } else {
        let colon = line
            .find(": ")
            .or_else(|| line.ends_with(':').then(|| line.len() - 1))?;
        let key = &line[..colon];
        if key.starts_with(['[', '{', '\'']) {
            return None;
        }
        (key.trim().to_owned(), ())
    };
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "---\nname: add-flag\nrepo:\n  url: https://git.example.com/o/r.git\n  baseRef: main\nscope:\n  - src/**\n  - docs/*.md\nreview: manual\nlabels:\n  team: cli\n---\n\n# Add a flag\n\nDone when the tests pass.\n";

    #[test]
    fn front_matter_and_body_are_split_with_their_lines() {
        let f = TaskFile::parse(FILE).expect("parses");
        assert_eq!(f.front.name.as_deref(), Some("add-flag"));
        let repo = f.front.repo.clone().expect("repo");
        assert_eq!(repo.base_ref.as_deref(), Some("main"));
        assert_eq!(
            f.front.scope.clone().map(OneOrMany::into_vec),
            Some(vec!["src/**".to_owned(), "docs/*.md".to_owned()])
        );
        assert!(f.body.starts_with("# Add a flag"));
        assert_eq!(f.body_line, 14);
    }

    #[test]
    fn fields_are_located_on_their_lines() {
        let f = TaskFile::parse(FILE).expect("parses");
        assert_eq!(
            f.locate(&[Seg::Key("repo"), Seg::Key("baseRef")]),
            Origin::Line(5)
        );
        assert_eq!(
            f.locate(&[Seg::Key("scope"), Seg::Index(1)]),
            Origin::Line(8)
        );
        assert_eq!(f.locate(&[Seg::Key("review")]), Origin::Line(9));
        assert_eq!(
            f.locate(&[Seg::Key("labels"), Seg::Key("team")]),
            Origin::Line(11)
        );
        // Not set: the nearest enclosing key, or the file.
        assert_eq!(
            f.locate(&[Seg::Key("repo"), Seg::Key("branch")]),
            Origin::Line(3)
        );
        assert_eq!(f.locate(&[Seg::Key("priority")]), Origin::File);
    }

    #[test]
    fn flow_lists_locate_to_their_key() {
        let f = TaskFile::parse("---\nscope: [a, b]\ndependsOn:\n- x\n- y\n---\nbody\n")
            .expect("parses");
        assert_eq!(
            f.locate(&[Seg::Key("scope"), Seg::Index(1)]),
            Origin::Line(2)
        );
        assert_eq!(
            f.locate(&[Seg::Key("dependsOn"), Seg::Index(1)]),
            Origin::Line(5)
        );
    }

    #[test]
    fn a_file_without_front_matter_is_all_body() {
        let f = TaskFile::parse("# Task\n\nDo it.\n").expect("parses");
        assert_eq!(f.body, "# Task\n\nDo it.\n");
        assert_eq!(f.body_line, 1);
        assert!(f.front.name.is_none());
    }

    #[test]
    fn an_unclosed_front_matter_is_refused_at_line_one() {
        let e = TaskFile::parse("---\nname: x\n# body\n").expect_err("refused");
        assert_eq!(e[0].origin, Origin::Line(1));
        assert!(e[0].message.contains("not closed"), "{}", e[0].message);
    }

    #[test]
    fn unknown_keys_and_bad_yaml_name_the_file_line() {
        let e = TaskFile::parse("---\nname: x\nreop:\n  url: u\n---\nbody\n").expect_err("refused");
        assert_eq!(e[0].origin, Origin::Line(3), "{e:?}");
        assert!(
            e[0].message.contains("unknown field `reop`"),
            "{}",
            e[0].message
        );
        let e = TaskFile::parse("---\nname: x\npriority: high\n---\nbody\n").expect_err("refused");
        assert_eq!(e[0].origin, Origin::Line(3), "{e:?}");
        let e = TaskFile::parse("---\nname: [x\n---\nbody\n").expect_err("refused");
        assert!(matches!(e[0].origin, Origin::Line(_)), "{e:?}");
    }

    #[test]
    fn crlf_and_bom_are_tolerated() {
        let f = TaskFile::parse("\u{feff}---\r\nname: x\r\n---\r\nbody\r\n").expect("parses");
        assert_eq!(f.front.name.as_deref(), Some("x"));
        assert_eq!(f.body, "body\n");
    }
}
