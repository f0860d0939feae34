use super::*;
use crate::vectors;

#[test]
fn every_rule_pattern_compiles_and_fits_a_cel_raw_string() {
    for set in [
        &BRANCH_RULES,
        &REPO_URL_RULES,
        &GLOB_RULES,
        &NAME_RULES,
        &IMAGE_RULES,
    ] {
        for rule in set.rules() {
            assert!(regex::Regex::new(rule.pattern).is_ok(), "{}", rule.pattern);
            assert!(!rule.pattern.contains('\''), "{} has a quote", rule.pattern);
        }
        // Forces the lazy compilation, which must not panic.
        let _ = set.first_violation("x");
    }
    for p in [Timeout::PATTERN, Usd::PATTERN] {
        assert!(regex::Regex::new(p).is_ok(), "{p}");
    }
}

#[test]
fn branch_names_follow_check_ref_format() {
    for (value, ok) in vectors::BRANCH_NAMES {
        let got = BranchName::from(*value).validate("spec.repo.baseRef");
        assert_eq!(got.is_ok(), *ok, "{value:?}: {got:?}");
    }
}

#[test]
fn branch_name_errors_name_the_field_and_the_rule() {
    let err = BranchName::from("a..b")
        .validate("spec.repo.branch")
        .expect_err("'..' is refused");
    assert_eq!(
        err.to_string(),
        "spec.repo.branch: must be a git branch name: '..' is not allowed"
    );
}

#[test]
fn repo_urls_allow_only_https_http_ssh_and_scp_like_without_credentials() {
    for (value, ok) in vectors::REPO_URLS {
        let got = RepoUrl::from(*value).validate("spec.repo.url");
        assert_eq!(got.is_ok(), *ok, "{value:?}: {got:?}");
    }
}

#[test]
fn repo_url_with_a_token_is_refused_for_its_credentials() {
    let err = RepoUrl::from("https://x-access-token:abc@git.example.com/o/r.git")
        .validate("spec.repo.url")
        .expect_err("credentials are refused");
    assert!(
        err.to_string().contains("must not embed credentials"),
        "{err}"
    );
}

#[test]
fn option_like_and_helper_urls_are_refused_with_their_own_messages() {
    let dash = RepoUrl::from("--upload-pack=x")
        .validate("u")
        .expect_err("dash");
    assert!(
        dash.to_string().contains("must not start with '-'"),
        "{dash}"
    );
    let ext = RepoUrl::from("ext::sh").validate("u").expect_err("ext");
    assert!(ext.to_string().contains("remote helpers"), "{ext}");
    let file = RepoUrl::from("file:///srv/r")
        .validate("u")
        .expect_err("file");
    assert!(file.to_string().contains("file://"), "{file}");
}

#[test]
fn scope_globs_stay_inside_the_repository() {
    for (value, ok) in vectors::SCOPE_GLOBS {
        let got = ScopeGlob::from(*value).validate("spec.scope[0]");
        assert_eq!(got.is_ok(), *ok, "{value:?}: {got:?}");
    }
}

#[test]
fn scope_glob_syntax_errors_are_caught_in_rust() {
    for value in vectors::SCOPE_GLOB_SYNTAX {
        let err = ScopeGlob::from(*value)
            .validate("spec.scope[0]")
            .expect_err("bad syntax");
        assert!(matches!(err, ValidationError::GlobSyntax { .. }), "{err}");
    }
}

#[test]
fn scope_glob_star_stays_within_one_path_component() {
    let m = ScopeGlob::from("src/*.rs")
        .matcher("s")
        .expect("valid glob");
    assert!(m.is_match("src/lib.rs"));
    assert!(!m.is_match("src/a/lib.rs"));
    let m = ScopeGlob::from("src/**").matcher("s").expect("valid glob");
    assert!(m.is_match("src/a/b/lib.rs"));
    assert!(!m.is_match("tests/x.rs"));
}

#[test]
fn object_names_are_rfc1123_subdomains() {
    for (value, ok) in [
        ("default", true),
        ("git-read.v2", true),
        ("a", true),
        ("Default", false),
        ("-a", false),
        ("a-", false),
        ("a_b", false),
        ("a..b", false),
    ] {
        assert_eq!(ObjectName::from(value).validate("n").is_ok(), ok, "{value}");
    }
}

#[test]
fn image_references_accept_tags_and_digests() {
    let digest = format!(
        "registry.example.com/hermes/agent@sha256:{}",
        "a".repeat(64)
    );
    for (value, ok) in [
        ("hermes/runner:0.1.0", true),
        ("localhost:5000/hermes/agent:dev", true),
        ("registry.example.com/hermes/agent", true),
        (digest.as_str(), true),
        ("hermes/agent:1.0@sha256:abc", false),
        ("Hermes/agent", false),
        ("hermes agent", false),
        ("-hermes", false),
    ] {
        assert_eq!(ImageRef::from(value).validate("i").is_ok(), ok, "{value}");
    }
}

#[test]
fn cidrs_must_parse_and_be_network_addresses() {
    assert!(Cidr::from("10.0.0.0/8").parse("c").is_ok());
    assert!(Cidr::from("2001:db8::/32").parse("c").is_ok());
    assert!(Cidr::from("203.0.113.7/32").parse("c").is_ok());
    let err = Cidr::from("10.1.2.3/8").parse("c").expect_err("host bits");
    assert!(err.to_string().contains("network address"), "{err}");
    for bad in [
        "10.0.0.0",
        "10.0.0.0/33",
        "example.com/8",
        "",
        "10.0.0.0/8 ",
    ] {
        assert!(Cidr::from(bad).parse("c").is_err(), "{bad:?}");
    }
}

#[test]
fn timeouts_parse_hours_minutes_seconds_in_order() {
    let secs = |s: &str| Timeout::from(s).duration("t").map(|d| d.as_secs());
    assert_eq!(secs("90s"), Ok(90));
    assert_eq!(secs("30m"), Ok(1800));
    assert_eq!(secs("1h30m"), Ok(5400));
    assert_eq!(secs("24h"), Ok(86400));
    assert_eq!(secs("1h0m1s"), Ok(3601));
    for bad in [
        "", "0s", "25h", "24h1s", "10", "10x", "30m1h", "1.5h", "-5m", "h",
    ] {
        assert!(secs(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn money_is_exact_decimal_dollars() {
    let m = |s: &str| Usd::from(s).micros("c");
    assert_eq!(m("5"), Ok(5_000_000));
    assert_eq!(m("12.50"), Ok(12_500_000));
    assert_eq!(m("0.000001"), Ok(1));
    assert_eq!(m("100000"), Ok(Usd::MAX_MICROS));
    for bad in [
        "0",
        "0.0",
        "100000.01",
        "1e3",
        "-1",
        "1.",
        ".5",
        "1.0000001",
        "abc",
        "",
    ] {
        assert!(m(bad).is_err(), "{bad:?}");
    }
    assert_eq!(Usd::from_micros(12_500_000).0, "12.5");
    assert_eq!(Usd::from_micros(3_000_000).0, "3");
    assert_eq!(Usd::from_micros(1).0, "0.000001");
}
