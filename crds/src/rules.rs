//! String rules written once and enforced twice: as CEL `x-kubernetes-validations`
//! by the API server at admission, and in Rust by the operator and the CLI.
//!
//! Each rule is a regular expression that a value must, or must not, match. The
//! dialect is the common subset of RE2 (what CEL's `matches()` runs) and the
//! `regex` crate (no look-around, no back-references), so the server and the
//! Rust check agree by construction; the Tier A tests then prove they do on the
//! same table of cases.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Value, json};

/// One rule on a string value.
#[derive(Debug, Clone, Copy)]
pub struct PatternRule {
    /// An RE2-compatible pattern, used unanchored as CEL's `matches()` does.
    pub pattern: &'static str,
    /// `true`: the value must match. `false`: the value must not match.
    pub must_match: bool,
    /// What the API server says when the rule fails; the server prefixes the field path.
    pub message: &'static str,
}

impl PatternRule {
    /// A rule the value must match.
    pub const fn require(pattern: &'static str, message: &'static str) -> Self {
        Self {
            pattern,
            must_match: true,
            message,
        }
    }

    /// A rule the value must not match.
    pub const fn forbid(pattern: &'static str, message: &'static str) -> Self {
        Self {
            pattern,
            must_match: false,
            message,
        }
    }

    /// The CEL expression for this rule. Patterns are written as CEL raw strings,
    /// so they must not contain a single quote (checked by a unit test).
    pub fn cel(&self) -> String {
        let call = format!("self.matches(r'{}')", self.pattern);
        if self.must_match {
            call
        } else {
            format!("!{call}")
        }
    }
}

/// A named set of rules with its compiled regexes, evaluated in order.
pub struct RuleSet {
    rules: &'static [PatternRule],
    compiled: LazyLock<Vec<Regex>, fn() -> Vec<Regex>>,
}

impl RuleSet {
    /// A rule set over `rules`; `compile` must compile exactly those patterns
    /// (use [`rule_set!`](crate::rule_set)).
    pub const fn new(rules: &'static [PatternRule], compile: fn() -> Vec<Regex>) -> Self {
        Self {
            rules,
            compiled: LazyLock::new(compile),
        }
    }

    /// The rules, in evaluation order.
    pub fn rules(&self) -> &'static [PatternRule] {
        self.rules
    }

    /// The first rule `value` breaks, if any.
    pub fn first_violation(&self, value: &str) -> Option<&'static PatternRule> {
        self.rules
            .iter()
            .zip(self.compiled.iter())
            .find(|(rule, re)| re.is_match(value) != rule.must_match)
            .map(|(rule, _)| rule)
    }

    /// The rules as `x-kubernetes-validations` entries.
    pub fn x_kubernetes_validations(&self) -> Value {
        Value::Array(
            self.rules
                .iter()
                .map(|r| json!({ "rule": r.cel(), "message": r.message }))
                .collect(),
        )
    }
}

/// Appends CEL rules (`(rule, message)`, optionally with a `fieldPath` the
/// server reports the error under) to a schema's `x-kubernetes-validations`.
pub fn add_cel(schema: &mut schemars::Schema, rules: &[CelRule]) {
    let entries = rules.iter().map(|r| {
        let mut v = json!({ "rule": r.rule, "message": r.message });
        if let (Some(path), Some(obj)) = (r.field_path, v.as_object_mut()) {
            obj.insert("fieldPath".into(), Value::String(path.to_owned()));
        }
        v
    });
    if let Some(obj) = schema.as_object_mut() {
        let list = obj
            .entry("x-kubernetes-validations")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = list {
            list.extend(entries);
        }
    }
}

/// A CEL rule on an object, for [`add_cel`].
#[derive(Debug, Clone)]
pub struct CelRule {
    /// The CEL expression; `self` is the object, `oldSelf` its stored version.
    pub rule: String,
    /// What the API server says when the rule fails.
    pub message: &'static str,
    /// The field the server names in the error, relative to the object (`.task`).
    pub field_path: Option<&'static str>,
}

impl CelRule {
    /// A rule reported against the object itself.
    pub fn new(rule: impl Into<String>, message: &'static str) -> Self {
        Self {
            rule: rule.into(),
            message,
            field_path: None,
        }
    }

    /// Reports the error against `path` (relative, e.g. `.task`).
    pub fn at(mut self, path: &'static str) -> Self {
        self.field_path = Some(path);
        self
    }
}

/// Compiles a `&'static [PatternRule]` into a [`RuleSet`]. The patterns are
/// constants of this crate, and `every_rule_pattern_compiles` proves each one
/// compiles, so the `expect` cannot fire on anything a user controls.
#[macro_export]
macro_rules! rule_set {
    ($rules:expr) => {
        $crate::rules::RuleSet::new($rules, || {
            #[allow(clippy::expect_used)]
            $rules
                .iter()
                .map(|r| regex::Regex::new(r.pattern).expect("rule patterns are tested constants"))
                .collect()
        })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cel_of_a_forbidding_rule_negates_matches() {
        let r = PatternRule::forbid(r"\.\.", "no dots");
        assert_eq!(r.cel(), r"!self.matches(r'\.\.')");
        let r = PatternRule::require("^a", "starts with a");
        assert_eq!(r.cel(), "self.matches(r'^a')");
    }

    #[test]
    fn first_violation_reports_rules_in_order() {
        static RULES: &[PatternRule] = &[
            PatternRule::forbid("x", "no x"),
            PatternRule::require("^a", "starts with a"),
        ];
        static SET: RuleSet = rule_set!(RULES);
        assert!(SET.first_violation("abc").is_none());
        assert_eq!(SET.first_violation("bx").map(|r| r.message), Some("no x"));
        assert_eq!(
            SET.first_violation("b").map(|r| r.message),
            Some("starts with a")
        );
    }
}
