//! The server: a tiny_http front doing basic auth and logging, and
//! `git http-backend` (CGI) behind it, one process per request.

use std::fmt;
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use base64::Engine as _;

use crate::{Error, PUSH_USER, READ_USER};

/// The realm of the `WWW-Authenticate` challenge.
const REALM: &str = "hermes-test";

/// A basic-auth user. Its `Debug` form hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
}

impl User {
    /// A user named `name` with `password`.
    pub fn new(name: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            password: password.into(),
        }
    }
}

impl From<(&str, &str)> for User {
    fn from((name, password): (&str, &str)) -> Self {
        Self::new(name, password)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How to run a [`GitServer`].
#[derive(Clone, Debug)]
pub struct Config {
    /// The folder holding the bare repositories (`<root>/<repo>.git`);
    /// created if missing.
    pub root: PathBuf,
    /// The address to bind, e.g. `127.0.0.1:0` or `0.0.0.0:8081`.
    pub listen: String,
    /// May clone and fetch.
    pub read: User,
    /// May clone, fetch and push.
    pub push: User,
    /// The host [`GitServer::url`] puts in URLs (a name or IP address, an
    /// IPv6 address in brackets; no port). Default: the bound IP address, or
    /// loopback when bound to an unspecified address (`0.0.0.0`, `::`).
    pub advertised_host: Option<String>,
    /// Also write each request as one line to stderr (never a credential).
    pub log_stderr: bool,
}

impl Config {
    /// Serves `root` on `listen` with the default users ([`READ_USER`],
    /// [`PUSH_USER`]), no advertised host, no stderr log.
    pub fn new(root: impl Into<PathBuf>, listen: impl Into<String>) -> Self {
        Self {
            root: root.into(),
            listen: listen.into(),
            read: READ_USER.into(),
            push: PUSH_USER.into(),
            advertised_host: None,
            log_stderr: false,
        }
    }

    /// Sets the read user and the push user.
    #[must_use]
    pub fn users(mut self, read: User, push: User) -> Self {
        self.read = read;
        self.push = push;
        self
    }

    /// Sets the host [`GitServer::url`] advertises.
    #[must_use]
    pub fn advertised_host(mut self, host: impl Into<String>) -> Self {
        self.advertised_host = Some(host.into());
        self
    }

    /// Logs each request to stderr when `on`.
    #[must_use]
    pub fn log_stderr(mut self, on: bool) -> Self {
        self.log_stderr = on;
        self
    }

    fn check(&self) -> Result<(), Error> {
        for (role, u) in [("read", &self.read), ("push", &self.push)] {
            if u.name.is_empty() || u.password.is_empty() {
                return Err(Error::Config(format!(
                    "the {role} user needs a name and a password"
                )));
            }
            if u.name.contains(':') || u.name.chars().any(char::is_control) {
                return Err(Error::Config(format!(
                    "the {role} user's name cannot hold ':' or control characters"
                )));
            }
        }
        if self.read.name == self.push.name {
            return Err(Error::Config(
                "the read user and the push user need different names".into(),
            ));
        }
        Ok(())
    }
}

/// One logged request. Holds no credential: only whether one was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The HTTP method.
    pub method: String,
    /// The URL path, without the query.
    pub path: String,
    /// The query string (after `?`), possibly empty.
    pub query: String,
    /// The authenticated user, if the credentials were valid.
    pub user: Option<String>,
    /// The status answered.
    pub status: u16,
    /// Whether the request had an Authorization header at all, valid or not.
    pub authorization: bool,
}

impl fmt::Display for Logged {
    /// One line: `GET /repo.git/info/refs?service=git-upload-pack user=reader auth=yes status=200`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}",
            self.method.escape_debug(),
            self.path.escape_debug()
        )?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query.escape_debug())?;
        }
        write!(
            f,
            " user={} auth={} status={}",
            self.user.as_deref().unwrap_or("-").escape_debug(),
            if self.authorization { "yes" } else { "no" },
            self.status
        )
    }
}

struct Shared {
    root: PathBuf,
    read: User,
    push: User,
    log_stderr: bool,
    log: Mutex<Vec<Logged>>,
}

impl Shared {
    /// The user and whether it may push, for valid basic credentials.
    fn user_of(&self, authorization: Option<&str>) -> Option<(&str, bool)> {
        let (scheme, b64) = authorization?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()?;
        let raw = String::from_utf8(raw).ok()?;
        let (name, password) = raw.split_once(':')?;
        [(&self.read, false), (&self.push, true)]
            .into_iter()
            .find(|(u, _)| u.name == name && u.password == password)
            .map(|(u, can_push)| (u.name.as_str(), can_push))
    }

    fn record(&self, entry: Logged) {
        if self.log_stderr {
            eprintln!("hermes-git-server: {entry}");
        }
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(entry);
    }
}

