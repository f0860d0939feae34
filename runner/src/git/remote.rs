//! Talking to the remote: fetch and push with credentials handed over only
//! through libgit2 callbacks, only for the configured URL, at most once per
//! operation (no retry loop against a refusing server), no redirects, no
//! tags, and SSH host keys checked against the pinned list. No proxy but
//! the one the step is given (`--proxy-dir`: the gateway's egress proxy,
//! see [`super::proxy`]); libgit2's own proxy discovery (`http.proxy`,
//! `*_proxy` variables) is never used.

use std::cell::Cell;
use std::rc::Rc;

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, CredentialType, ErrorClass, ErrorCode,
    FetchOptions, ProxyOptions, PushOptions, RemoteCallbacks, RemoteRedirect, Repository,
};

use super::proxy::Proxy;
use crate::credentials::Credentials;
use crate::{Error, Result};

/// Validates a remote URL: `https://`, `http://` or `ssh://` without
/// userinfo, or scp-like `user@host:path`; nothing that looks like an option.
pub fn validate_url(url: &str) -> Result<()> {
    let bad = |p: &str| Err(Error::arg("--url", p.to_owned()));
    if url.is_empty() || url.len() > 2048 {
        return bad("empty or too long");
    }
    if url.starts_with('-') || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return bad("must not start with '-' or contain spaces or control characters");
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        if !matches!(scheme, "https" | "http" | "ssh") {
            return bad("scheme must be https, http or ssh");
        }
        let authority = rest.split('/').next().unwrap_or_default();
        if scheme != "ssh" && authority.contains('@') {
            return bad("must not carry credentials");
        }
        if authority.contains(':') && authority.contains('@') && scheme == "ssh" {
            let user = authority.split('@').next().unwrap_or_default();
            if user.contains(':') {
                return bad("must not carry credentials");
            }
        }
        return Ok(());
    }
    // scp-like: [user@]host:path
    match url.split_once(':') {
        Some((host, path))
            if !host.is_empty()
                && !path.is_empty()
                && !host.contains('/')
                && !path.starts_with(':') =>
        {
            Ok(())
        }
        _ => bad("not a URL git understands"),
    }
}

/// Tracks how the callbacks went, to classify failures.
#[derive(Clone, Default)]
struct Attempts {
    credentials: Rc<Cell<u32>>,
    refused_url: Rc<Cell<bool>>,
}

fn callbacks<'a>(url: &'a str, creds: &'a Credentials, attempts: &Attempts) -> RemoteCallbacks<'a> {
    let mut cb = RemoteCallbacks::new();
    let a = attempts.clone();
    cb.credentials(move |asked_url, url_user, allowed| {
        if asked_url != url {
            // Never hand credentials to anything but the configured remote.
            a.refused_url.set(true);
            return Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "credentials requested for a URL other than the configured remote: refused",
            ));
        }
        let n = a.credentials.get() + 1;
        a.credentials.set(n);
        let auth_failed = || {
            git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "authentication failed: the remote refused the credentials",
            )
        };
        match creds {
            Credentials::Basic { username, password }
                if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) && n == 1 =>
            {
                Cred::userpass_plaintext(username, password)
            }
            Credentials::Ssh {
                username,
                private_key,
                ..
            } if n <= 2 => {
                let user = username.as_deref().or(url_user).unwrap_or("git");
                if allowed.contains(CredentialType::USERNAME) {
                    Cred::username(user)
                } else if allowed.contains(CredentialType::SSH_KEY) {
                    Cred::ssh_key_from_memory(user, None, private_key, None)
                } else {
                    Err(auth_failed())
                }
            }
            Credentials::None => Err(git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "the remote asks for credentials and none are mounted",
            )),
            _ => Err(auth_failed()),
        }
    });
    cb.certificate_check(move |cert, host| {
        if let Some(hostkey) = cert.as_hostkey() {
            let pinned = match creds {
                Credentials::Ssh { known_hosts, .. } => hostkey
                    .hostkey()
                    .is_some_and(|key| known_hosts.accepts(host, key)),
                _ => false,
            };
            if pinned {
                Ok(CertificateCheckStatus::CertificateOk)
            } else {
                Err(git2::Error::new(
                    ErrorCode::Certificate,
                    ErrorClass::Ssh,
                    "the SSH host key is not pinned in known_hosts: refused",
                ))
            }
        } else {
            // X.509: libgit2 verifies the chain and host name itself.
            Ok(CertificateCheckStatus::CertificatePassthrough)
        }
    });
    cb
}

