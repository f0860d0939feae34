//! The server against the real git CLI, and raw malformed requests.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hermes_git_server::{
    Config, GitServer, PUSH_USER, READ_USER, User, accept_pushes, git, init_bare, refuse_pushes,
    try_git, with_userinfo,
};

/// A server with `repo.git` holding one commit on main.
struct Fixture {
    tmp: tempfile::TempDir,
    server: GitServer,
    remote: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("srv");
        let server = GitServer::loopback(&root).unwrap();
        Self::with_server(tmp, server)
    }

    fn with_server(tmp: tempfile::TempDir, server: GitServer) -> Self {
        let remote = server.root().join("repo.git");
        init_bare(&remote).unwrap();
        let seed = tmp.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        git(&seed, &["init", "-q", "-b", "main"]);
        std::fs::write(seed.join("README.md"), "# demo\n").unwrap();
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "base"]);
        git(&seed, &["push", "-q", remote.to_str().unwrap(), "main"]);
        Self {
            tmp,
            server,
            remote,
        }
    }

    fn url(&self, user: (&str, &str)) -> String {
        with_userinfo(&self.server.url("repo.git"), user)
    }

    /// Clones as `user` into a new folder `name`.
    fn clone_as(
        &self,
        user: (&str, &str),
        name: &str,
    ) -> Result<PathBuf, hermes_git_server::Error> {
        let dest = self.tmp.path().join(name);
        try_git(
            self.tmp.path(),
            &["clone", "-q", &self.url(user), dest.to_str().unwrap()],
        )?;
        Ok(dest)
    }

    /// Commits a change in a local clone and pushes it to main as `user`.
    fn push_as(
        &self,
        user: (&str, &str),
        clone: &Path,
    ) -> Result<String, hermes_git_server::Error> {
        std::fs::write(clone.join("change.txt"), format!("{user:?}\n")).unwrap();
        git(clone, &["add", "-A"]);
        git(clone, &["commit", "-q", "-m", "change"]);
        try_git(
            clone,
            &["push", "-q", &self.url(user), "HEAD:refs/heads/main"],
        )?;
        Ok(git(clone, &["rev-parse", "HEAD"]))
    }

    fn main(&self) -> String {
        git(&self.remote, &["rev-parse", "main"])
    }
}

