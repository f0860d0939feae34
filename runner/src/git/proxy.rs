//! The gateway's egress proxy for the git traffic of prepare and publish.
//!
//! ```text
//!   --proxy-dir DIR (the phase's gateway Secret, mounted as files)
//!     https:// remote → DIR/HTTPS_PROXY = http://hermes:<credential>@<gateway>:3128
//!                       (checked, never echoed)
//!     http:// or ssh remote → refused before any connection (below)
//!   libgit2 fetch / push ── ProxyOptions::url ──> gateway :3128 ──> git host by name
//!     CONNECT host:port → 407 → CONNECT again with Proxy-Authorization: Basic
//!     (the URL's user and password: libgit2's own URL-credential handling),
//!     then TLS inside the tunnel (SNI = the host; certificate checked by libgit2)
//!   a failure → one CONNECT host:port of the runner's own, same credential:
//!     the gateway's status and reason → ProxyRefused (no retry; 502: retried
//!     like an unreachable remote)
//! ```
//!
//! **Only `https://` remotes.** libgit2 1.9 (its own HTTP transport) sends
//! an `http://` remote's requests in absolute form but connects to the git
//! host itself, never to the proxy (it tunnels only https, by CONNECT); and
//! when that host answers `407` it hands the host the proxy URL's
//! credential. Both were observed with a recording proxy and a git host
//! answering 407. So with `--proxy-dir` an `http://` remote is refused
//! before libgit2 is called, and so is SSH (libssh2 takes no proxy): the
//! gateway credential is never offered to anything but the gateway.
//!
//! libgit2 reports a refusal only by its status ("proxy returned unexpected
//! status: 403"), never with the gateway's reason. So when a fetch or push
//! through the proxy fails, [`Proxy::ask`] puts the question to the gateway
//! once itself: a `CONNECT` to the git host's name and port with the same
//! credential, the same rules (credential, phase live, host listed for the
//! phase, resolution, denied addresses). A `200` means the proxy was not
//! what failed; that tunnel is closed unused.
//!
//! The credential lives only in memory: it is not written to any repository
//! config (libgit2 gets it through the fetch and push options), `Debug`
//! shows the proxy's address only, and [`Proxy::scrubber`] removes it (as
//! written in the URL, percent-decoded, and Basic-encoded) from every text
//! that leaves the pod.

use std::io::{Read as _, Write as _};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;

use crate::credentials::read_secret_file;
use crate::scrub::Scrubber;
use crate::{Error, Result};

/// The file of the proxy directory read (for an `https://` remote; no other
/// remote may use the proxy).
pub const HTTPS_PROXY_FILE: &str = "HTTPS_PROXY";
/// Longest proxy URL accepted.
const MAX_URL: usize = 2048;
/// Longest wait for the proxy, to connect and for each read or write of
/// [`Proxy::ask`].
const ASK_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bytes of the proxy's answer read by [`Proxy::ask`].
const MAX_ANSWER: usize = 16 * 1024;
/// Longest reason kept from the proxy's answer.
const MAX_REASON: usize = 300;

/// The egress proxy of a step: its URL with the credential (for libgit2
/// only), its address, and what must never leave the pod.
pub struct Proxy {
    url: String,
    address: String,
    basic: Option<String>,
    secrets: Vec<String>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({}, credential [redacted])", self.address)
    }
}

/// What the proxy answered when asked for the git host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status (200: the proxy lets the host through).
    pub status: u16,
    /// The first line of the answer's body, without the gateway's
    /// `Hermes egress proxy: ` prefix; may be empty.
    pub reason: String,
}

impl Answer {
    /// Whether the proxy refuses the host (any status but 200).
    pub fn refused(&self) -> bool {
        self.status != 200
    }
}

/// The proxy file for a remote URL, or why the remote cannot use the proxy.
pub fn file_for(remote_url: &str) -> Result<&'static str> {
    match remote_url.split_once("://").map(|(s, _)| s) {
        Some("https") => Ok(HTTPS_PROXY_FILE),
        Some("http") => Err(Error::arg(
            "--proxy-dir",
            "an http:// remote cannot go through the egress proxy: libgit2 sends plain-HTTP git traffic straight to the host, never to a proxy; use the https:// URL of the remote",
        )),
        _ => Err(Error::arg(
            "--proxy-dir",
            "an ssh remote cannot go through the egress proxy (libgit2's SSH transport takes no proxy); use the https:// URL of the remote",
        )),
    }
}

/// `host:port` of an `http://` or `https://` remote URL (default ports 80
/// and 443), as a CONNECT names it.
pub fn target_of(remote_url: &str) -> Option<String> {
    let (scheme, rest) = remote_url.split_once("://")?;
    let default = match scheme {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = split_host_port(authority)?;
    Some(format!("{host}:{}", port.unwrap_or(default)))
}

/// Splits `host[:port]` (`[v6]` or `[v6]:port` too); `None` when malformed.
fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']')?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            r => (host, Some(r.strip_prefix(':')?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        }
    };
    if !host_ok {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().ok().filter(|n| *n > 0)?)
        }
        Some(_) => return None,
    };
    Some((host, port))
}