fn classify(e: git2::Error, attempts: &Attempts, what: &str, proxy: Option<&Proxy>) -> Error {
    if let Some(p) = proxy
        && not_connected(&e, attempts)
    {
        // Through a proxy, every connection libgit2 opens is to the proxy.
        return Error::ProxyUnreachable {
            proxy: p.address().to_owned(),
            source: e,
        };
    }
    if e.code() == ErrorCode::Auth || attempts.refused_url.get() {
        Error::Auth(e)
    } else {
        Error::Fetch {
            what: what.to_owned(),
            source: e,
        }
    }
}

/// Waits between attempts to reach a remote that did not answer at all. A
/// pod's network (its NetworkPolicy rules, the Service it dials) can be
/// programmed a moment after the pod starts; a remote that answered, and
/// above all one that was asked for credentials, is never tried again.
const CONNECT_RETRIES: [std::time::Duration; 3] = [
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
];

/// True when the fetch failed before any exchange with the remote: no
/// credentials were asked for and libgit2 reports a network or OS error.
fn not_connected(e: &git2::Error, attempts: &Attempts) -> bool {
    attempts.credentials.get() == 0
        && !attempts.refused_url.get()
        && e.code() != ErrorCode::Auth
        && matches!(e.class(), ErrorClass::Net | ErrorClass::Os)
        && e.message().to_ascii_lowercase().contains("connect")
}

/// libgit2's proxy options: the step's proxy, or none at all (never
/// libgit2's discovery from config or environment).
fn proxy_options(proxy: Option<&Proxy>) -> ProxyOptions<'static> {
    let mut po = ProxyOptions::new();
    if let Some(p) = proxy {
        // `Proxy::parse` refused control characters, NUL included.
        po.url(p.url());
    }
    po
}

/// When an operation through the proxy failed (other than by not reaching
/// the proxy at all): the proxy's refusal of the remote's host, if it
/// refuses it. `None` without a proxy, when the proxy lets the host
/// through (it was not the proxy), or when it cannot be asked.
fn refusal(
    url: &str,
    proxy: Option<&Proxy>,
    e: &git2::Error,
    attempts: &Attempts,
) -> Option<Error> {
    let p = proxy?;
    if not_connected(e, attempts) {
        return None;
    }
    let target = super::proxy::target_of(url)?;
    tracing::info!(%target, proxy = p.address(), "asking the egress proxy whether it lets the remote through");
    let answer = p.ask(&target)?;
    if !answer.refused() {
        return None;
    }
    Some(Error::ProxyRefused {
        target,
        status: answer.status,
        reason: if answer.reason.is_empty() {
            "no reason given".to_owned()
        } else {
            answer.reason
        },
    })
}

fn fetch_options<'a>(
    url: &'a str,
    creds: &'a Credentials,
    proxy: Option<&Proxy>,
    attempts: &Attempts,
) -> FetchOptions<'a> {
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks(url, creds, attempts))
        .download_tags(AutotagOption::None)
        .follow_redirects(RemoteRedirect::None)
        .proxy_options(proxy_options(proxy))
        .update_fetchhead(false);
    fo
}

