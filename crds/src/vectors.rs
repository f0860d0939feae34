//! Shared test vectors for the string rules: each case is checked against the
//! Rust validators in unit tests and against the API server's CEL rules in the
//! Tier A tests, so the two cannot drift apart unnoticed.

/// `(value, accepted)` for git branch names.
pub const BRANCH_NAMES: &[(&str, bool)] = &[
    ("main", true),
    ("feature/x", true),
    ("hermes/task-1", true),
    ("release-1.2", true),
    ("v1.0.x", true),
    ("user/name_with_underscore", true),
    ("UPPER/Case", true),
    ("a@b", true),
    ("x.lockfile", true),
    ("a/b.c/d", true),
    ("-x", false),
    ("a..b", false),
    ("a b", false),
    ("a\tb", false),
    ("a\u{7f}b", false),
    ("a~b", false),
    ("a^b", false),
    ("a:b", false),
    ("a?b", false),
    ("a*b", false),
    ("a[b", false),
    ("a\\b", false),
    ("a@{b", false),
    ("/a", false),
    ("a/", false),
    ("a//b", false),
    ("a.", false),
    (".a", false),
    ("a/.b", false),
    ("a.lock", false),
    ("a.lock/b", false),
    ("@", false),
    ("HEAD", false),
];

/// `(value, accepted)` for repository URLs.
pub const REPO_URLS: &[(&str, bool)] = &[
    ("https://git.example.com/org/repo.git", true),
    ("http://10.0.0.5:8080/repo.git", true),
    ("https://[::1]:3000/r", true),
    ("https://git.example.com/org/repo", true),
    ("ssh://git@git.example.com/org/repo.git", true),
    ("ssh://git.example.com:2222/r.git", true),
    ("git@git.example.com:org/repo.git", true),
    ("git.example.com:org/repo.git", true),
    ("git@git.example.com:/srv/repo.git", true),
    ("-uhttps://x.example.com/y", false),
    ("--upload-pack=touch /tmp/x", false),
    ("ext::sh -c touch% /tmp/pwned", false),
    ("fd::17", false),
    ("file:///etc/passwd", false),
    ("file://host/x", false),
    ("git://git.example.com/repo", false),
    ("ftp://git.example.com/repo", false),
    ("/srv/repo.git", false),
    ("./repo", false),
    ("https://user:token@git.example.com/r", false),
    ("https://token@git.example.com/r", false),
    ("ssh://git:password@git.example.com/r", false),
    ("https://git.example.com", false),
    ("https://git.example.com/", false),
    ("https://git.example.com/a b", false),
    ("https://git.example.com/a\nb", false),
    ("git@git.example.com:-oProxyCommand=x", false),
    ("https://", false),
];

/// `(value, accepted)` for scope globs, by the server's rules (syntax such as
/// an unclosed `[` is checked in Rust only; see `SCOPE_GLOB_SYNTAX`).
pub const SCOPE_GLOBS: &[(&str, bool)] = &[
    ("src/**", true),
    ("*.md", true),
    ("docs/{a,b}.md", true),
    ("src/[ab]*.rs", true),
    ("a/b/c.txt", true),
    ("**", true),
    ("a..b/c", true),
    ("/etc/**", false),
    ("../x", false),
    ("a/../b", false),
    ("a/..", false),
    ("..", false),
    ("a\\b", false),
    (".git/config", false),
    ("a/.git/hooks/x", false),
    ("x\u{1}y", false),
];

/// Globs the server's rules accept but whose syntax is wrong; the operator and
/// the CLI refuse them.
pub const SCOPE_GLOB_SYNTAX: &[&str] = &["src/[ab", "a/{b"];