/// A running git smart-HTTP server; it stops when dropped (after answering
/// the requests in flight).
pub struct GitServer {
    root: PathBuf,
    addr: SocketAddr,
    host: String,
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl fmt::Debug for GitServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitServer")
            .field("root", &self.root)
            .field("addr", &self.addr)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl GitServer {
    /// Serves the repositories under `root` on `listen` (e.g. `0.0.0.0:0`)
    /// with the default users.
    pub fn start(root: impl AsRef<Path>, listen: &str) -> Result<Self, Error> {
        Self::start_with(Config::new(root.as_ref(), listen))
    }

    /// Serves `root` on a free loopback port with the default users.
    pub fn loopback(root: impl AsRef<Path>) -> Result<Self, Error> {
        Self::start(root, "127.0.0.1:0")
    }

    /// Binds and serves on background threads, as `config` says.
    pub fn start_with(config: Config) -> Result<Self, Error> {
        config.check()?;
        std::fs::create_dir_all(&config.root).map_err(|source| Error::Io {
            path: config.root.clone(),
            source,
        })?;
        let server =
            tiny_http::Server::http(config.listen.as_str()).map_err(|source| Error::Bind {
                addr: config.listen.clone(),
                source,
            })?;
        let addr = server.server_addr().to_ip().ok_or_else(|| Error::Bind {
            addr: config.listen.clone(),
            source: "not an IP address".into(),
        })?;
        let host = config
            .advertised_host
            .clone()
            .unwrap_or_else(|| match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_owned(),
                IpAddr::V6(ip) if ip.is_unspecified() => "[::1]".to_owned(),
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            });
        let shared = Arc::new(Shared {
            root: config.root.clone(),
            read: config.read,
            push: config.push,
            log_stderr: config.log_stderr,
            log: Mutex::new(Vec::new()),
        });
        let server = Arc::new(server);
        let (s, sh) = (server.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("git-server".into())
            .spawn(move || serve(&s, &sh))
            .map_err(|source| Error::Io {
                path: config.root.clone(),
                source,
            })?;
        Ok(Self {
            root: config.root,
            addr,
            host,
            shared,
            server,
            thread: Some(thread),
        })
    }

    /// The folder holding the repositories.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The URL of `repo` (a path under the root, e.g. `repo.git`) on the
    /// advertised host: `http://HOST:PORT/repo`.
    pub fn url(&self, repo: &str) -> String {
        format!(
            "http://{}:{}/{}",
            self.host,
            self.port(),
            repo.trim_start_matches('/')
        )
    }

    /// Every request answered so far, in the order answered.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops: answers the requests in flight, then returns. Same as dropping.
    pub fn shutdown(self) {}
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The accept loop: one thread per request, all joined when it ends.
fn serve(server: &tiny_http::Server, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for req in server.incoming_requests() {
        workers.retain(|w| !w.is_finished());
        let sh = shared.clone();
        // Should the thread not start, the request is dropped, which tiny_http
        // answers with 500.
        if let Ok(w) = std::thread::Builder::new()
            .name("git-server-request".into())
            .spawn(move || handle(req, &sh))
        {
            workers.push(w);
        }
    }
    for w in workers {
        let _ = w.join();
    }
}

/// What to answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

fn header(req: &tiny_http::Request, name: &str) -> Option<String> {
    req.headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_owned())
}

fn handle(mut req: tiny_http::Request, shared: &Shared) {
    let method = req.method().as_str().to_owned();
    let url = req.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let authorization = header(&req, "Authorization");
    let user = shared.user_of(authorization.as_deref());
    let reply = answer(&mut req, shared, &method, path, query, user);
    shared.record(Logged {
        method,
        path: path.to_owned(),
        query: query.to_owned(),
        user: user.map(|(u, _)| u.to_owned()),
        status: reply.status,
        authorization: authorization.is_some(),
    });
    let mut resp = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    for (k, v) in reply.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            resp.add_header(h);
        }
    }
    // The client may be gone; nothing to do about it.
    let _ = req.respond(resp);
}

