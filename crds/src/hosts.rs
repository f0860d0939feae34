//! Egress by host name: the rules a profile lists per phase, and the one
//! matching function the gateway's proxy (which host may this connection
//! reach?) and the operator's narrowing (does a task's rule lie inside its
//! profile's?) both use.
//!
//! A name is compared in its ASCII form (IDNA), lower case, without a
//! trailing dot. `*.example.com` matches every name below `example.com`
//! (`a.example.com`, `a.b.example.com`), never `example.com` itself.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// Longest host name, in characters.
pub const MAX_HOST_LEN: usize = 253;

/// A host name (`packages.example.com`) or a wildcard over the names below a
/// domain (`*.files.example.com`). Letters, digits, hyphens and dots; no
/// address literals, no ports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HostPattern(pub String);

impl HostPattern {
    /// The format rule, as the API server applies it.
    pub const PATTERN: &'static str = r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?$";
    const MESSAGE: &'static str = "must be a host name such as packages.example.com, or *. followed by one (*.files.example.com): letters, digits, hyphens and dots, no address, no port";

    /// Whether the value is a well-formed pattern (the API server's rule).
    pub fn is_valid(&self) -> bool {
        self.0.len() <= MAX_HOST_LEN
            && regex::Regex::new(Self::PATTERN).is_ok_and(|r| r.is_match(&self.0))
    }

    /// The pattern's domain in canonical form, and whether it is a wildcard.
    fn canonical(&self) -> Option<(String, bool)> {
        let (rest, wildcard) = match self.0.strip_prefix("*.") {
            Some(rest) => (rest, true),
            None => (self.0.as_str(), false),
        };
        canonical_host(rest).map(|c| (c, wildcard))
    }

    /// Whether the host `name` (as a client wrote it) matches this pattern.
    pub fn matches(&self, name: &str) -> bool {
        let (Some((domain, wildcard)), Some(name)) = (self.canonical(), canonical_host(name))
        else {
            return false;
        };
        if wildcard {
            name.len() > domain.len() + 1
                && name.ends_with(&domain)
                && name.as_bytes()[name.len() - domain.len() - 1] == b'.'
        } else {
            name == domain
        }
    }

    /// Whether every name this pattern matches, `outer` matches too.
    pub fn within(&self, outer: &HostPattern) -> bool {
        let (Some((inner, inner_wild)), Some((_, outer_wild))) =
            (self.canonical(), outer.canonical())
        else {
            return false;
        };
        match (inner_wild, outer_wild) {
            (false, _) => outer.matches(&inner),
            // `*.a.b` lies inside `*.b` when `a.b` is below `b` or is `b`.
            (true, true) => {
                outer.matches(&inner) || outer.canonical().is_some_and(|(o, _)| o == inner)
            }
            (true, false) => false,
        }
    }
}

impl JsonSchema for HostPattern {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "HostPattern".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_HOST_LEN,
            "x-kubernetes-validations": [{
                "rule": format!("self.matches(r'{}')", Self::PATTERN),
                "message": Self::MESSAGE,
            }],
        })
    }
}

/// A host name in the form rules compare: IDNA's ASCII form, lower case,
/// no trailing dot. `None` for what is not a host name (an address literal,
/// a port, an empty label, characters IDNA refuses).
pub fn canonical_host(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > MAX_HOST_LEN || name.starts_with('[') {
        return None;
    }
    let ascii = idna::domain_to_ascii_strict(name).ok()?;
    if ascii.is_empty() || ascii.split('.').any(str::is_empty) {
        return None;
    }
    // An IPv4 literal (all-numeric last label) is an address, not a name.
    let last = ascii.rsplit('.').next().unwrap_or_default();
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(ascii)
}

/// One host name (or wildcard) a phase may reach through the gateway's
/// egress proxy, and on which ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRule {
    /// The host name (`packages.example.com`) or `*.` and a domain
    /// (`*.files.example.com`: every name below it, not the domain itself).
    /// Compared without case, in IDNA's ASCII form, trailing dot ignored.
    pub name: HostPattern,
    /// Destination ports; default `[443]`.
    #[serde(default = "default_host_ports")]
    #[schemars(length(min = 1, max = 16), inner(range(min = 1, max = 65535)))]
    pub ports: Vec<i32>,
}

fn default_host_ports() -> Vec<i32> {
    vec![443]
}

