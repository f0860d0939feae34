//! Credentials in text the pods report: known key formats and high-entropy
//! tokens, found and redacted before the text reaches a task's status or an
//! Event, and (in the review's `context` step) found in the change itself.
//!
//! The formats are those established secret scanners (gitleaks,
//! detect-secrets, GitHub's push protection) match on their fixed prefixes:
//! model API keys, forge and registry tokens, cloud access keys, private
//! keys, JWTs, Hermes' own gateway credentials. What carries no prefix is
//! caught by its entropy: a run of at least [`MIN_TOKEN_CHARS`] characters
//! of a key alphabet that mixes upper case, lower case and digits and whose
//! characters carry at least [`MIN_ENTROPY_BITS`] bits each. Commit ids and
//! other hex (at most 4 bits a character), UUIDs and words do not.
//!
//! A finding names the rule, never the match.

use std::sync::LazyLock;

use regex::Regex;

/// What replaces a credential in redacted text.
pub const REDACTED: &str = "[redacted]";
/// Shortest prefix-less token judged by its entropy.
pub const MIN_TOKEN_CHARS: usize = 32;
/// Least Shannon entropy, in bits per character, of a prefix-less token.
pub const MIN_ENTROPY_BITS: f64 = 4.2;

/// One known credential format.
struct Rule {
    name: &'static str,
    pattern: &'static str,
}

const RULES: [Rule; 17] = [
    Rule {
        name: "anthropic-api-key",
        pattern: r"sk-ant-[A-Za-z0-9_-]{20,}",
    },
    Rule {
        name: "openai-api-key",
        pattern: r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
    },
    Rule {
        name: "github-token",
        pattern: r"gh[pousr]_[A-Za-z0-9]{36,}",
    },
    Rule {
        name: "github-fine-grained-token",
        pattern: r"github_pat_[A-Za-z0-9_]{40,}",
    },
    Rule {
        name: "gitlab-token",
        pattern: r"gl(?:pat|dt|ptt|rt)-[A-Za-z0-9_-]{20,}",
    },
    Rule {
        name: "aws-access-key-id",
        pattern: r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
    },
    Rule {
        name: "google-api-key",
        pattern: r"AIza[0-9A-Za-z_-]{35}",
    },
    Rule {
        name: "slack-token",
        pattern: r"xox[abposr]-[A-Za-z0-9-]{10,}",
    },
    Rule {
        name: "stripe-key",
        pattern: r"(?:sk|rk)_live_[0-9A-Za-z]{20,}",
    },
    Rule {
        name: "npm-token",
        pattern: r"npm_[A-Za-z0-9]{36}",
    },
    Rule {
        name: "pypi-token",
        pattern: r"pypi-AgE[A-Za-z0-9_-]{50,}",
    },
    Rule {
        name: "huggingface-token",
        pattern: r"hf_[A-Za-z]{34}",
    },
    Rule {
        name: "private-key",
        pattern: r"-----BEGIN[A-Z ]{0,20} PRIVATE KEY(?: BLOCK)?-----",
    },
    Rule {
        name: "jwt",
        pattern: r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    },
    Rule {
        name: "hermes-gateway-credential",
        pattern: r"hgw1\.[A-Za-z0-9_.-]{16,}",
    },
    Rule {
        name: "basic-auth-in-url",
        pattern: r"[a-z][a-z0-9+.-]{1,15}://[^\s/@:]{1,128}:[^\s/@]{1,256}@",
    },
    Rule {
        name: "azure-storage-key",
        pattern: r"AccountKey=[A-Za-z0-9+/=]{40,}",
    },
];

static COMPILED: LazyLock<Vec<(&'static str, Regex)>> = LazyLock::new(|| {
    RULES
        .iter()
        .filter_map(|r| Regex::new(r.pattern).ok().map(|re| (r.name, re)))
        .collect()
});

/// A value assigned to a name that says it is secret (`api_key = "..."`,
/// `"password": "..."`, `TOKEN='...'`): the value is the second group.
static ASSIGNED: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(api[_-]?key|secret|token|passw(?:or)?d|credential|private[_-]?key|access[_-]?key)[a-z0-9_-]{0,20}["']?\s*[:=]\s*["']([A-Za-z0-9+/=_.~-]{16,})["']"#,
    )
    .ok()
});

/// Least entropy of a value assigned to a secret-sounding name.
pub const MIN_ASSIGNED_ENTROPY_BITS: f64 = 3.5;

/// Runs of a key alphabet (base64, base64url, base62).
static TOKENS: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{32,}").ok());

/// A credential found in a text: which rule, and where (byte range).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The rule's name (`anthropic-api-key`, `high-entropy-token`, ...).
    pub rule: &'static str,
    /// Byte range of the match in the text.
    pub range: std::ops::Range<usize>,
}

/// Shannon entropy of `s`, in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = [0usize; 256];
    let mut n = 0usize;
    for b in s.bytes() {
        counts[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let total = n as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            #[allow(clippy::cast_precision_loss)]
            let p = *c as f64 / total;
            -p * p.log2()
        })
        .sum()
}