fn answer(
    req: &mut tiny_http::Request,
    shared: &Shared,
    method: &str,
    path: &str,
    query: &str,
    user: Option<(&str, bool)>,
) -> Reply {
    let Some((user, can_push)) = user else {
        let mut r = Reply::text(401, "auth required");
        r.headers.push((
            "WWW-Authenticate".into(),
            format!("Basic realm=\"{REALM}\""),
        ));
        return r;
    };
    let write = path.ends_with("/git-receive-pack") || query.contains("service=git-receive-pack");
    if write && !can_push {
        return Reply::text(403, "read-only user");
    }
    if !safe_path(path) || query.chars().any(char::is_control) {
        return Reply::text(400, "bad request path");
    }
    let mut body = Vec::new();
    if req.as_reader().read_to_end(&mut body).is_err() {
        return Reply::text(400, "unreadable request body");
    }
    let remote = req
        .remote_addr()
        .map_or_else(|| "127.0.0.1".to_owned(), |a| a.ip().to_string());
    let mut cmd = Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", &shared.root)
        .env("GIT_PROJECT_ROOT", &shared.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("REQUEST_METHOD", method)
        .env("REMOTE_USER", user)
        .env("REMOTE_ADDR", remote)
        .env("CONTENT_LENGTH", body.len().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(ct) = header(req, "Content-Type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = header(req, "Content-Encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    let Ok(mut child) = cmd.spawn() else {
        return Reply::text(500, "git http-backend did not start");
    };
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            // http-backend may stop reading early (an error); that is its answer.
            let _ = stdin.write_all(&body);
        })
    });
    let out = child.wait_with_output();
    if let Some(w) = writer {
        let _ = w.join();
    }
    let Ok(out) = out else {
        return Reply::text(500, "git http-backend failed");
    };
    if shared.log_stderr {
        for line in String::from_utf8_lossy(&out.stderr).lines() {
            eprintln!("hermes-git-server:   git: {}", line.escape_debug());
        }
    }
    cgi_reply(out.stdout)
}

/// Parses a CGI answer: headers (a `Status:` one among them), a blank line,
/// the body.
fn cgi_reply(raw: Vec<u8>) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| raw.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, body) = match split {
        Some((i, n)) => (
            String::from_utf8_lossy(&raw[..i]).into_owned(),
            raw[i + n..].to_vec(),
        ),
        None => (String::new(), raw),
    };
    let mut status = 200;
    let mut headers = Vec::new();
    for line in head.lines() {
        if let Some((k, v)) = line.split_once(':') {
            let (k, v) = (k.trim(), v.trim());
            if k.eq_ignore_ascii_case("Status") {
                status = v
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|s| (100..600).contains(s))
                    .unwrap_or(500);
            } else {
                headers.push((k.to_owned(), v.to_owned()));
            }
        }
    }
    Reply {
        status,
        headers,
        body,
    }
}

/// A path git may see: absolute, percent-escapes valid, no `.` or `..`
/// segment once decoded, no NUL, backslash or control character.
fn safe_path(path: &str) -> bool {
    let Some(decoded) = percent_decode(path) else {
        return false;
    };
    decoded.starts_with(b"/")
        && !decoded.iter().any(|b| *b == b'\\' || b.is_ascii_control())
        && decoded
            .split(|b| *b == b'/')
            .all(|seg| seg != b"." && seg != b"..")
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(safe_path("/repo.git/info/refs"));
        assert!(safe_path("/a/b.git/git-upload-pack"));
        for bad in [
            "repo.git/info/refs",
            "/../etc/passwd",
            "/repo.git/../../x",
            "/./repo.git",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/repo.git/%",
            "/repo.git/%zz",
            "/a%00b",
            "/a\\..\\b",
            "/a%5c",
            "/..",
        ] {
            assert!(!safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn cgi_answers() {
        let r = cgi_reply(b"Status: 404 Not Found\r\nX-A: b\r\n\r\nbody".to_vec());
        assert_eq!((r.status, r.body.as_slice()), (404, &b"body"[..]));
        assert_eq!(r.headers, vec![("X-A".to_owned(), "b".to_owned())]);
        let r = cgi_reply(b"Content-Type: x\n\nbody".to_vec());
        assert_eq!(r.status, 200);
        assert_eq!(cgi_reply(b"Status: 99999\n\n".to_vec()).status, 500);
        assert_eq!(cgi_reply(b"garbage".to_vec()).body, b"garbage");
    }

    #[test]
    fn users_are_checked() {
        let c = Config::new("/x", "127.0.0.1:0");
        let sh = Shared {
            root: c.root.clone(),
            read: c.read.clone(),
            push: c.push.clone(),
            log_stderr: false,
            log: Mutex::new(Vec::new()),
        };
        let b = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            sh.user_of(Some(&b("reader:read-secret-4711"))),
            Some(("reader", false))
        );
        assert_eq!(
            sh.user_of(Some(&b("pusher:push-secret-0815"))),
            Some(("pusher", true))
        );
        for bad in [
            b("reader:push-secret-0815"),
            b("reader"),
            b(""),
            "Basic !!!".into(),
            "Basic".into(),
            "Bearer x".into(),
            String::new(),
        ] {
            assert_eq!(sh.user_of(Some(&bad)), None, "{bad}");
        }
        assert!(
            Config::new("/x", "a")
                .users(User::new("a", "p"), User::new("a", "q"))
                .check()
                .is_err()
        );
        assert!(
            Config::new("/x", "a")
                .users(User::new("a:b", "p"), User::new("c", "q"))
                .check()
                .is_err()
        );
        assert!(format!("{:?}", c.read).contains("<redacted>"));
        assert!(!format!("{:?}", c.read).contains("read-secret"));
    }
}
