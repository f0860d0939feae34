//! Git credentials from a mounted Kubernetes Secret, used only in memory.
//!
//! The directory holds the Secret's keys as files: `username` + `password`
//! (HTTPS basic), or `token` (HTTPS, sent as the password of `username`, by
//! default `x-access-token`), or `ssh-privatekey` + `known_hosts` (SSH; hosts
//! not in `known_hosts` are refused). Nothing here is ever written to disk,
//! logged (the `Debug` output is redacted) or put into a result: the
//! [`Scrubber`] built from them removes the values from every message.

use std::path::Path;

use base64::Engine as _;

use crate::scrub::Scrubber;
use crate::{Error, Result};

/// Largest credential file read.
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// How to authenticate to the remote.
#[derive(Clone, Default)]
pub enum Credentials {
    /// No credentials (anonymous remote).
    #[default]
    None,
    /// HTTPS basic authentication (a token is a password).
    Basic {
        /// User name.
        username: String,
        /// Password or token.
        password: String,
    },
    /// SSH key with pinned host keys.
    Ssh {
        /// User name, when the Secret names one (else the URL's, else `git`).
        username: Option<String>,
        /// The private key, PEM/OpenSSH text.
        private_key: String,
        /// The pinned host keys.
        known_hosts: KnownHosts,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::None => f.write_str("Credentials::None"),
            Credentials::Basic { .. } => f.write_str("Credentials::Basic([redacted])"),
            Credentials::Ssh { .. } => f.write_str("Credentials::Ssh([redacted])"),
        }
    }
}

fn read_opt(dir: &Path, name: &str) -> Result<Option<String>> {
    read_secret_file(dir, name, "credential file")
}

/// Reads the file `name` of a mounted Secret directory: `None` when it is
/// not there; an error (`what` names the file's role; never its content)
/// when it is not a regular file or holds more than 64 KiB. The read itself
/// is bounded, so a file that grows after the size check is refused too.
pub(crate) fn read_secret_file(
    dir: &Path,
    name: &str,
    what: &'static str,
) -> Result<Option<String>> {
    use std::io::Read as _;
    let path = dir.join(name);
    let read = || -> std::io::Result<Option<String>> {
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
            Ok(m) if !m.is_file() => {
                return Err(std::io::Error::other("not a regular file"));
            }
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                return Err(std::io::Error::other("larger than 64 KiB"));
            }
            Ok(_) => {}
        }
        let mut text = String::new();
        std::fs::File::open(&path)?
            .take(MAX_FILE_BYTES + 1)
            .read_to_string(&mut text)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(std::io::Error::other("larger than 64 KiB"));
        }
        Ok(Some(text))
    };
    read().map_err(|source| Error::ReadInput {
        what,
        path: path.clone(),
        source,
    })
}

fn one_line(name: &str, value: String) -> Result<String> {
    let v = value.trim_end_matches(['\n', '\r']).to_owned();
    if v.is_empty() || v.chars().any(char::is_control) {
        return Err(Error::Credentials(format!(
            "{name} must be one non-empty line"
        )));
    }
    Ok(v)
}

impl Credentials {
    /// Loads the credentials in `dir`; `None` for no directory.
    pub fn load(dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = dir else {
            return Ok(Credentials::None);
        };
        let username = read_opt(dir, "username")?
            .map(|u| one_line("username", u))
            .transpose()?;
        let password = read_opt(dir, "password")?
            .map(|p| one_line("password", p))
            .transpose()?;
        let token = read_opt(dir, "token")?
            .map(|t| one_line("token", t))
            .transpose()?;
        let key = read_opt(dir, "ssh-privatekey")?;
        let known = read_opt(dir, "known_hosts")?;
        match (password, token, key) {
            (Some(password), None, None) => Ok(Credentials::Basic {
                username: username
                    .ok_or_else(|| Error::Credentials("password without username".to_owned()))?,
                password,
            }),
            (None, Some(token), None) => Ok(Credentials::Basic {
                username: username.unwrap_or_else(|| "x-access-token".to_owned()),
                password: token,
            }),
            (None, None, Some(private_key)) => {
                let known = known.ok_or_else(|| {
                    Error::Credentials(
                        "ssh-privatekey without known_hosts: unpinned host keys are refused"
                            .to_owned(),
                    )
                })?;
                Ok(Credentials::Ssh {
                    username,
                    private_key,
                    known_hosts: KnownHosts::parse(&known),
                })
            }
            (None, None, None) => Ok(Credentials::None),
            _ => Err(Error::Credentials(
                "exactly one of password, token or ssh-privatekey must be given".to_owned(),
            )),
        }
    }

    /// A scrubber that removes these credentials from texts.
    pub fn scrubber(&self) -> Scrubber {
        match self {
            Credentials::None => Scrubber::default(),
            Credentials::Basic { username, password } => {
                Scrubber::new([password.clone()], Some((username, password)))
            }
            Credentials::Ssh { private_key, .. } => Scrubber::new([private_key.clone()], None),
        }
    }
}

/// Pinned SSH host keys, from an OpenSSH `known_hosts` file. Plain host
/// patterns only (`host`, `[host]:port`, comma lists); hashed entries and
/// wildcards are not supported and never match.
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    entries: Vec<(Vec<String>, Vec<u8>)>,
}

impl KnownHosts {
    /// Parses the file; lines it does not understand are skipped.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(hosts), Some(_kind), Some(key)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if hosts.starts_with('|') {
                continue;
            }
            let Ok(key) = base64::engine::general_purpose::STANDARD.decode(key) else {
                continue;
            };
            let hosts = hosts.split(',').map(str::to_ascii_lowercase).collect();
            entries.push((hosts, key));
        }
        Self { entries }
    }

    /// Whether `key` (the raw host key the server showed) is pinned for
    /// `host` (libgit2 passes the host name; a port other than 22 appears as
    /// `[host]:port` in the file, which is accepted too).
    pub fn accepts(&self, host: &str, key: &[u8]) -> bool {
        let host = host.to_ascii_lowercase();
        self.entries.iter().any(|(hosts, k)| {
            k == key
                && hosts.iter().any(|h| {
                    *h == host
                        || h.strip_prefix('[')
                            .and_then(|r| r.split_once("]:"))
                            .is_some_and(|(name, _port)| name == host)
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_accepts_only_pinned_key_for_host() {
        let key = base64::engine::general_purpose::STANDARD.encode(b"hostkey-bytes");
        let kh = KnownHosts::parse(&format!(
            "# comment\ngit.example,10.0.0.1 ssh-ed25519 {key}\n|1|hashed|entry ssh-ed25519 {key}\n[other.example]:2222 ssh-rsa {key}\n"
        ));
        assert!(kh.accepts("git.example", b"hostkey-bytes"));
        assert!(kh.accepts("other.example", b"hostkey-bytes"));
        assert!(!kh.accepts("git.example", b"another-key"));
        assert!(!kh.accepts("evil.example", b"hostkey-bytes"));
    }

    #[test]
    fn token_defaults_to_x_access_token_user() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "tok-123\n").unwrap();
        let c = Credentials::load(Some(dir.path())).unwrap();
        match c {
            Credentials::Basic { username, password } => {
                assert_eq!(username, "x-access-token");
                assert_eq!(password, "tok-123");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ssh_key_without_known_hosts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ssh-privatekey"), "KEY").unwrap();
        assert!(matches!(
            Credentials::load(Some(dir.path())),
            Err(Error::Credentials(_))
        ));
    }
}