fn high_entropy(token: &str) -> bool {
    token.len() >= MIN_TOKEN_CHARS
        && token.bytes().any(|b| b.is_ascii_uppercase())
        && token.bytes().any(|b| b.is_ascii_lowercase())
        && token.bytes().any(|b| b.is_ascii_digit())
        && entropy(token) >= MIN_ENTROPY_BITS
}

fn overlaps(out: &[Found], r: &std::ops::Range<usize>) -> bool {
    out.iter()
        .any(|f| f.range.start < r.end && r.start < f.range.end)
}

fn known(text: &str, out: &mut Vec<Found>) {
    for (name, re) in COMPILED.iter() {
        for m in re.find_iter(text) {
            if !overlaps(out, &m.range()) {
                out.push(Found {
                    rule: name,
                    range: m.range(),
                });
            }
        }
    }
}

/// Every credential of a known format in `text` (no entropy judgement).
pub fn find_known(text: &str) -> Vec<Found> {
    let mut out = Vec::new();
    known(text, &mut out);
    out.sort_by_key(|f| f.range.start);
    out
}

/// Every credential in a text a pod reports (a path, a summary, a
/// message), in order of position: the known formats, then any
/// high-entropy token; overlapping matches of later rules are left out.
pub fn find(text: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    known(text, &mut out);
    if let Some(tokens) = TOKENS.as_ref() {
        for m in tokens.find_iter(text) {
            if high_entropy(m.as_str()) && !overlaps(&out, &m.range()) {
                out.push(Found {
                    rule: "high-entropy-token",
                    range: m.range(),
                });
            }
        }
    }
    out.sort_by_key(|f| f.range.start);
    out
}

/// Every credential in a line of code or configuration: the known
/// formats, then a value assigned to a secret-sounding name whose entropy
/// is at least [`MIN_ASSIGNED_ENTROPY_BITS`]. Bare high-entropy tokens are
/// not judged here: lock files and checksums are full of them.
pub fn find_in_code(text: &str) -> Vec<Found> {
    let mut out: Vec<Found> = Vec::new();
    known(text, &mut out);
    if let Some(assigned) = ASSIGNED.as_ref() {
        for c in assigned.captures_iter(text) {
            let Some(value) = c.get(2) else { continue };
            if entropy(value.as_str()) >= MIN_ASSIGNED_ENTROPY_BITS
                && !overlaps(&out, &value.range())
            {
                out.push(Found {
                    rule: "assigned-secret",
                    range: value.range(),
                });
            }
        }
    }
    out.sort_by_key(|f| f.range.start);
    out
}

/// Most passes [`redact`] makes before it gives the whole text up.
const MAX_REDACT_PASSES: usize = 16;

/// `text` with every credential replaced by [`REDACTED`]; whether any was.
///
/// The result is a fixed point: redacting it again changes nothing. One
/// pass is not enough for that, because what a match leaves beside it can
/// be judged anew: a run of key characters that overlapped a known key is
/// passed over, and once the key is cut out the rest of the run, no longer
/// diluted by it, can carry enough entropy to count as a token. So the
/// passes repeat until one finds nothing. Each pass with a hit consumes at
/// least one character of the text (`[` and `]` belong to no rule's
/// alphabet, so a replacement is never matched again); a text still
/// changing after [`MAX_REDACT_PASSES`] passes is replaced whole.
pub fn redact(text: &str) -> (String, bool) {
    let mut current = text.to_owned();
    let mut hit = false;
    for _ in 0..MAX_REDACT_PASSES {
        let found = find(&current);
        if found.is_empty() {
            return (current, hit);
        }
        hit = true;
        current = replace(&current, &found);
    }
    if find(&current).is_empty() {
        (current, hit)
    } else {
        (REDACTED.to_owned(), true)
    }
}

/// `text` with each of the `found` ranges (in order, not overlapping)
/// replaced by [`REDACTED`].
fn replace(text: &str, found: &[Found]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for f in found {
        out.push_str(text.get(at..f.range.start).unwrap_or_default());
        out.push_str(REDACTED);
        at = f.range.end;
    }
    out.push_str(text.get(at..).unwrap_or_default());
    out
}

