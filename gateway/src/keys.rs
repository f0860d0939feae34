//! The secrets the gateway holds, read from mounted files and re-read when
//! they change (a rotated Secret takes effect without a restart): the
//! signing key the operator mints credentials with, and the model API keys.
//!
//! ```text
//!   --signing-key-file /etc/hermes/signing/key
//!   --model-credentials-dir /etc/hermes/models
//!       <name>/api-key        the key sent upstream
//!       <name>/auth-scheme    x-api-key (default) | bearer
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use hermes_crds::gateway::SigningKey;

use crate::Error;

/// How often a file's modification time is looked at, at most.
const STAT_EVERY: Duration = Duration::from_secs(1);

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

struct Cached<T> {
    value: T,
    mtime: Option<SystemTime>,
    checked: Instant,
}

/// Where the signing key comes from.
pub struct KeySource {
    path: Option<PathBuf>,
    state: Mutex<Option<Cached<Option<SigningKey>>>>,
}

impl KeySource {
    /// The key in `path`, re-read whenever its modification time changes.
    pub fn file(path: PathBuf) -> Self {
        Self {
            path: Some(path),
            state: Mutex::new(None),
        }
    }

    /// A fixed key (tests, benches).
    pub fn fixed(key: SigningKey) -> Self {
        Self {
            path: None,
            state: Mutex::new(Some(Cached {
                value: Some(key),
                mtime: None,
                checked: Instant::now(),
            })),
        }
    }

    /// Reads the key now, reporting why it cannot be used.
    pub fn load(&self) -> Result<SigningKey, Error> {
        let Some(path) = &self.path else {
            return self.current().ok_or(Error::NoSigningKey);
        };
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })?;
        SigningKey::from_bytes(&bytes).map_err(|source| Error::SigningKey {
            path: path.clone(),
            source,
        })
    }

    /// The key as of now (`None` while the file is missing or invalid).
    pub fn current(&self) -> Option<SigningKey> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(path) = &self.path else {
            return state.as_ref().and_then(|c| c.value.clone());
        };
        if let Some(c) = state.as_mut() {
            if c.checked.elapsed() < STAT_EVERY {
                return c.value.clone();
            }
            c.checked = Instant::now();
            if mtime(path) == c.mtime && c.value.is_some() {
                return c.value.clone();
            }
        }
        let stamp = mtime(path);
        let value = std::fs::read(path)
            .ok()
            .and_then(|b| SigningKey::from_bytes(&b).ok());
        if value.is_none() {
            tracing::warn!(path = %path.display(), "the signing key file is missing or invalid");
        }
        *state = Some(Cached {
            value: value.clone(),
            mtime: stamp,
            checked: Instant::now(),
        });
        value
    }
}

/// How the key goes upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthScheme {
    /// `x-api-key: <key>` (the Anthropic API's own header).
    ApiKey,
    /// `Authorization: Bearer <key>`.
    Bearer,
}

/// One model API key.
#[derive(Clone)]
pub struct ModelCredential {
    /// The key.
    pub key: String,
    /// The header it goes in.
    pub scheme: AuthScheme,
}

impl std::fmt::Debug for ModelCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelCredential({:?}, ..)", self.scheme)
    }
}

/// The model credentials directory: one subdirectory per credential.
pub struct Credentials {
    dir: Option<PathBuf>,
    cache: Mutex<HashMap<String, Cached<Option<ModelCredential>>>>,
}

/// Whether `name` can only name a subdirectory (a Kubernetes object name).
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !name.starts_with('.')
}

impl Credentials {
    /// The credentials under `dir` (`None`: no credential at all).
    pub fn new(dir: Option<PathBuf>) -> Self {
        Self {
            dir,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn read(dir: &Path) -> Option<ModelCredential> {
        let key = std::fs::read_to_string(dir.join("api-key")).ok()?;
        let key = key.trim().to_owned();
        if key.is_empty() || key.bytes().any(|b| b.is_ascii_control()) {
            return None;
        }
        let scheme = match std::fs::read_to_string(dir.join("auth-scheme")) {
            Err(_) => AuthScheme::ApiKey,
            Ok(s) => match s.trim() {
                "" | "x-api-key" => AuthScheme::ApiKey,
                "bearer" => AuthScheme::Bearer,
                other => {
                    tracing::warn!(scheme = other, "unknown auth-scheme; using x-api-key");
                    AuthScheme::ApiKey
                }
            },
        };
        Some(ModelCredential { key, scheme })
    }

    /// The credential `name`, as its files are now.
    pub fn get(&self, name: &str) -> Option<ModelCredential> {
        let dir = self.dir.as_ref()?;
        if !safe_name(name) {
            return None;
        }
        let sub = dir.join(name);
        let stamp = (mtime(&sub.join("api-key")), mtime(&sub.join("auth-scheme")));
        let stamp = stamp.0.max(stamp.1);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(name)
            && c.mtime == stamp
            && c.value.is_some()
        {
            return c.value.clone();
        }
        let value = Self::read(&sub);
        cache.insert(
            name.to_owned(),
            Cached {
                value: value.clone(),
                mtime: stamp,
                checked: Instant::now(),
            },
        );
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_is_read_with_its_scheme_and_rotates_without_restart() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sub = dir.path().join("anthropic");
        std::fs::create_dir(&sub).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(sub.join("api-key"), "sk-one\n").unwrap_or_else(|e| panic!("{e}"));
        let creds = Credentials::new(Some(dir.path().to_owned()));
        let c = creds.get("anthropic").unwrap_or_else(|| panic!("missing"));
        assert_eq!((c.key.as_str(), c.scheme), ("sk-one", AuthScheme::ApiKey));
        // Rotate: a new file (the kubelet swaps a symlink; the mtime changes).
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(sub.join("api-key"), "sk-two").unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(sub.join("auth-scheme"), "bearer").unwrap_or_else(|e| panic!("{e}"));
        let c = creds.get("anthropic").unwrap_or_else(|| panic!("missing"));
        assert_eq!((c.key.as_str(), c.scheme), ("sk-two", AuthScheme::Bearer));
        assert!(creds.get("missing").is_none());
        assert!(creds.get("../anthropic").is_none());
        assert!(creds.get("..").is_none());
    }

    #[test]
    fn the_signing_key_is_reread_when_its_file_changes() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("key");
        let keys = KeySource::file(path.clone());
        assert!(keys.current().is_none());
        assert!(keys.load().is_err());
        std::fs::write(&path, [1u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        // The missing file was remembered a moment ago; after STAT_EVERY it is read.
        std::thread::sleep(STAT_EVERY + Duration::from_millis(50));
        let a = keys.current().unwrap_or_else(|| panic!("no key"));
        std::fs::write(&path, [2u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(STAT_EVERY + Duration::from_millis(50));
        let b = keys.current().unwrap_or_else(|| panic!("no key"));
        assert_ne!(a.usage_reader_token(), b.usage_reader_token());
        assert!(keys.load().is_ok());
    }
}
