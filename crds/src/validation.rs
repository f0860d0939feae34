//! Validated string types of the API: git branch names, repository URLs, scope
//! globs, CIDRs, durations and money. Each type carries its admission rules into
//! the CRD schema (see [`crate::rules`]) and offers the same check in Rust.
//!
//! Values deserialize leniently (any string): what the server stored was
//! admitted under the schema, and an operator must be able to read, report on
//! and fail a task whose value a later, stricter rule would refuse.

use std::{borrow::Cow, fmt, str::FromStr, sync::LazyLock, time::Duration};

use ipnet::IpNet;
use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use crate::rule_set;
use crate::rules::{PatternRule, RuleSet};

/// Why a value was refused. `field` is the JSON path the API server would name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// A pattern rule (the same one the API server applies) failed.
    #[error("{field}: {message}")]
    Rule {
        /// JSON path of the value.
        field: String,
        /// The rule's message.
        message: &'static str,
    },
    /// A scope glob is not valid glob syntax.
    #[error("{field}: not a valid glob: {reason}")]
    GlobSyntax {
        /// JSON path of the value.
        field: String,
        /// What the glob parser reported.
        reason: String,
    },
    /// A CIDR does not parse, or is not a network address.
    #[error("{field}: {reason}")]
    Cidr {
        /// JSON path of the value.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A duration does not parse or is out of bounds.
    #[error("{field}: {reason}")]
    Duration {
        /// JSON path of the value.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A money amount does not parse.
    #[error("{field}: {reason}")]
    Money {
        /// JSON path of the value.
        field: String,
        /// What is wrong.
        reason: &'static str,
    },
}

fn check_rules(set: &RuleSet, field: &str, value: &str) -> Result<(), ValidationError> {
    match set.first_violation(value) {
        None => Ok(()),
        Some(rule) => Err(ValidationError::Rule {
            field: field.to_owned(),
            message: rule.message,
        }),
    }
}

/// Defines a string newtype whose schema carries a rule set.
macro_rules! validated_string {
    ($(#[$meta:meta])* $name:ident, $rules:ident, min = $min:expr, max = $max:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            /// Shortest accepted length, in characters.
            pub const MIN_LEN: usize = $min;
            /// Longest accepted length, in characters.
            pub const MAX_LEN: usize = $max;

            /// The value as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl JsonSchema for $name {
            fn inline_schema() -> bool {
                true
            }

            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({
                    "type": "string",
                    "minLength": $min,
                    "maxLength": $max,
                    "x-kubernetes-validations": $rules.x_kubernetes_validations(),
                })
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Git branch names: the rules of `git check-ref-format --branch`.

static BRANCH_RULES_LIST: &[PatternRule] = &[
    PatternRule::forbid(
        "^-",
        "must be a git branch name: it must not start with '-'",
    ),
    PatternRule::forbid(
        r"[\x00-\x20\x7f~^:?*\[\\]",
        "must be a git branch name: no spaces, control characters or any of ~ ^ : ? * [ \\",
    ),
    PatternRule::forbid(r"\.\.", "must be a git branch name: '..' is not allowed"),
    PatternRule::forbid(r"@\{", "must be a git branch name: '@{' is not allowed"),
    PatternRule::forbid(
        "^/|/$|//",
        "must be a git branch name: no leading or trailing '/', and no '//'",
    ),
    PatternRule::forbid(
        r"\.$",
        "must be a git branch name: it must not end with '.'",
    ),
    PatternRule::forbid(
        r"(^|/)\.",
        "must be a git branch name: no path component may start with '.'",
    ),
    PatternRule::forbid(
        r"\.lock(/|$)",
        "must be a git branch name: no path component may end with '.lock'",
    ),
    PatternRule::forbid(
        "^(@|HEAD)$",
        "must be a git branch name: '@' and 'HEAD' are reserved",
    ),
];
static BRANCH_RULES: RuleSet = rule_set!(BRANCH_RULES_LIST);

validated_string!(
    /// A git branch name, as `git check-ref-format --branch` accepts it, and not option-like.
    BranchName, BRANCH_RULES, min = 1, max = 255
);

impl BranchName {
    /// Checks the name with the same rules the API server applies.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&BRANCH_RULES, field, &self.0)
    }

    /// The admission rules of this type.
    pub fn rules() -> &'static [PatternRule] {
        BRANCH_RULES.rules()
    }
}

// ---------------------------------------------------------------------------
// Repository URLs.

/// A host: a DNS name or an IPv4 address, or a bracketed IPv6 address.
macro_rules! host {
    () => {
        r"([A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
    };
}
/// Characters of a path: no whitespace or control characters.
macro_rules! path_chars {
    () => {
        r"[^\x00-\x20\x7f]"
    };
}

static REPO_URL_RULES_LIST: &[PatternRule] = &[
    PatternRule::forbid(
        "^-",
        "must be a git URL: it must not start with '-' (it would be read as an option)",
    ),
    PatternRule::forbid(
        r"[\x00-\x20\x7f]",
        "must be a git URL: no spaces or control characters",
    ),
    PatternRule::forbid(
        "^[A-Za-z][A-Za-z0-9+.-]*::",
        "must be a git URL: remote helpers such as 'ext::' are not allowed",
    ),
    PatternRule::require(
        "^(https|http|ssh)://|^[^:/]+:([^/]|/[^/])",
        "must be a git URL with scheme https, http or ssh, or scp-like user@host:path (file://, git:// and local paths are not allowed)",
    ),
    PatternRule::forbid(
        "^https?://[^/]*@|^ssh://[^/@]*:[^/]*@",
        "must not embed credentials (a user or token in an http(s) URL, a password in an ssh URL): put them in the profile's git Secrets",
    ),
    PatternRule::require(
        concat!(
            "^(https?://",
            host!(),
            "(:[0-9]{1,5})?/",
            path_chars!(),
            "+|ssh://([A-Za-z0-9._-]+@)?",
            host!(),
            "(:[0-9]{1,5})?/",
            path_chars!(),
            "+|([A-Za-z0-9._-]+@)?",
            host!(),
            ":/?[^\\x00-\\x20\\x7f:/-]",
            path_chars!(),
            "*)$"
        ),
        "must be a git URL naming a host and a repository path, e.g. https://git.example.com/org/repo.git or git@git.example.com:org/repo.git",
    ),
];
static REPO_URL_RULES: RuleSet = rule_set!(REPO_URL_RULES_LIST);

validated_string!(
    /// A git repository URL: https, http, ssh, or scp-like `user@host:path`, without credentials.
    RepoUrl, REPO_URL_RULES, min = 1, max = 2048
);

impl RepoUrl {
    /// Checks the URL with the same rules the API server applies.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&REPO_URL_RULES, field, &self.0)
    }

    /// The admission rules of this type.
    pub fn rules() -> &'static [PatternRule] {
        REPO_URL_RULES.rules()
    }
}

