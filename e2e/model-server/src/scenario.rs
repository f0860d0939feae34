//! Scenario files: what the scripted model says, turn by turn.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::Error;

/// The scenarios checked in under `e2e/scenarios/`, compiled into the binary
/// so it needs no files at run time (a `--scenarios DIR` adds to them).
const BUILTIN: &[(&str, &str)] = &[
    (
        "implementer-happy",
        include_str!("../../scenarios/implementer-happy.yaml"),
    ),
    (
        "implementer-network-probe",
        include_str!("../../scenarios/implementer-network-probe.yaml"),
    ),
    (
        "reviewer-approve",
        include_str!("../../scenarios/reviewer-approve.yaml"),
    ),
    (
        "reviewer-reject",
        include_str!("../../scenarios/reviewer-reject.yaml"),
    ),
];

/// One scripted conversation: the assistant messages to return, in order.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario is for (free text, not sent).
    #[serde(default)]
    pub description: String,
    /// The assistant turns; turn `n` answers a request whose history holds
    /// `n` assistant messages.
    pub turns: Vec<Turn>,
}

/// One assistant message.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// Its content blocks, in order.
    pub content: Vec<Block>,
    /// `end_turn` or `tool_use`; when omitted, `tool_use` if the turn has a
    /// tool call, else `end_turn`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// The usage to report for this message.
    #[serde(default)]
    pub usage: Usage,
}

impl Turn {
    /// The stop reason to report.
    pub fn stop_reason(&self) -> &str {
        match &self.stop_reason {
            Some(r) => r,
            None if self
                .content
                .iter()
                .any(|b| matches!(b, Block::ToolUse { .. })) =>
            {
                "tool_use"
            }
            None => "end_turn",
        }
    }
}

/// A content block of an assistant message.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    /// Plain text.
    Text {
        /// The text; `{{cwd}}` is replaced (see [`Vars`]).
        text: String,
    },
    /// A tool call.
    ToolUse {
        /// The tool's name as the CLI knows it (`Read`, `Edit`, `Bash`, ...).
        name: String,
        /// The tool's input; `{{cwd}}` is replaced in every string in it.
        input: Value,
    },
}

/// The token counts reported for one message. The CLI adds these up and
/// prices them, so a scenario fixes the run's usage and cost exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Uncached input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Input tokens written to the prompt cache.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// Input tokens read from the prompt cache.
    #[serde(default)]
    pub cache_read_input_tokens: u64,
}

impl Usage {
    /// The sum of the usage of every turn of a scenario.
    pub fn total<'a>(turns: impl IntoIterator<Item = &'a Turn>) -> Usage {
        turns.into_iter().fold(Usage::default(), |a, t| Usage {
            input_tokens: a.input_tokens + t.usage.input_tokens,
            output_tokens: a.output_tokens + t.usage.output_tokens,
            cache_creation_input_tokens: a.cache_creation_input_tokens
                + t.usage.cache_creation_input_tokens,
            cache_read_input_tokens: a.cache_read_input_tokens + t.usage.cache_read_input_tokens,
        })
    }
}

/// Values taken from the request and substituted into a turn before it is
/// sent: `{{cwd}}`, the working directory the CLI states in its system prompt
/// (tools such as Read and Edit want absolute paths).
#[derive(Debug, Clone, Default)]
pub struct Vars {
    /// The CLI's working directory, if the request states it.
    pub cwd: Option<String>,
}

impl Vars {
    fn apply(&self, s: &str) -> String {
        match &self.cwd {
            Some(cwd) => s.replace("{{cwd}}", cwd),
            None => s.to_owned(),
        }
    }

    fn apply_value(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.apply(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.apply_value(x)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| (k.clone(), self.apply_value(x)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// The turn with every `{{cwd}}` replaced.
    pub fn render(&self, turn: &Turn) -> Turn {
        Turn {
            content: turn
                .content
                .iter()
                .map(|b| match b {
                    Block::Text { text } => Block::Text {
                        text: self.apply(text),
                    },
                    Block::ToolUse { name, input } => Block::ToolUse {
                        name: name.clone(),
                        input: self.apply_value(input),
                    },
                })
                .collect(),
            stop_reason: turn.stop_reason.clone(),
            usage: turn.usage,
        }
    }
}

/// The scenarios a server can play, by name.
#[derive(Debug, Clone, Default)]
pub struct Scenarios {
    by_name: BTreeMap<String, Scenario>,
}

impl Scenarios {
    /// The scenarios checked in under `e2e/scenarios/`.
    pub fn builtin() -> Result<Self, Error> {
        let mut s = Self::default();
        for (name, text) in BUILTIN {
            s.insert(name, parse(name, text)?);
        }
        Ok(s)
    }

    /// Adds (or replaces) every `*.yaml`, `*.yml` and `*.json` file of `dir`,
    /// named by its file stem.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), Error> {
        let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?
                .path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if !matches!(ext, "yaml" | "yml" | "json") || !path.is_file() {
                continue;
            }
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let scenario = parse(name, &text)?;
            self.insert(name, scenario);
        }
        Ok(())
    }

    /// Adds (or replaces) one scenario.
    pub fn insert(&mut self, name: &str, scenario: Scenario) {
        self.by_name.insert(name.to_owned(), scenario);
    }

    /// The scenario of that name.
    pub fn get(&self, name: &str) -> Option<&Scenario> {
        self.by_name.get(name)
    }

    /// Every scenario's name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }
}

/// Parses one scenario file (YAML, of which JSON is a subset).
pub fn parse(name: &str, text: &str) -> Result<Scenario, Error> {
    let scenario: Scenario = serde_yaml::from_str(text).map_err(|source| Error::Scenario {
        name: name.to_owned(),
        source,
    })?;
    if scenario.turns.is_empty() {
        return Err(Error::EmptyScenario(name.to_owned()));
    }
    Ok(scenario)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn builtin_scenarios_parse_and_end_their_conversation() {
        let s = Scenarios::builtin().unwrap();
        for name in s.names() {
            let sc = s.get(name).unwrap();
            let last = sc.turns.last().unwrap();
            assert_eq!(last.stop_reason(), "end_turn", "{name}");
            for t in &sc.turns[..sc.turns.len() - 1] {
                assert_eq!(t.stop_reason(), "tool_use", "{name}");
            }
        }
        assert_eq!(s.names().count(), BUILTIN.len());
    }

    #[test]
    fn cwd_is_substituted_in_nested_tool_input() {
        let turn = Turn {
            content: vec![Block::ToolUse {
                name: "Read".into(),
                input: serde_json::json!({"file_path": "{{cwd}}/a", "n": [ "{{cwd}}" ], "k": 1}),
            }],
            stop_reason: None,
            usage: Usage::default(),
        };
        let vars = Vars {
            cwd: Some("/w".into()),
        };
        let Block::ToolUse { input, .. } = &vars.render(&turn).content[0] else {
            panic!("not a tool call");
        };
        assert_eq!(
            input,
            &serde_json::json!({"file_path": "/w/a", "n": ["/w"], "k": 1})
        );
    }
}