impl HostRule {
    /// Whether this rule lets a connection to `host`:`port` through.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        self.ports.contains(&i32::from(port)) && self.name.matches(host)
    }

    /// Whether everything this rule allows, `outer` allows too.
    pub fn within(&self, outer: &HostRule) -> bool {
        self.name.within(&outer.name) && self.ports.iter().all(|p| outer.ports.contains(p))
    }
}

/// Whether any of `rules` lets `host`:`port` through.
pub fn allowed(rules: &[HostRule], host: &str, port: u16) -> bool {
    rules.iter().any(|r| r.allows(host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        HostPattern(s.into())
    }

    fn rule(name: &str, ports: &[i32]) -> HostRule {
        HostRule {
            name: p(name),
            ports: ports.to_vec(),
        }
    }

    #[test]
    fn exact_names_match_without_case_and_trailing_dot() {
        let r = p("registry.npmjs.org");
        for ok in [
            "registry.npmjs.org",
            "REGISTRY.npmjs.ORG",
            "registry.npmjs.org.",
        ] {
            assert!(r.matches(ok), "{ok}");
        }
        for no in [
            "npmjs.org",
            "x.registry.npmjs.org",
            "registry.npmjs.org.evil.com",
            "registry-npmjs.org",
            "",
            ".",
            "registry.npmjs.org..",
        ] {
            assert!(!r.matches(no), "{no}");
        }
        assert!(p("registry.npmjs.org.").matches("registry.npmjs.org"));
    }

    #[test]
    fn wildcards_match_names_below_never_the_domain_or_lookalikes() {
        let r = p("*.pythonhosted.org");
        for ok in ["files.pythonhosted.org", "a.b.PYTHONHOSTED.org."] {
            assert!(r.matches(ok), "{ok}");
        }
        for no in [
            "pythonhosted.org",
            "evilpythonhosted.org",
            "files.pythonhosted.org.evil",
            "*.pythonhosted.org",
        ] {
            assert!(!r.matches(no), "{no}");
        }
    }

    #[test]
    fn names_compare_in_their_idna_ascii_form() {
        let r = p("xn--bcher-kva.example");
        assert!(r.matches("bücher.example"));
        assert!(r.matches("BÜCHER.example"));
        assert!(!p("bucher.example").matches("bücher.example"));
        assert!(p("*.xn--bcher-kva.example").matches("www.bücher.example"));
    }

    #[test]
    fn addresses_and_junk_are_never_names() {
        for no in [
            "10.0.0.1",
            "169.254.169.254",
            "[::1]",
            "::1",
            "a..b",
            "host:443",
            "a b",
            "exa_mple.com",
        ] {
            assert_eq!(canonical_host(no), None, "{no}");
            assert!(!p("*.com").matches(no), "{no}");
        }
    }

    #[test]
    fn the_schema_pattern_refuses_what_is_not_a_host() {
        for ok in [
            "registry.npmjs.org",
            "*.pythonhosted.org",
            "github.com",
            "localhost",
            "Api.Anthropic.com.",
            "xn--bcher-kva.example",
        ] {
            assert!(p(ok).is_valid(), "{ok}");
        }
        for no in [
            "",
            "*",
            "*.",
            "a.*.com",
            "10.0.0.1",
            "host:443",
            "-a.com",
            "a-.com",
            "a..com",
            "**.com",
            "bücher.example",
            &"a".repeat(254),
        ] {
            assert!(!p(no).is_valid(), "{no}");
        }
    }

    #[test]
    fn rules_allow_their_ports_only() {
        let rules = [rule("github.com", &[443, 22]), rule("*.npmjs.org", &[443])];
        assert!(allowed(&rules, "github.com", 22));
        assert!(allowed(&rules, "registry.npmjs.org", 443));
        assert!(!allowed(&rules, "registry.npmjs.org", 80));
        assert!(!allowed(&rules, "gitlab.com", 443));
    }

    #[test]
    fn a_rule_lies_within_another_only_when_it_allows_no_more() {
        let outer = rule("*.npmjs.org", &[443, 80]);
        assert!(rule("registry.npmjs.org", &[443]).within(&outer));
        assert!(rule("*.registry.npmjs.org", &[80]).within(&outer));
        assert!(rule("*.npmjs.org", &[443]).within(&outer));
        assert!(!rule("npmjs.org", &[443]).within(&outer));
        assert!(!rule("registry.npmjs.org", &[8443]).within(&outer));
        assert!(!rule("*.org", &[443]).within(&outer));
        let exact = rule("github.com", &[443]);
        assert!(rule("GitHub.com.", &[443]).within(&exact));
        assert!(!rule("*.github.com", &[443]).within(&exact));
    }
}
