//! Branch heads recomputed from the volume's ref files, parsed as data:
//! loose refs under `refs/heads` (no symlinks, small regular files, a full
//! object id or a symref that stays inside `refs/heads`), then
//! `packed-refs`. Odd ref names anywhere are reported, never used.

use std::path::Path;

use git2::Oid;
use hermes_results::{Finding, Severity};

use super::volume::finding;
use crate::{Error, Result};

const MAX_REF_FILE: u64 = 4096;
const MAX_PACKED_REFS: u64 = 64 << 20;
const MAX_SYMREF_DEPTH: usize = 5;
const MAX_LOOSE_REFS: usize = 100_000;

/// Whether a ref name is one the runner would ever use: valid by git's
/// rules and made only of unremarkable characters.
pub fn plain_ref_name(name: &str) -> bool {
    git2::Reference::is_valid_name(name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'+'))
}

fn parse_oid(text: &str) -> Option<Oid> {
    let t = text.trim_end_matches('\n');
    let hex = t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if hex && (t.len() == 40 || t.len() == 64) {
        Oid::from_str(t).ok()
    } else {
        None
    }
}

enum Loose {
    Missing,
    Oid(Oid),
    Symref(String),
}

fn read_loose(git_dir: &Path, name: &str) -> Result<Loose> {
    let mut path = git_dir.to_owned();
    for part in name.split('/') {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Err(_) => return Ok(Loose::Missing),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::VolumeUnsafe(format!(
                    "ref {name} goes through a symlink"
                )));
            }
            Ok(_) => {}
        }
    }
    let meta = std::fs::symlink_metadata(&path)
        .map_err(|e| Error::VolumeUnsafe(format!("ref {name}: {e}")))?;
    if meta.is_dir() {
        return Ok(Loose::Missing);
    }
    if !meta.is_file() || meta.len() > MAX_REF_FILE {
        return Err(Error::VolumeUnsafe(format!(
            "ref {name} is not a small regular file"
        )));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| Error::VolumeUnsafe(format!("ref {name}: {e}")))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::VolumeUnsafe(format!("ref {name} is not UTF-8")))?;
    if let Some(oid) = parse_oid(text) {
        return Ok(Loose::Oid(oid));
    }
    if let Some(target) = text.strip_prefix("ref: ") {
        return Ok(Loose::Symref(target.trim_end_matches('\n').to_owned()));
    }
    Err(Error::VolumeUnsafe(format!("ref {name} is malformed")))
}

/// What `packed-refs` holds: valid entries, and the odd names seen.
#[derive(Debug, Default)]
pub struct PackedRefs {
    /// Entries with plain names.
    pub refs: Vec<(String, Oid)>,
    /// Lines with odd or invalid names or values (escaped for display).
    pub odd: Vec<String>,
}

/// Parses `packed-refs` text.
pub fn parse_packed_refs(text: &str) -> PackedRefs {
    let mut out = PackedRefs::default();
    for line in text.split('\n') {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(peeled) = line.strip_prefix('^') {
            if parse_oid(peeled).is_none() {
                out.odd.push(line.escape_default().to_string());
            }
            continue;
        }
        match line.split_once(' ') {
            Some((oid, name)) if plain_ref_name(name) => match parse_oid(oid) {
                Some(oid) => out.refs.push((name.to_owned(), oid)),
                None => out.odd.push(line.escape_default().to_string()),
            },
            _ => out.odd.push(line.escape_default().to_string()),
        }
    }
    out
}

fn packed_refs(git_dir: &Path) -> Result<PackedRefs> {
    let path = git_dir.join("packed-refs");
    let Ok(meta) = std::fs::symlink_metadata(&path) else {
        return Ok(PackedRefs::default());
    };
    if !meta.is_file() || meta.len() > MAX_PACKED_REFS {
        return Err(Error::VolumeUnsafe(
            "packed-refs is not a regular file of sane size".to_owned(),
        ));
    }
    let bytes =
        std::fs::read(&path).map_err(|e| Error::VolumeUnsafe(format!("packed-refs: {e}")))?;
    Ok(parse_packed_refs(&String::from_utf8_lossy(&bytes)))
}

