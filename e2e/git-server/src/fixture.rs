//! The git CLI as fixture builder: isolated from every user and system
//! configuration, with a fixed identity.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// The `pre-receive` hook [`refuse_pushes`] installs.
const REFUSING_HOOK: &str = "#!/bin/sh\n\
# Installed by hermes-git-server's refuse_pushes: the remote refuses every push.\n\
echo 'hermes-git-server: this repository refuses pushes (pre-receive hook)' >&2\n\
exit 1\n";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// Runs the git CLI in `dir` with an isolated configuration (no system or
/// global config, no `HOME`, no prompt, a fixed author and committer) and
/// returns its trimmed standard output.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let failed = |message: String| Error::Git {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        dir: dir.to_owned(),
        message,
    };
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", "/nonexistent")
        .env("GIT_AUTHOR_NAME", "Fixture")
        .env("GIT_AUTHOR_EMAIL", "fixture@example.invalid")
        .env("GIT_COMMITTER_NAME", "Fixture")
        .env("GIT_COMMITTER_EMAIL", "fixture@example.invalid")
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| failed(e.to_string()))?;
    if !out.status.success() {
        return Err(failed(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// [`try_git`] for tests and fixtures: returns the trimmed standard output.
///
/// # Panics
///
/// When git cannot be run or fails; the message has its standard error.
pub fn git(dir: &Path, args: &[&str]) -> String {
    match try_git(dir, args) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// Creates `repo` (and its parents) as an empty bare repository whose
/// `HEAD` is `main`.
pub fn init_bare(repo: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(repo).map_err(io(repo))?;
    try_git(repo, &["init", "-q", "--bare", "-b", "main"]).map(drop)
}

fn pre_receive(repo: &Path) -> PathBuf {
    repo.join("hooks").join("pre-receive")
}

/// Makes the bare repository `repo` refuse every push: installs a
/// `pre-receive` hook that exits 1. The client's push then fails with
/// `[remote rejected] ... (pre-receive hook declined)` (the HTTP exchange
/// itself answers 200: the refusal is inside the git protocol), and no ref
/// changes. [`accept_pushes`] undoes it.
pub fn refuse_pushes(repo: &Path) -> Result<(), Error> {
    let hooks = repo.join("hooks");
    std::fs::create_dir_all(&hooks).map_err(io(&hooks))?;
    let hook = pre_receive(repo);
    std::fs::write(&hook, REFUSING_HOOK).map_err(io(&hook))?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).map_err(io(&hook))
}

/// Removes the `pre-receive` hook of `repo`, if any: pushes are accepted again.
pub fn accept_pushes(repo: &Path) -> Result<(), Error> {
    let hook = pre_receive(repo);
    match std::fs::remove_file(&hook) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&hook)(e)),
        _ => Ok(()),
    }
}

/// Writes a credentials directory as the runner reads it (`username` and
/// `password` files, one line each) at `dir`, and returns `dir`.
pub fn write_credentials(dir: &Path, (user, password): (&str, &str)) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for (name, value) in [("username", user), ("password", password)] {
        let f = dir.join(name);
        std::fs::write(&f, format!("{value}\n")).map_err(io(&f))?;
    }
    Ok(dir.to_owned())
}

/// `http://user:password@host/...`: how the git CLI is given basic
/// credentials non-interactively (it answers the server's 401 with them).
/// The user and password are inserted as they are (no percent-encoding), so
/// they must be URL-safe, as the default users are.
pub fn with_userinfo(url: &str, (user, password): (&str, &str)) -> String {
    url.replacen("http://", &format!("http://{user}:{password}@"), 1)
}