// ---------------------------------------------------------------------------
// Scope globs.

static GLOB_RULES_LIST: &[PatternRule] = &[
    PatternRule::forbid(
        "^/",
        "must be relative to the repository root: no leading '/'",
    ),
    PatternRule::forbid(
        r"(^|/)\.\.(/|$)",
        "must stay inside the repository: no '..' segments",
    ),
    PatternRule::forbid(
        r"[\x00-\x1f\x7f\\]",
        "must be a repository path: no control characters or backslashes",
    ),
    PatternRule::forbid(
        r"(^|/)\.git(/|$)",
        "must not name git's own files: no '.git' segment",
    ),
];
static GLOB_RULES: RuleSet = rule_set!(GLOB_RULES_LIST);

validated_string!(
    /// A path glob relative to the repository root (`*`, `**`, `?`, `[...]`, `{a,b}`).
    ScopeGlob, GLOB_RULES, min = 1, max = 512
);

impl ScopeGlob {
    /// Checks the glob with the API server's rules, then its syntax (which the
    /// server cannot check).
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&GLOB_RULES, field, &self.0)?;
        self.matcher(field).map(|_| ())
    }

    /// Compiles the glob; `/` separates path components and `*` stays within one.
    pub fn matcher(&self, field: &str) -> Result<globset::GlobMatcher, ValidationError> {
        globset::GlobBuilder::new(&self.0)
            .literal_separator(true)
            .backslash_escape(false)
            .build()
            .map(|g| g.compile_matcher())
            .map_err(|e| ValidationError::GlobSyntax {
                field: field.to_owned(),
                reason: e.kind().to_string(),
            })
    }

    /// The admission rules of this type.
    pub fn rules() -> &'static [PatternRule] {
        GLOB_RULES.rules()
    }
}