/// Resolves `refs/heads/<branch>` in the volume, following symrefs only
/// inside `refs/heads`, and reports odd refs seen on the way.
pub fn resolve_branch(git_dir: &Path, branch: &str) -> Result<(Oid, Vec<Finding>)> {
    let packed = packed_refs(git_dir)?;
    let mut findings = Vec::new();
    if !packed.odd.is_empty() {
        findings.push(finding(
            Severity::Warn,
            "oddRefName",
            Some(".git/packed-refs"),
            format!(
                "packed-refs has odd or invalid entries (ignored): {}",
                packed.odd.join(" | ")
            ),
        ));
    }
    let mut loose = Vec::new();
    let mut odd_loose = Vec::new();
    scan_loose(&git_dir.join("refs"), "refs", &mut loose, &mut odd_loose, 0);
    if !odd_loose.is_empty() {
        findings.push(finding(
            Severity::Warn,
            "oddRefName",
            Some(".git/refs"),
            format!(
                "loose refs with odd names (ignored): {}",
                odd_loose.join(" | ")
            ),
        ));
    }
    let replace: Vec<&String> = loose
        .iter()
        .chain(packed.refs.iter().map(|(n, _)| n))
        .filter(|n| n.starts_with("refs/replace/"))
        .collect();
    if !replace.is_empty() {
        findings.push(finding(
            Severity::Reject,
            "replaceRefs",
            None,
            format!(
                "replace refs planted in the volume (ignored): {}",
                replace.len()
            ),
        ));
    }

    let mut name = format!("refs/heads/{branch}");
    for _ in 0..=MAX_SYMREF_DEPTH {
        if !plain_ref_name(&name) || !name.starts_with("refs/heads/") {
            return Err(Error::VolumeUnsafe(format!(
                "branch {branch} is a symbolic ref to {} outside refs/heads",
                name.escape_default()
            )));
        }
        match read_loose(git_dir, &name)? {
            Loose::Oid(oid) => return Ok((oid, findings)),
            Loose::Symref(target) => {
                name = target;
                continue;
            }
            Loose::Missing => {}
        }
        return match packed.refs.iter().find(|(n, _)| *n == name) {
            Some((_, oid)) => Ok((*oid, findings)),
            None => Err(Error::BranchMissing(branch.to_owned())),
        };
    }
    Err(Error::VolumeUnsafe(format!(
        "branch {branch}: symbolic refs nested too deep"
    )))
}

fn scan_loose(
    dir: &Path,
    prefix: &str,
    names: &mut Vec<String>,
    odd: &mut Vec<String>,
    depth: usize,
) {
    if depth > 16 || names.len() > MAX_LOOSE_REFS {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let name = format!("{prefix}/{file}");
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            scan_loose(&entry.path(), &name, names, odd, depth + 1);
        } else {
            if !plain_ref_name(&name) || ft.is_symlink() {
                odd.push(name.escape_default().to_string());
            }
            names.push(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_refs_with_path_tricks_and_shell_characters_are_odd() {
        let oid = "1111111111111111111111111111111111111111";
        let text = format!(
            "# pack-refs with: peeled fully-peeled sorted \n{oid} refs/heads/main\n^{oid}\n\
             {oid} refs/heads/../../etc/passwd\n{oid} refs/heads/$(touch x)\n{oid} refs/heads/a\x07b\nnot-an-oid refs/heads/x\n"
        );
        let p = parse_packed_refs(&text);
        assert_eq!(p.refs.len(), 1);
        assert_eq!(p.refs[0].0, "refs/heads/main");
        assert_eq!(p.odd.len(), 4, "{:?}", p.odd);
    }

    #[test]
    fn plain_ref_names() {
        assert!(plain_ref_name("refs/heads/hermes/task-1"));
        assert!(!plain_ref_name("refs/heads/a;b"));
        assert!(!plain_ref_name("refs/heads/a..b"));
        assert!(!plain_ref_name("refs/heads/`x`"));
    }
}