/// Fetches `refs/heads/<branch>` of `url` into `refs/remotes/origin/<branch>`
/// of `repo` (whose `origin` remote must exist, or an anonymous one is used
/// when `named` is false), through `proxy` when given, and returns the
/// fetched commit.
///
/// Retried (up to three times, 3.5 s in all) only when nothing answered:
/// the remote, or the proxy, could not be connected to; or the proxy
/// answered 502 (it could not reach the remote). A proxy's refusal (403,
/// 407) is [`Error::ProxyRefused`] at once.
pub fn fetch_branch(
    repo: &Repository,
    url: &str,
    branch: &str,
    creds: &Credentials,
    proxy: Option<&Proxy>,
    named: bool,
) -> Result<git2::Oid> {
    let refspec = format!("+refs/heads/{branch}:refs/remotes/origin/{branch}");
    let mut remote = if named {
        repo.find_remote("origin")
    } else {
        repo.remote_anonymous(url)
    }
    .map_err(Error::git("setting up the remote"))?;
    let mut waits = CONNECT_RETRIES.iter();
    loop {
        let attempts = Attempts::default();
        let mut fo = fetch_options(url, creds, proxy, &attempts);
        let e = match remote.fetch(&[refspec.as_str()], Some(&mut fo), None) {
            Ok(()) => break,
            Err(e) => e,
        };
        let refused = refusal(url, proxy, &e, &attempts);
        let again = match &refused {
            Some(Error::ProxyRefused { status, .. }) => *status == 502,
            _ => not_connected(&e, &attempts),
        };
        match waits.next() {
            Some(wait) if again => {
                // libgit2's connect errors name the host, never a credential;
                // scrubbed all the same (a proxy's reason is, already).
                let (why, what) = match (&refused, proxy) {
                    (Some(r), _) => (r.to_string(), "the egress proxy could not reach the remote"),
                    (None, Some(_)) => (
                        crate::scrub::strip_userinfo(e.message()),
                        "the egress proxy could not be reached",
                    ),
                    (None, None) => (
                        crate::scrub::strip_userinfo(e.message()),
                        "the remote could not be reached",
                    ),
                };
                tracing::warn!(error = %why, wait_ms = wait.as_millis() as u64,
                    "{what}; trying again");
                std::thread::sleep(*wait);
            }
            _ => return Err(refused.unwrap_or_else(|| classify(e, &attempts, branch, proxy))),
        }
    }
    let tracking = format!("refs/remotes/origin/{branch}");
    match repo.refname_to_id(&tracking) {
        Ok(oid) => Ok(oid),
        Err(e) if e.code() == ErrorCode::NotFound => Err(Error::BaseRefNotFound(branch.to_owned())),
        Err(e) => Err(Error::git("reading the fetched branch")(e)),
    }
}

/// Pushes the local ref `src` to `dst` on `url`, through `proxy` when
/// given. `Ok(Err(text))` is a push the remote (or the proxy) refused or
/// that could not reach it; `Err` is a local error. The text is not yet
/// scrubbed.
pub fn push(
    repo: &Repository,
    url: &str,
    src: &str,
    dst: &str,
    creds: &Credentials,
    proxy: Option<&Proxy>,
) -> Result<std::result::Result<(), String>> {
    let attempts = Attempts::default();
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(Error::git("setting up the remote"))?;
    let rejected: Rc<std::cell::RefCell<Vec<String>>> = Rc::default();
    let mut cb = callbacks(url, creds, &attempts);
    let r = rejected.clone();
    cb.push_update_reference(move |refname, status| {
        if let Some(msg) = status {
            r.borrow_mut().push(format!("{refname}: {msg}"));
        }
        Ok(())
    });
    let mut po = PushOptions::new();
    po.remote_callbacks(cb)
        .follow_redirects(RemoteRedirect::None)
        .proxy_options(proxy_options(proxy));
    let refspec = format!("{src}:{dst}");
    match remote.push(&[refspec.as_str()], Some(&mut po)) {
        Err(e) => Ok(Err(match refusal(url, proxy, &e, &attempts) {
            Some(refused) => format!("push failed: {refused}"),
            None if proxy.is_some() && not_connected(&e, &attempts) => format!(
                "push failed: the gateway's egress proxy could not be reached: {}",
                e.message()
            ),
            None => format!("push failed: {}", e.message()),
        })),
        Ok(()) => {
            let rejected = rejected.borrow();
            if rejected.is_empty() {
                Ok(Ok(()))
            } else {
                Ok(Err(format!("push rejected: {}", rejected.join("; "))))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::validate_url;

    #[test]
    fn urls_with_credentials_or_options_are_refused() {
        assert!(validate_url("https://git.example/org/repo.git").is_ok());
        assert!(validate_url("ssh://git@git.example/org/repo.git").is_ok());
        assert!(validate_url("git@git.example:org/repo.git").is_ok());
        assert!(validate_url("https://user:pw@git.example/repo.git").is_err());
        assert!(validate_url("https://token@git.example/repo.git").is_err());
        assert!(validate_url("-uhttps://x").is_err());
        assert!(validate_url("ext::sh -c touch% /tmp/pwned").is_err());
        assert!(validate_url("file:///etc").is_err());
    }
}