validated_string!(
    /// A file path relative to the repository root, inside the repository.
    RepoPath, GLOB_RULES, min = 1, max = 512
);

impl RepoPath {
    /// Checks the path with the same rules the API server applies.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&GLOB_RULES, field, &self.0)
    }
}

// ---------------------------------------------------------------------------
// Kubernetes object names and image references.

static NAME_RULES_LIST: &[PatternRule] = &[PatternRule::require(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
    "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
)];
static NAME_RULES: RuleSet = rule_set!(NAME_RULES_LIST);

validated_string!(
    /// The name of a Kubernetes object in the same namespace (RFC 1123 subdomain).
    ObjectName, NAME_RULES, min = 1, max = 253
);

impl ObjectName {
    /// Checks the name with the same rules the API server applies.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&NAME_RULES, field, &self.0)
    }
}

static IMAGE_RULES_LIST: &[PatternRule] = &[
    PatternRule::forbid(
        r"[\x00-\x20\x7f]",
        "must be an image reference: no spaces or control characters",
    ),
    PatternRule::require(
        r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([a-z0-9._-]*[a-z0-9])?)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$",
        "must be an image reference such as registry.example.com/hermes/agent:1.0 or ...@sha256:<64 hex digits>",
    ),
];
static IMAGE_RULES: RuleSet = rule_set!(IMAGE_RULES_LIST);

validated_string!(
    /// A container image reference, by tag or (in production) by digest.
    ImageRef, IMAGE_RULES, min = 1, max = 512
);

impl ImageRef {
    /// Checks the reference with the same rules the API server applies.
    pub fn validate(&self, field: &str) -> Result<(), ValidationError> {
        check_rules(&IMAGE_RULES, field, &self.0)
    }
}

// ---------------------------------------------------------------------------
// CIDRs.

/// A CIDR (`10.0.0.0/8`, `2001:db8::/32`) naming a network address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cidr(pub String);

impl Cidr {
    /// The CEL rules the API server applies (Kubernetes' CIDR library).
    pub const CEL: &'static [(&'static str, &'static str)] = &[
        (
            "isCIDR(self)",
            "must be a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
        ),
        (
            "!isCIDR(self) || cidr(self) == cidr(self).masked()",
            "must be a network address: the bits after the prefix length must be zero (e.g. 10.0.0.0/8, not 10.1.2.3/8)",
        ),
    ];

    /// Parses and checks the CIDR as the API server does.
    pub fn parse(&self, field: &str) -> Result<IpNet, ValidationError> {
        let net = IpNet::from_str(&self.0).map_err(|_| ValidationError::Cidr {
            field: field.to_owned(),
            reason: Self::CEL[0].1,
        })?;
        if net.trunc() != net {
            return Err(ValidationError::Cidr {
                field: field.to_owned(),
                reason: Self::CEL[1].1,
            });
        }
        Ok(net)
    }
}

impl From<&str> for Cidr {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Cidr {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let rules: Vec<_> = Self::CEL
            .iter()
            .map(|(rule, message)| serde_json::json!({ "rule": rule, "message": message }))
            .collect();
        json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": 64,
            "x-kubernetes-validations": rules,
        })
    }
}

// ---------------------------------------------------------------------------
// Timeouts.

/// A duration in Go syntax restricted to hours, minutes and seconds (`90s`,
/// `30m`, `1h30m`), between one second and 24 hours.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timeout(pub String);

impl Timeout {
    /// The longest timeout any phase may have.
    pub const MAX: Duration = Duration::from_secs(24 * 3600);
    /// The format rule (with at least one digit required besides).
    pub const PATTERN: &'static str = "^([0-9]{1,5}h)?([0-9]{1,5}m)?([0-9]{1,6}s)?$";

