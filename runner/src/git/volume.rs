//! The repo volume read as data. Its shape is checked before anything is
//! read (`.git` a real directory, no alternates, nothing but directories and
//! regular files under `objects/`), and its objects are looked up through a
//! fresh bare repository of the runner's own whose object database borrows
//! the volume's `objects/` directory: libgit2 then reads no config, hooks,
//! attributes, refs, `shallow`, grafts or commit-graph of the volume.
//!
//! The volume is mounted read-only in the review and publish pods and the
//! agent's pod has finished, so what is checked is what is read.

use std::path::{Path, PathBuf};

use git2::Repository;
use hermes_results::{Finding, FindingSource, Severity};

use crate::{Error, Result};

/// A policy finding.
pub fn finding(
    severity: Severity,
    code: &str,
    path: Option<&str>,
    message: impl Into<String>,
) -> Finding {
    Finding {
        severity,
        source: FindingSource::Policy,
        code: code.to_owned(),
        path: path.map(str::to_owned),
        message: message.into(),
    }
}

/// Largest number of entries scanned under `objects/` before giving up.
const MAX_OBJECT_ENTRIES: usize = 2_000_000;

/// The checked volume: its git directory and what was observed.
#[derive(Debug)]
pub struct Volume {
    /// `<repo-dir>/.git`, a real directory.
    pub git_dir: PathBuf,
    /// Observations on the volume (planted config, hooks, grafts, ...).
    pub findings: Vec<Finding>,
}

fn unsafe_(what: impl Into<String>) -> Error {
    Error::VolumeUnsafe(what.into())
}

fn lstat(path: &Path) -> Option<std::fs::Metadata> {
    std::fs::symlink_metadata(path).ok()
}

/// Checks the volume's shape; fails on what makes it unsafe to read.
pub fn check(repo_dir: &Path) -> Result<Volume> {
    let meta = lstat(repo_dir).ok_or_else(|| unsafe_("the repo directory does not exist"))?;
    if !meta.is_dir() {
        return Err(unsafe_(
            "the repo directory is not a directory (or is a symlink)",
        ));
    }
    let git_dir = repo_dir.join(".git");
    let meta = lstat(&git_dir).ok_or_else(|| unsafe_(".git is missing"))?;
    if meta.file_type().is_symlink() {
        return Err(unsafe_(
            ".git is a symlink: refusing to follow it out of the volume",
        ));
    }
    if meta.is_file() {
        return Err(unsafe_(
            ".git is a file (a gitdir pointer): refusing to follow it",
        ));
    }
    if !meta.is_dir() {
        return Err(unsafe_(".git is not a directory"));
    }
    let objects = git_dir.join("objects");
    match lstat(&objects) {
        Some(m) if m.is_dir() => {}
        _ => return Err(unsafe_(".git/objects is not a real directory")),
    }
    for alt in ["info/alternates", "info/http-alternates"] {
        if lstat(&objects.join(alt)).is_some() {
            return Err(unsafe_(format!(
                "objects/{alt} is present: objects would be read from outside the volume"
            )));
        }
    }
    scan_objects(&objects)?;

    let mut findings = Vec::new();
    if lstat(&git_dir.join("info/grafts")).is_some() {
        findings.push(finding(
            Severity::Reject,
            "grafts",
            None,
            "info/grafts planted in the volume (ignored: history is read from the objects)",
        ));
    }
    if lstat(&git_dir.join("shallow")).is_some() {
        findings.push(finding(
            Severity::Reject,
            "shallow",
            None,
            "a shallow file was planted in the volume (prepare clones in full; ignored)",
        ));
    }
    if lstat(&git_dir.join("commondir")).is_some() || lstat(&git_dir.join("gitdir")).is_some() {
        findings.push(finding(
            Severity::Reject,
            "gitdirPointer",
            None,
            "commondir/gitdir pointer files planted in .git (ignored)",
        ));
    }
    config_findings(&git_dir, &mut findings);
    hook_findings(&git_dir, &mut findings);
    for planted in [".claude", ".mcp.json"] {
        if lstat(&repo_dir.join(planted)).is_some() {
            findings.push(finding(
                Severity::Warn,
                "agentSettingsInWorktree",
                Some(planted),
                "agent settings in the volume's work tree: the reviewer must ignore repository settings",
            ));
        }
    }
    Ok(Volume { git_dir, findings })
}