/// Redacts `text` in place; whether anything was.
pub fn redact_in_place(text: &mut String) -> bool {
    let (clean, hit) = redact(text);
    if hit {
        *text = clean;
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys as each format writes them (made up, of the right shape).
    pub const SAMPLES: [(&str, &str); 16] = [
        (
            "anthropic-api-key",
            "sk-ant-api03-Zq3vXw9Lm2Kp7Rt4Ys1Hu6Jb8Nc0Df5Gh2Aa9Bb7Cc",
        ),
        (
            "openai-api-key",
            "sk-proj-Xy7Zq3vW9Lm2Kp7Rt4Ys1Hu6Jb8Nc0Df5Gh2",
        ),
        ("github-token", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
        (
            "github-fine-grained-token",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFG",
        ),
        ("gitlab-token", "glpat-Ab3De6Gh9Jk2Mn5Pq8St"),
        ("aws-access-key-id", "AKIAQ3EGRMSW7LXEXAMP"),
        ("google-api-key", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
        ("slack-token", "xoxb-123456789012-abcdefghij"),
        ("stripe-key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
        ("npm-token", "npm_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"),
        ("huggingface-token", "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh"),
        ("private-key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
        (
            "jwt",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        (
            "hermes-gateway-credential",
            "hgw1.eyJucyI6InRlYW0tYSJ9.Zq3vXw9Lm2Kp7Rt4",
        ),
        ("basic-auth-in-url", "https://x-access-token:s3cr3t-value@"),
        ("high-entropy-token", "Q7mZ2xV9pL4kT8wR1nB6cY3hJ5fD0gSa"),
    ];

    #[test]
    fn every_known_format_is_found_and_named() {
        for (rule, key) in SAMPLES {
            let text = format!("before {key} after");
            let found = find(&text);
            assert_eq!(found.len(), 1, "{rule}: {found:?}");
            assert_eq!(found[0].rule, rule, "{key}");
            let (clean, hit) = redact(&text);
            assert!(hit);
            assert_eq!(clean, format!("before {REDACTED} after"), "{rule}");
        }
    }

    #[test]
    fn a_key_in_a_file_name_is_redacted_and_the_rest_kept() {
        let (clean, hit) =
            redact("src/sk-ant-api03-Zq3vXw9Lm2Kp7Rt4Ys1Hu6Jb8Nc0Df5Gh2Aa9Bb7Cc.txt");
        assert!(hit);
        assert_eq!(clean, "src/[redacted].txt");
    }

    #[test]
    fn ordinary_text_ids_and_paths_are_left_alone() {
        for text in [
            "3b18e512dba79e4c8300dd08aeb37f8e728b8dad",
            "3b18e512dba79e4c8300dd08aeb37f8e728b8dad3b18e512dba79e4c8300dd08",
            "6b1f0c1e-0000-4000-8000-000000000001",
            "src/components/VeryLongComponentNameForTheSettingsPage.tsx",
            "packages/web/src/features/authentication/providers/oauth2",
            "The change adds a --verbose flag and a test; it stays in scope.",
            "hermes/add-verbose-flag",
            "2.1.197 (Claude Code)",
            "refs/heads/hermes/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
            "",
        ] {
            assert_eq!(find(text), vec![], "{text}");
        }
    }

    #[test]
    fn redaction_is_a_fixed_point_when_cutting_a_key_out_leaves_a_token() {
        // The run of key characters around the OpenAI-shaped key overlaps
        // it, so one pass judges only the key; the run's head, no longer
        // diluted by the eights, is a token of its own. (Found by the
        // `results_decode` fuzz target: the operator's status text changed
        // each time it was re-encoded.)
        let text =
            "remote @AAAAAAEE23r456789abc-ef012exit5diffdiffsk-a8888888888888888888888888 end";
        let (once, hit) = redact(text);
        assert!(hit);
        assert_eq!(once, "remote @[redacted][redacted] end");
        assert_eq!(redact(&once), (once.clone(), false));
    }

    #[test]
    fn two_keys_in_one_text_are_both_redacted() {
        let text = "a ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8 b AKIAQ3EGRMSW7LXEXAMP c";
        assert_eq!(redact(text).0, "a [redacted] b [redacted] c");
    }

    #[test]
    fn code_is_judged_by_known_formats_and_secret_sounding_assignments() {
        for line in [
            r#"const TOKEN: &str = "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8";"#,
            r#"api_key = "Zq3vXw9Lm2Kp7Rt4Ys1H""#,
            r#"  "password": "c0rrect-h0rse-Battery-st4ple","#,
            r#"export DB_PASSWORD='s3cr3t-V4lue-9x7q'"#,
            r#"aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY""#,
        ] {
            assert_eq!(find_in_code(line).len(), 1, "{line}");
        }
        for line in [
            // Lock files and checksums: high entropy, no secret name.
            r#""integrity": "sha512-Q7mZ2xV9pL4kT8wR1nB6cY3hJ5fD0gSaQ7mZ2xV9pL4kT8wR1nB6cY3hJ5fD0gSa==","#,
            "checksum = \"3b18e512dba79e4c8300dd08aeb37f8e728b8dad3b18e512dba79e4c8300dd08\"",
            // A secret-sounding name with a placeholder of low entropy.
            r#"password = "aaaaaaaaaaaaaaaaaaaa""#,
            r#"token: "${GITHUB_TOKEN}""#,
            "let token = read_token_from_env();",
        ] {
            assert_eq!(find_in_code(line), vec![], "{line}");
        }
    }

    #[test]
    fn entropy_is_in_bits_per_character() {
        assert!((entropy("aaaa") - 0.0).abs() < 1e-9);
        assert!((entropy("abab") - 1.0).abs() < 1e-9);
        assert!((entropy("0123456789abcdef") - 4.0).abs() < 1e-9);
    }
}