/// Sends `request` as it is and returns the status code and the whole answer.
fn raw(server: &GitServer, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(server.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    // End of request: a body cut short is seen as such, not waited for.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(server: &GitServer, path: &str, auth: Option<(&str, &str)>) -> (u16, String) {
    use base64::Engine as _;
    let auth = auth.map_or_else(String::new, |(u, p)| {
        format!(
            "Authorization: Basic {}\r\n",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    });
    raw(
        server,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
}

#[test]
fn read_user_clones_and_the_log_says_so() {
    let f = Fixture::new();
    let clone = f.clone_as(READ_USER, "clone").unwrap();
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), f.main());
    let log = f.server.requests();
    // The git CLI asks first without credentials, then with them.
    assert_eq!(log[0].status, 401);
    assert!(!log[0].authorization);
    assert_eq!(log[0].user, None);
    let ok: Vec<_> = log.iter().filter(|r| r.status == 200).collect();
    assert!(!ok.is_empty(), "{log:?}");
    for r in &ok {
        assert_eq!(r.user.as_deref(), Some(READ_USER.0));
        assert!(r.authorization);
        assert!(r.path.starts_with("/repo.git/"), "{r:?}");
    }
    assert!(
        ok.iter()
            .any(|r| r.method == "POST" && r.path == "/repo.git/git-upload-pack")
    );
    assert!(
        ok.iter()
            .any(|r| r.path == "/repo.git/info/refs" && r.query == "service=git-upload-pack")
    );
    // The line for stderr holds no credential.
    for r in &log {
        let line = r.to_string();
        assert!(!line.contains(READ_USER.1), "{line}");
        assert!(line.contains(&format!("status={}", r.status)), "{line}");
    }
}

#[test]
fn push_user_clones_and_pushes() {
    let f = Fixture::new();
    let clone = f.clone_as(PUSH_USER, "clone").unwrap();
    let head = f.push_as(PUSH_USER, &clone).unwrap();
    assert_eq!(f.main(), head);
    assert!(f.server.requests().iter().any(|r| r.method == "POST"
        && r.path == "/repo.git/git-receive-pack"
        && r.user.as_deref() == Some(PUSH_USER.0)
        && r.status == 200));
}

#[test]
fn read_user_push_is_refused() {
    let f = Fixture::new();
    let before = f.main();
    let clone = f.clone_as(READ_USER, "clone").unwrap();
    let err = f.push_as(READ_USER, &clone).unwrap_err().to_string();
    assert!(err.contains("403"), "{err}");
    assert_eq!(f.main(), before);
    let log = f.server.requests();
    assert!(
        log.iter()
            .any(|r| r.query == "service=git-receive-pack" && r.status == 403)
    );
    assert!(
        !log.iter()
            .any(|r| r.path.ends_with("/git-receive-pack") && r.status == 200)
    );
}

#[test]
fn no_auth_and_wrong_password_get_401_with_a_basic_challenge() {
    let f = Fixture::new();
    let path = "/repo.git/info/refs?service=git-upload-pack";
    for auth in [
        None,
        Some((READ_USER.0, "wrong")),
        Some((PUSH_USER.0, READ_USER.1)),
        Some(("nobody", READ_USER.1)),
    ] {
        let (status, text) = get(&f.server, path, auth);
        assert_eq!(status, 401, "{auth:?}: {text}");
        assert!(
            text.to_ascii_lowercase()
                .contains("www-authenticate: basic realm="),
            "{text}"
        );
    }
    let (status, _) = get(&f.server, path, Some(READ_USER));
    assert_eq!(status, 200);
    // The git CLI with a wrong password fails and nothing is cloned.
    let err = f
        .clone_as((READ_USER.0, "wrong"), "clone")
        .unwrap_err()
        .to_string();
    assert!(err.contains("Authentication failed"), "{err}");
    let log = f.server.requests();
    assert!(log.iter().all(|r| r.user.is_none() == (r.status == 401)));
    assert!(log.iter().any(|r| r.authorization && r.status == 401));
}

#[test]
fn a_refusing_pre_receive_hook_refuses_the_push() {
    let f = Fixture::new();
    let before = f.main();
    refuse_pushes(&f.remote).unwrap();
    let clone = f.clone_as(PUSH_USER, "clone").unwrap();
    let err = f.push_as(PUSH_USER, &clone).unwrap_err().to_string();
    assert!(err.contains("pre-receive hook declined"), "{err}");
    assert!(err.contains("refuses pushes"), "{err}");
    assert_eq!(f.main(), before);
    // Accepting again: the same push goes through.
    accept_pushes(&f.remote).unwrap();
    accept_pushes(&f.remote).unwrap();
    try_git(
        &clone,
        &["push", "-q", &f.url(PUSH_USER), "HEAD:refs/heads/main"],
    )
    .unwrap();
    assert_eq!(f.main(), git(&clone, &["rev-parse", "HEAD"]));
}

#[test]
fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let f = Fixture::new();
    let r = Some(READ_USER);
    let cases: &[(&str, u16)] = &[
        ("/../../etc/passwd", 400),
        ("/repo.git/../../../etc/passwd", 400),
        ("/%2e%2e/%2e%2e/etc/passwd", 400),
        ("/repo.git/%2E%2E/x/info/refs?service=git-upload-pack", 400),
        ("/./repo.git/info/refs", 400),
        ("/repo.git/%zz", 400),
        ("/repo.git/info/refs?service=%00", 403),
        ("/missing.git/info/refs?service=git-upload-pack", 404),
        ("/missing.git/HEAD", 404),
        ("/garbage", 404),
    ];
    for (path, want) in cases {
        let (status, text) = get(&f.server, path, r);
        assert!((400..500).contains(&status), "{path}: {status}\n{text}");
        assert_eq!(status, *want, "{path}: {text}");
    }
    // Raw garbage: bad request lines, bad headers, a lying Content-Length,
    // a body cut short, odd methods, undecodable credentials.
    for req in [
        &b"NONSENSE\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"\x00\x01\x02\xff\xfe\r\n\r\n",
        b"GET /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic !!!\r\nConnection: close\r\n\r\n",
        b"GET /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic\r\nConnection: close\r\n\r\n",
        b"GET /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVhZGVy\r\nConnection: close\r\n\r\n",
        b"GET /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nAuthorization: \xff\xfe\r\nConnection: close\r\n\r\n",
        b"POST /repo.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVhZGVyOnJlYWQtc2VjcmV0LTQ3MTE=\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort",
        b"POST /repo.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVhZGVyOnJlYWQtc2VjcmV0LTQ3MTE=\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: 7\r\nConnection: close\r\n\r\ngarbage",
        b"DELETE /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nAuthorization: Basic cmVhZGVyOnJlYWQtc2VjcmV0LTQ3MTE=\r\nConnection: close\r\n\r\n",
        b"GET /repo.git/info/refs HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
    ] {
        let (status, text) = raw(&f.server, req);
        assert!(
            status == 0 || (400..500).contains(&status) || status == 200,
            "{:?}: {status}\n{text}",
            String::from_utf8_lossy(req)
        );
    }
    // A connection that sends half a request and hangs up.
    {
        let mut s = TcpStream::connect(f.server.addr()).unwrap();
        s.write_all(b"GET /repo.git/info/re").unwrap();
    }
    // Still serving.
    let clone = f.clone_as(READ_USER, "clone").unwrap();
    assert_eq!(git(&clone, &["rev-parse", "HEAD"]), f.main());
    assert!(
        f.server.requests().iter().all(|r| r.status < 500),
        "{:?}",
        f.server.requests()
    );
}