fn scan_objects(objects: &Path) -> Result<()> {
    let mut count = 0usize;
    let mut stack = vec![(objects.to_owned(), 0u8)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir)
            .map_err(|e| unsafe_(format!("reading {}: {e}", display_rel(objects, &dir))))?;
        for entry in entries {
            let entry = entry.map_err(|e| unsafe_(format!("reading objects: {e}")))?;
            count += 1;
            if count > MAX_OBJECT_ENTRIES {
                return Err(unsafe_("too many entries under .git/objects"));
            }
            let path = entry.path();
            let ft = entry
                .file_type()
                .map_err(|e| unsafe_(format!("reading objects: {e}")))?;
            if ft.is_symlink() {
                return Err(unsafe_(format!(
                    "{} is a symlink: objects must be plain files",
                    display_rel(objects, &path)
                )));
            }
            if ft.is_dir() {
                if depth >= 2 {
                    return Err(unsafe_("unexpected directory depth under .git/objects"));
                }
                stack.push((path, depth + 1));
            } else if !ft.is_file() {
                return Err(unsafe_(format!(
                    "{} is not a regular file (fifo, socket or device)",
                    display_rel(objects, &path)
                )));
            }
        }
    }
    Ok(())
}

fn display_rel(base: &Path, path: &Path) -> String {
    format!(
        "objects/{}",
        path.strip_prefix(base).unwrap_or(path).display()
    )
}

/// Config keys that would run code or redirect traffic under the git CLI.
const DANGEROUS_CONFIG: &[&str] = &[
    "fsmonitor",
    "hookspath",
    "sshcommand",
    "gitproxy",
    "insteadof",
    "pushinsteadof",
    "[include",
    "[includeif",
    "[filter",
    "textconv",
    "askpass",
    "[credential",
    "pager",
    "editor",
    "proxy",
    "worktree",
    "[diff",
    "[merge",
    "attributesfile",
    "sparsecheckout",
    "[url",
];

fn config_findings(git_dir: &Path, findings: &mut Vec<Finding>) {
    let path = git_dir.join("config");
    let Some(meta) = lstat(&path) else { return };
    if !meta.is_file() || meta.len() > 1 << 20 {
        findings.push(finding(
            Severity::Warn,
            "volumeConfig",
            None,
            ".git/config is not a small regular file (ignored)",
        ));
        return;
    }
    let Ok(text) = std::fs::read(&path) else {
        return;
    };
    let text = String::from_utf8_lossy(&text).to_ascii_lowercase();
    let mut hits: Vec<&str> = DANGEROUS_CONFIG
        .iter()
        .copied()
        .filter(|k| text.contains(k))
        .map(|k| k.trim_start_matches('['))
        .collect();
    hits.dedup();
    if !hits.is_empty() {
        findings.push(finding(
            Severity::Warn,
            "volumeConfig",
            Some(".git/config"),
            format!(
                "the volume's .git/config sets {} (never read by the runner; dangerous for anyone running git in this volume)",
                hits.join(", ")
            ),
        ));
    }
}

fn hook_findings(git_dir: &Path, findings: &mut Vec<Finding>) {
    let Ok(entries) = std::fs::read_dir(git_dir.join("hooks")) else {
        return;
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".sample"))
        .collect();
    names.sort();
    if !names.is_empty() {
        findings.push(finding(
            Severity::Warn,
            "plantedHook",
            Some(".git/hooks"),
            format!(
                "hooks planted in the volume: {} (never run by the runner)",
                names.join(", ")
            ),
        ));
    }
}

/// A bare repository of the runner's own at `scratch`, whose object
/// database is the (checked) volume's objects and nothing else. Nothing else
/// of the volume is read through it.
///
/// The database is a fresh one with the volume's objects as its only
/// (alternate) backend, rather than the scratch repository's own database
/// plus an alternate: libgit2 skips an alternate whose directory has the same
/// inode number as a backend it already has, without comparing devices, and
/// on file systems that number inodes per mount (gVisor's) the scratch and
/// volume `objects` directories can share one — the volume's objects then
/// silently went missing.
pub fn open_objects(volume: &Volume, scratch: &Path) -> Result<Repository> {
    let repo = crate::git::init_private(scratch, true)?;
    let objects = volume.git_dir.join("objects");
    let objects = objects
        .to_str()
        .ok_or_else(|| unsafe_("the volume path is not UTF-8"))?;
    let odb = git2::Odb::new()
        .and_then(|odb| odb.add_disk_alternate(objects).map(|()| odb))
        .map_err(|e| unsafe_(format!("opening the volume's objects: {}", e.message())))?;
    repo.set_odb(&odb)
        .map_err(|e| unsafe_(format!("opening the volume's objects: {}", e.message())))?;
    Ok(repo)
}
