//! Process-wide libgit2 hardening, done first thing in `main`.

use std::path::Path;

use git2::ConfigLevel;

use crate::{Error, Result};

/// Points every config search path (system, global, XDG, programdata) at
/// `empty_dir`, so no `gitconfig` outside a repository of the runner's own
/// is ever read (no `safe.directory`, `url.*.insteadOf`, `http.proxy`,
/// `core.sshCommand` from the image or `$HOME`), and turns on strict object
/// creation and hash verification of every object read. libgit2's owner
/// validation stays on (its default; nothing here turns it off).
///
/// Must run before any other thread exists and before any libgit2 call.
#[allow(unsafe_code)]
pub fn harden(empty_dir: &Path) -> Result<()> {
    let empty = empty_dir
        .to_str()
        .ok_or_else(|| Error::arg("empty config dir", "not UTF-8"))?;
    for level in [
        ConfigLevel::System,
        ConfigLevel::Global,
        ConfigLevel::XDG,
        ConfigLevel::ProgramData,
    ] {
        // SAFETY: `set_search_path` mutates libgit2's global settings without
        // locking. It is called here, in `main`, before any thread is started
        // and before any other libgit2 call, so nothing can race with it.
        unsafe { git2::opts::set_search_path(level, empty) }.map_err(Error::Init)?;
    }
    git2::opts::strict_object_creation(true);
    git2::opts::strict_hash_verification(true);
    Ok(())
}

/// Where the empty config directory is: an empty directory that exists in
/// every runner image (`/var/empty`) or, failing that, a path that does not
/// exist, which libgit2 treats as empty.
pub fn empty_config_dir() -> &'static Path {
    const CANDIDATE: &str = "/var/empty";
    let p = Path::new(CANDIDATE);
    let empty = std::fs::read_dir(p).is_ok_and(|mut entries| entries.next().is_none());
    if empty {
        p
    } else {
        Path::new("/nonexistent/hermes-empty-config")
    }
}

/// The system's CA bundle in the runner image (Debian's path; the image
/// copies the build machine's bundle there).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Adds to the roots libgit2's TLS trusts for https remotes: the system
/// bundle when the image has one (git2's start-up probe of well-known paths
/// finds it too; loading it here does not hang on that list), then `extra`, a PEM bundle the profile names for a private CA
/// (`--ca-file`). Both add to what OpenSSL trusts already (`SSL_CERT_FILE`
/// included); neither replaces it. A missing or unreadable `extra` is an
/// invalid argument, not a silent fall-back to the system roots.
///
/// Must run before any other thread exists, like [`harden`].
#[allow(unsafe_code)]
pub fn trust(extra: Option<&Path>) -> Result<()> {
    let system = Path::new(SYSTEM_CA_BUNDLE);
    if system.is_file() {
        // SAFETY: as in `harden`: one thread, before any clone or fetch.
        unsafe { git2::opts::set_ssl_cert_file(system) }.map_err(Error::Init)?;
    }
    if let Some(file) = extra {
        let pem = std::fs::read(file)
            .map_err(|e| Error::arg("--ca-file", format!("{}: {e}", file.display())))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(Error::arg(
                "--ca-file",
                format!("{} holds no PEM certificate", file.display()),
            ));
        }
        // SAFETY: as above.
        unsafe { git2::opts::set_ssl_cert_file(file) }
            .map_err(|e| Error::arg("--ca-file", format!("{}: {}", file.display(), e.message())))?;
    }
    Ok(())
}

/// Bounds every network wait of libgit2: `seconds` to connect (TCP, and the
/// proxy's CONNECT), and `seconds` for each read or write of the remote
/// (the TLS handshake included) before the fetch or push fails. A remote or
/// proxy that accepts and then says nothing fails the step in about that
/// time instead of holding the pod to its deadline.
///
/// Must run before any other thread exists, like [`harden`].
#[allow(unsafe_code)]
pub fn network_timeouts(seconds: u32) -> Result<()> {
    let ms = libc::c_int::try_from(u64::from(seconds) * 1000)
        .map_err(|_| Error::arg("--network-timeout", "too large"))?;
    // SAFETY: as in `harden`: one thread, before any clone or fetch.
    unsafe { git2::opts::set_server_connect_timeout_in_milliseconds(ms) }.map_err(Error::Init)?;
    // SAFETY: as above.
    unsafe { git2::opts::set_server_timeout_in_milliseconds(ms) }.map_err(Error::Init)?;
    Ok(())
}