#[test]
fn garbage_protocol_bodies_are_answered_not_crashed_on() {
    let f = Fixture::new();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", READ_USER.0, READ_USER.1));
    let body = b"0032want 0000000000000000000000000000000000000000\n00000009done\n";
    let req = [
        format!(
            "POST /repo.git/git-upload-pack HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes(),
        body.to_vec(),
    ]
    .concat();
    let (status, _) = raw(&f.server, &req);
    assert!(status != 0 && status < 500 || status == 200, "{status}");
    let (status, _) = get(
        &f.server,
        "/repo.git/info/refs?service=git-upload-pack",
        Some(READ_USER),
    );
    assert_eq!(status, 200);
}

#[test]
fn configured_users_and_advertised_host() {
    let tmp = tempfile::tempdir().unwrap();
    let config = Config::new(tmp.path().join("srv"), "0.0.0.0:0")
        .users(User::new("r", "rpw"), User::new("p", "ppw"))
        .advertised_host("127.0.0.1");
    let server = GitServer::start_with(config).unwrap();
    assert!(server.addr().ip().is_unspecified());
    assert_eq!(
        server.url("repo.git"),
        format!("http://127.0.0.1:{}/repo.git", server.port())
    );
    let f = Fixture::with_server(tmp, server);
    assert!(f.clone_as(READ_USER, "default-user").is_err());
    let clone = f.clone_as(("r", "rpw"), "clone").unwrap();
    assert!(f.push_as(("r", "rpw"), &clone).is_err());
    let head = f.push_as(("p", "ppw"), &clone).unwrap();
    assert_eq!(f.main(), head);
}

#[test]
fn default_advertised_host_and_start_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let s = GitServer::start(tmp.path(), "0.0.0.0:0").unwrap();
    assert_eq!(
        s.url("/a.git"),
        format!("http://127.0.0.1:{}/a.git", s.port())
    );
    let s = GitServer::loopback(tmp.path()).unwrap();
    assert_eq!(
        s.url("a.git"),
        format!("http://127.0.0.1:{}/a.git", s.port())
    );
    assert!(matches!(
        GitServer::start(tmp.path(), "not an address"),
        Err(hermes_git_server::Error::Bind { .. })
    ));
    let same =
        Config::new(tmp.path(), "127.0.0.1:0").users(User::new("a", "x"), User::new("a", "y"));
    assert!(matches!(
        GitServer::start_with(same),
        Err(hermes_git_server::Error::Config(_))
    ));
}

#[test]
fn parallel_clones() {
    let f = Fixture::new();
    std::thread::scope(|s| {
        for i in 0..6 {
            let f = &f;
            s.spawn(move || f.clone_as(READ_USER, &format!("clone-{i}")).unwrap());
        }
    });
}