    /// Parses the timeout and checks its bounds, as the API server does.
    pub fn duration(&self, field: &str) -> Result<Duration, ValidationError> {
        static RE: LazyLock<Regex> = LazyLock::new(|| {
            #[allow(clippy::expect_used)]
            Regex::new(Timeout::PATTERN).expect("a tested constant")
        });
        let bad = |reason: &str| ValidationError::Duration {
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let caps = RE
            .captures(&self.0)
            .filter(|_| self.0.bytes().any(|b| b.is_ascii_digit()))
            .ok_or_else(|| bad(TIMEOUT_FORMAT_MESSAGE))?;
        let part = |i: usize, unit: u64| -> u64 {
            caps.get(i)
                .and_then(|m| m.as_str()[..m.len() - 1].parse::<u64>().ok())
                .map_or(0, |n| n * unit)
        };
        let d = Duration::from_secs(part(1, 3600) + part(2, 60) + part(3, 1));
        if d.is_zero() || d > Self::MAX {
            return Err(bad(TIMEOUT_RANGE_MESSAGE));
        }
        Ok(d)
    }
}

const TIMEOUT_FORMAT_MESSAGE: &str =
    "must be a duration in hours, minutes and seconds, in that order, such as 90s, 30m or 1h30m";
const TIMEOUT_RANGE_MESSAGE: &str = "must be more than 0s and at most 24h";

impl From<&str> for Timeout {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for Timeout {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Timeout".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 2,
            "maxLength": 20,
            "x-kubernetes-validations": [
                {
                    "rule": format!("self.matches(r'{}') && self.matches(r'[0-9]')", Self::PATTERN),
                    "message": TIMEOUT_FORMAT_MESSAGE,
                },
                {
                    "rule": format!(
                        "!self.matches(r'{}') || !self.matches(r'[0-9]') || (duration(self) > duration('0s') && duration(self) <= duration('24h'))",
                        Self::PATTERN
                    ),
                    "message": TIMEOUT_RANGE_MESSAGE,
                },
            ],
        })
    }
}

// ---------------------------------------------------------------------------
// Money.

/// An amount of US dollars as a decimal string (`"5"`, `"12.50"`), more than
/// zero and at most 100000, with at most six decimals. A string, not a float,
/// so the amount round-trips exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Usd(pub String);

impl Usd {
    /// The format rule.
    pub const PATTERN: &'static str = r"^[0-9]{1,6}(\.[0-9]{1,6})?$";
    const MESSAGE: &'static str = "must be an amount of US dollars such as \"5\" or \"12.50\": more than 0, at most 100000, at most six decimals";
    /// The largest amount accepted, in millionths of a dollar.
    pub const MAX_MICROS: u64 = 100_000 * 1_000_000;

    /// The amount in millionths of a dollar.
    pub fn micros(&self, field: &str) -> Result<u64, ValidationError> {
        let bad = || ValidationError::Money {
            field: field.to_owned(),
            reason: Self::MESSAGE,
        };
        let (whole, frac) = match self.0.split_once('.') {
            Some((w, f)) => (w, f),
            None => (self.0.as_str(), ""),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole)
            || whole.len() > 6
            || (self.0.contains('.') && !digits(frac))
            || frac.len() > 6
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac_micros: u64 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<6}").parse().map_err(|_| bad())?
        };
        let micros = whole * 1_000_000 + frac_micros;
        if micros == 0 || micros > Self::MAX_MICROS {
            return Err(bad());
        }
        Ok(micros)
    }

    /// Formats millionths of a dollar the way this type is written.
    pub fn from_micros(micros: u64) -> Self {
        let whole = micros / 1_000_000;
        let frac = micros % 1_000_000;
        if frac == 0 {
            Self(whole.to_string())
        } else {
            let frac = format!("{frac:06}");
            Self(format!("{whole}.{}", frac.trim_end_matches('0')))
        }
    }
}

impl From<&str> for Usd {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl JsonSchema for Usd {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "Usd".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 13,
            "x-kubernetes-validations": [{
                "rule": format!(
                    "self.matches(r'{}') && double(self) > 0.0 && double(self) <= 100000.0",
                    Self::PATTERN
                ),
                "message": Self::MESSAGE,
            }],
        })
    }
}

#[cfg(test)]
mod tests;