/// Decodes `%XX` escapes of a URL's userinfo; `None` for a broken escape or
/// a result that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Proxy {
    /// Reads the proxy of `remote_url` from `dir` (see [`file_for`]); `None`
    /// for no directory. Errors name the file, never its content.
    pub fn load(dir: Option<&Path>, remote_url: &str) -> Result<Option<Self>> {
        let Some(dir) = dir else {
            return Ok(None);
        };
        crate::git::remote::validate_url(remote_url)?;
        let file = file_for(remote_url)?;
        let text = read_secret_file(dir, file, "proxy file")?.ok_or_else(|| {
            Error::arg(
                "--proxy-dir",
                format!("{} holds no {file} file", dir.display()),
            )
        })?;
        Self::parse(&text)
            .map(Some)
            .map_err(|problem| Error::arg("--proxy-dir", format!("{file}: {problem}")))
    }

    /// Parses `http://[user[:password]@]host[:port][/]`. The problem text
    /// never quotes the URL.
    pub fn parse(text: &str) -> std::result::Result<Self, &'static str> {
        let url = text.trim_end_matches(['\n', '\r']);
        if url.is_empty() || url.len() > MAX_URL {
            return Err("the proxy URL is empty or too long");
        }
        if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err("the proxy URL must be one line without spaces or control characters");
        }
        let Some(rest) = url.strip_prefix("http://") else {
            return Err("the proxy URL must be http:// (the gateway's proxy speaks plain HTTP)");
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "/") {
            return Err("the proxy URL must not have a path, query or fragment");
        }
        let (userinfo, host_port) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let Some((host, port)) = split_host_port(host_port) else {
            return Err("the proxy URL's host or port is malformed");
        };
        let address = format!("{host}:{}", port.unwrap_or(80));
        let mut secrets = Vec::new();
        let basic = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or((info, ""));
                let (Some(user), Some(password)) = (percent_decode(user), percent_decode(password))
                else {
                    return Err("the proxy URL's credential has a malformed %-escape");
                };
                if user.is_empty() || user.contains(':') {
                    return Err("the proxy URL's user name is empty or holds a ':'");
                }
                let pair = format!("{user}:{password}");
                let encoded = base64::engine::general_purpose::STANDARD.encode(&pair);
                secrets.extend([info.to_owned(), password, encoded.clone()]);
                if let Some((_, raw)) = info.split_once(':') {
                    secrets.push(raw.to_owned());
                }
                Some(encoded)
            }
        };
        secrets.retain(|s| !s.is_empty());
        Ok(Self {
            url: url.to_owned(),
            address,
            basic,
            secrets,
        })
    }

    /// The URL libgit2 gets, credential included: never log it.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The proxy's `host:port` (no credential).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// A scrubber that removes the proxy credential from texts.
    pub fn scrubber(&self) -> Scrubber {
        Scrubber::new(self.secrets.iter().cloned(), None)
    }

    /// Asks the proxy whether it lets `target` (`host:port`) through: one
    /// `CONNECT` with the credential, the answer's status and reason. `None`
    /// when the proxy cannot be reached or does not answer in HTTP.
    pub fn ask(&self, target: &str) -> Option<Answer> {
        let addr = self.address.to_socket_addrs().ok()?.next()?;
        let mut stream = TcpStream::connect_timeout(&addr, ASK_TIMEOUT).ok()?;
        stream.set_read_timeout(Some(ASK_TIMEOUT)).ok()?;
        stream.set_write_timeout(Some(ASK_TIMEOUT)).ok()?;
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(basic) = &self.basic {
            request.push_str(&format!("Proxy-Authorization: Basic {basic}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 2048];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() >= MAX_ANSWER {
                return None;
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let status: u16 = head
            .strip_prefix("HTTP/1.")
            .and_then(|r| r.get(2..5))
            .and_then(|s| s.parse().ok())?;
        if status == 200 {
            // The tunnel is open: close it without a byte sent.
            return Some(Answer {
                status,
                reason: String::new(),
            });
        }
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0)
            .min(MAX_ANSWER);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let end = buf.len().min(head_end + length);
        let body = String::from_utf8_lossy(&buf[head_end..end]).into_owned();
        Some(Answer {
            status,
            reason: self.scrubber().scrub(&reason_of(&body)),
        })
    }
}

/// The first non-empty line of a refusal's body, bounded, without the
/// gateway's own prefix.
fn reason_of(body: &str) -> String {
    let line = body.lines().map(str::trim).find(|l| !l.is_empty());
    let line = line.unwrap_or_default();
    let line = line
        .strip_prefix("Hermes egress proxy:")
        .map_or(line, str::trim_start);
    line.chars()
        .take(MAX_REASON)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRED: &str = "hgw1.eyJucyI6InRlYW0tYSJ9.c2lnbmF0dXJl";

    #[test]
    fn a_gateway_url_parses_and_its_credential_is_scrubbed_in_every_form() {
        let p = Proxy::parse(&format!("http://hermes:{CRED}@10.96.0.20:3128\n")).unwrap();
        assert_eq!(p.address(), "10.96.0.20:3128");
        assert_eq!(p.url(), format!("http://hermes:{CRED}@10.96.0.20:3128"));
        assert!(!format!("{p:?}").contains(CRED));
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("hermes:{CRED}"));
        let s = p.scrubber();
        for text in [
            format!("invalid URL: 'http://hermes:{CRED}@10.96.0.20:3128'"),
            format!("token {CRED} here"),
            format!("Proxy-Authorization: Basic {basic}"),
        ] {
            let out = s.scrub(&text);
            assert!(!out.contains(CRED) && !out.contains(&basic), "{out}");
        }
    }

    #[test]
    fn a_percent_encoded_password_is_scrubbed_encoded_and_decoded() {
        let p = Proxy::parse("http://hermes:p%40ss%3Aword-123@gw:3128/").unwrap();
        let out = p
            .scrubber()
            .scrub("p@ss:word-123 and p%40ss%3Aword-123 leaked");
        assert!(!out.contains("word-123"), "{out}");
        assert_eq!(p.address(), "gw:3128");
    }

    #[test]
    fn malformed_proxy_urls_are_refused_without_being_quoted() {
        for bad in [
            "",
            "https://hermes:x@gw:3128",
            "socks5://gw:1080",
            "http://hermes:x@gw:3128/path",
            "http://hermes:x@gw:3128?q",
            "http://hermes:x@gw:99999",
            "http://hermes:x@gw:",
            "http://hermes:x%zz@gw:3128",
            "http://hermes:x@",
            "http://hermes:x@g w:3128",
            "http://hermes:x@gw:3128\u{0}",
            "http://:x@gw:3128",
        ] {
            match Proxy::parse(bad) {
                Ok(p) => panic!("{bad:?} accepted as {p:?}"),
                Err(problem) => assert!(!problem.contains("gw"), "{problem}"),
            }
        }
        let p = Proxy::parse("http://gw").unwrap();
        assert_eq!(p.address(), "gw:80");
        let p = Proxy::parse("http://hermes:x@[fd00::1]:3128").unwrap();
        assert_eq!(p.address(), "[fd00::1]:3128");
    }

    #[test]
    fn only_https_remotes_may_use_the_proxy() {
        assert_eq!(
            file_for("https://git.example/r.git").unwrap(),
            "HTTPS_PROXY"
        );
        for url in [
            "http://git.example/r.git",
            "ssh://git@git.example/r.git",
            "git@git.example:r.git",
        ] {
            let e = file_for(url).unwrap_err();
            assert_eq!(e.reason(), hermes_results::FailureReason::InvalidInput);
            assert!(e.chain().contains("https://"), "{}", e.chain());
        }
    }

    #[test]
    fn the_target_is_the_remote_host_and_port() {
        assert_eq!(
            target_of("https://git.example/org/r.git").as_deref(),
            Some("git.example:443")
        );
        assert_eq!(
            target_of("http://git.hermes.test:8081/r.git").as_deref(),
            Some("git.hermes.test:8081")
        );
        assert_eq!(
            target_of("https://[fd00::5]:8443/r").as_deref(),
            Some("[fd00::5]:8443")
        );
        assert_eq!(target_of("ssh://git@git.example/r.git"), None);
    }

    #[test]
    fn the_reason_is_the_first_line_without_the_gateway_prefix() {
        assert_eq!(
            reason_of("Hermes egress proxy: the host (or port) is not in this phase's allowlist\n"),
            "the host (or port) is not in this phase's allowlist"
        );
        assert_eq!(reason_of("\n  denied \u{1b}[31m\nmore"), "denied  [31m");
        assert_eq!(reason_of(""), "");
    }

    #[test]
    fn loading_names_the_missing_file_and_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let err = Proxy::load(Some(dir.path()), "https://git.example/r.git").unwrap_err();
        assert!(err.chain().contains("HTTPS_PROXY"), "{}", err.chain());
        std::fs::write(
            dir.path().join("HTTPS_PROXY"),
            format!("https://hermes:{CRED}@gw:3128\n"),
        )
        .unwrap();
        let err = Proxy::load(Some(dir.path()), "https://git.example/r.git").unwrap_err();
        assert!(!err.chain().contains(CRED), "{}", err.chain());
        std::fs::write(
            dir.path().join("HTTPS_PROXY"),
            format!("http://hermes:{CRED}@gw:3128\n"),
        )
        .unwrap();
        let p = Proxy::load(Some(dir.path()), "https://git.example/r.git")
            .unwrap()
            .unwrap();
        assert_eq!(p.address(), "gw:3128");
        for url in ["http://git.example/r.git", "git@git.example:r.git"] {
            assert!(Proxy::load(Some(dir.path()), url).is_err(), "{url}");
        }
        assert!(
            Proxy::load(None, "https://git.example/r.git")
                .unwrap()
                .is_none()
        );
    }
}
