//! Scrubbing text that leaves the pod: credentials in URLs, the literal
//! secret values, control characters.

use base64::Engine as _;

/// Removes secrets from texts. Built from the credentials of the step.
#[derive(Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl std::fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Scrubber({} secrets)", self.secrets.len())
    }
}

/// What replaces a secret.
pub const REDACTED: &str = "[redacted]";

impl Scrubber {
    /// A scrubber for these secret values (and their basic-auth encoding
    /// when a user and password are given).
    pub fn new(secrets: impl IntoIterator<Item = String>, basic: Option<(&str, &str)>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        if let Some((user, password)) = basic {
            secrets.push(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")),
            );
        }
        // Each line of a multi-line secret (a private key) on its own, too.
        let lines: Vec<String> = secrets
            .iter()
            .flat_map(|s| {
                s.lines()
                    .map(str::trim)
                    .filter(|l| l.len() >= 8)
                    .map(str::to_owned)
            })
            .collect();
        secrets.extend(lines);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// This scrubber with the secrets of `other` too (a step that holds git
    /// credentials and a proxy credential scrubs both).
    pub fn with(mut self, other: Scrubber) -> Self {
        self.secrets.extend(other.secrets);
        // Longest first (a secret containing another is replaced whole);
        // equal ones next to each other for dedup.
        self.secrets
            .sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        self.secrets.dedup();
        self
    }

    /// The text without secrets, URL userinfo or control characters.
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        let out = strip_userinfo(&out);
        out.chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    }
}

/// Removes `user:password@` from every `scheme://user:password@host` in the text.
pub fn strip_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => out.push_str(&authority[at + 1..]),
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_userinfo_secrets_and_control_characters() {
        let s = Scrubber::new(["hunter22".to_owned()], Some(("alice", "hunter22")));
        let text = "failed https://alice:hunter22@git.example/repo.git: bad hunter22\u{1b}[31m \
                    Authorization: Basic YWxpY2U6aHVudGVyMjI=";
        let out = s.scrub(text);
        assert!(!out.contains("hunter22"), "{out}");
        assert!(!out.contains("alice:"), "{out}");
        assert!(!out.contains("YWxpY2U6aHVudGVyMjI="), "{out}");
        assert!(!out.contains('\u{1b}'), "{out}");
        assert!(out.contains("https://git.example/repo.git"), "{out}");
    }

    #[test]
    fn a_merged_scrubber_removes_the_secrets_of_both() {
        let s = Scrubber::new(["git-password-1".to_owned()], None)
            .with(Scrubber::new(["proxy-token-2".to_owned()], None));
        let out = s.scrub("git-password-1 and proxy-token-2");
        assert_eq!(out, format!("{REDACTED} and {REDACTED}"));
    }

    #[test]
    fn scrub_removes_each_line_of_a_private_key() {
        let key = "-----BEGIN KEY-----\nAAAABBBBCCCCDDDD\nEEEEFFFFGGGG\n-----END KEY-----\n";
        let s = Scrubber::new([key.to_owned()], None);
        let out = s.scrub("oops EEEEFFFFGGGG leaked");
        assert_eq!(out, format!("oops {REDACTED} leaked"));
    }
}
