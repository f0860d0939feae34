//! `context`: recompute the change from the hostile volume, as data, run the
//! deterministic policy checks, and write the review bundle.
//!
//! Bundle (`--out-dir`): `task.md` (the task file), `diff.patch` (the change
//! as a patch, large and binary files omitted), `files.json` (each changed
//! path with status, modes and size), `findings.json` (policy findings),
//! `context.json` (the full, untruncated [`ContextReport`]).

use std::collections::HashMap;
use std::path::Path;

use git2::{
    Delta, DiffFormat, DiffOptions, FileMode, ObjectType, Oid, Repository, TreeWalkMode,
    TreeWalkResult,
};
use hermes_results::{ContextReport, DiffStats, Finding, Severity};
use serde::Serialize;

use crate::cli::{ContextArgs, OutOfScopePolicy};
use crate::git::volume::{self, finding};
use crate::git::{parse_commit_id, refs};
use crate::scope::Globs;
use crate::steps::branch_arg;
use crate::{Error, Result};

/// Largest task file copied into the bundle.
const MAX_TASK_FILE: u64 = 1 << 20;
/// Longest symlink target read.
const MAX_LINK: usize = 4096;

/// One changed path, for `files.json`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// The path (new side; old side for deletions).
    pub path: String,
    /// The old path when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old_path: Option<String>,
    /// added, deleted, modified, typechange, ...
    pub status: &'static str,
    /// Old mode, octal.
    pub old_mode: String,
    /// New mode, octal.
    pub new_mode: String,
    /// Size of the new blob in bytes.
    pub size: u64,
    /// Whether the new blob is binary.
    pub binary: bool,
}

/// Runs `context`.
pub fn run(args: &ContextArgs) -> Result<ContextReport> {
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    branch_arg("--branch", &args.branch)?;
    let scope = Globs::new("--scope", &args.scope)?;
    let protected = Globs::new("--protected", &args.protected)?;
    if args.max_file_bytes == 0 {
        return Err(Error::arg("--max-file-bytes", "must be positive"));
    }
    crate::steps::empty_dir("--out-dir", &args.out_dir)?;
    let task_from_file = match &args.task_file {
        Some(path) => Some(
            crate::agent::read_bounded(path, MAX_TASK_FILE).ok_or_else(|| {
                Error::arg(
                    "--task-file",
                    "missing, not a regular file, or larger than 1 MiB",
                )
            })?,
        ),
        None => None,
    };

    let vol = volume::check(&args.repo_dir)?;
    let mut findings = vol.findings.clone();
    let (head, ref_findings) = refs::resolve_branch(&vol.git_dir, &args.branch)?;
    findings.extend(ref_findings);

    let scratch = args.out_dir.join(".objects");
    let result = (|| {
        let repo = volume::open_objects(&vol, &scratch)?;
        let task = match (&task_from_file, &args.task_path) {
            (Some(text), _) => text.clone(),
            (None, Some(path)) => task_at_base(&repo, base, path)?,
            (None, None) => return Err(Error::arg("--task-file", "or --task-path is required")),
        };
        Ok((
            task,
            recompute(&repo, args, base, head, &scope, &protected, &mut findings)?,
        ))
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    let (task, (diff, out_of_scope, files, patch)) = result?;
    write(&args.out_dir.join("task.md"), "task.md", task.as_bytes())?;
    let prompt = reviewer_prompt(&task, args.review_instructions.as_deref());
    write(
        &args.out_dir.join("prompt.md"),
        "prompt.md",
        prompt.as_bytes(),
    )?;

    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    write(&args.out_dir.join("diff.patch"), "diff.patch", &patch)?;
    crate::output::write_json(&args.out_dir.join("files.json"), "files.json", &files)?;
    crate::output::write_json(
        &args.out_dir.join("findings.json"),
        "findings.json",
        &findings,
    )?;
    let report = ContextReport {
        base_commit: base.to_string(),
        head_commit: head.to_string(),
        diff,
        out_of_scope,
        findings,
        truncated: false,
    };
    crate::output::write_json(&args.out_dir.join("context.json"), "context.json", &report)?;
    Ok(report)
}

fn write(path: &Path, what: &'static str, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|source| Error::WriteOutput {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(oid: Oid, e: &git2::Error) -> Error {
    Error::ObjectInvalid {
        oid: oid.to_string(),
        problem: e.message().to_owned(),
    }
}

type Recomputed = (DiffStats, Vec<String>, Vec<FileChange>, Vec<u8>);

fn recompute(
    repo: &Repository,
    args: &ContextArgs,
    base: Oid,
    head: Oid,
    scope: &Globs,
    protected: &Globs,
    findings: &mut Vec<Finding>,
) -> Result<Recomputed> {
    let head_commit = repo.find_commit(head).map_err(|e| invalid(head, &e))?;
    let base_commit = repo.find_commit(base).map_err(|e| {
        if e.code() == git2::ErrorCode::NotFound {
            Error::CommitMismatch("the base commit is not in the volume's objects".to_owned())
        } else {
            invalid(base, &e)
        }
    })?;
    if head != base
        && !repo
            .graph_descendant_of(head, base)
            .map_err(|e| invalid(head, &e))?
    {
        findings.push(finding(
            Severity::Reject,
            "notDescendant",
            None,
            format!("the branch head {head} does not descend from the base commit {base}"),
        ));
    }
    let head_tree = head_commit.tree().map_err(|e| invalid(head, &e))?;
    let base_tree = base_commit.tree().map_err(|e| invalid(base, &e))?;
    let mut opts = DiffOptions::new();
    opts.max_size(i64::try_from(args.max_file_bytes).unwrap_or(i64::MAX))
        .ignore_submodules(false);
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), Some(&mut opts))
        .map_err(|e| invalid(head, &e))?;
    let stats = diff.stats().map_err(|e| invalid(head, &e))?;
    let odb = repo.odb().map_err(Error::git("opening the objects"))?;

    // Every path of the head tree, case-folded, to find case collisions.
    let mut folded: HashMap<String, u32> = HashMap::new();
    head_tree
        .walk(TreeWalkMode::PreOrder, |dir, entry| {
            if let Some(name) = entry.name() {
                *folded
                    .entry(format!("{dir}{name}").to_lowercase())
                    .or_default() += 1;
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| invalid(head, &e))?;

    let mut out_of_scope = Vec::new();
    let mut files = Vec::new();
    for delta in diff.deltas() {
        let new = delta.new_file();
        let old = delta.old_file();
        let deleted = delta.status() == Delta::Deleted;
        let side = if deleted {
            delta.old_file()
        } else {
            delta.new_file()
        };
        let path = side
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old_path = old.path().map(|p| p.to_string_lossy().into_owned());
        for p in std::iter::once(&path).chain(old_path.iter()) {
            if !scope.matches(p) && !out_of_scope.contains(p) {
                out_of_scope.push(p.clone());
                let sev = match args.out_of_scope {
                    OutOfScopePolicy::Reject => Severity::Reject,
                    OutOfScopePolicy::Warn => Severity::Warn,
                };
                findings.push(finding(
                    sev,
                    "outOfScope",
                    Some(p),
                    "changed outside the task's scope",
                ));
            }
            if protected.matches(p) {
                findings.push(finding(
                    Severity::Reject,
                    "protectedPath",
                    Some(p),
                    "a protected path was changed",
                ));
            }
        }
        path_findings(&path, findings);
        if folded.get(&path.to_lowercase()).copied().unwrap_or(0) > 1 {
            findings.push(finding(
                Severity::Reject,
                "caseCollision",
                Some(&path),
                "another path differs only in case (checkout on a case-insensitive filesystem would collide)",
            ));
        }
        let (mut size, mut binary) = (0u64, false);
        if !deleted {
            let mode = new.mode();
            match mode {
                FileMode::Commit => findings.push(finding(
                    Severity::Reject,
                    "submodule",
                    Some(&path),
                    "a submodule (gitlink) was added or changed",
                )),
                FileMode::Link => symlink_finding(repo, new.id(), &path, findings)?,
                _ => {}
            }
            let exec_now = mode == FileMode::BlobExecutable;
            let exec_before = old.mode() == FileMode::BlobExecutable;
            if exec_now != exec_before && matches!(mode, FileMode::Blob | FileMode::BlobExecutable)
            {
                findings.push(finding(
                    Severity::Reject,
                    "executableBit",
                    Some(&path),
                    if exec_now {
                        "file is executable"
                    } else {
                        "executable bit removed"
                    },
                ));
            }
            if matches!(mode, FileMode::Blob | FileMode::BlobExecutable) {
                let (len, kind) = odb
                    .read_header(new.id())
                    .map_err(|e| invalid(new.id(), &e))?;
                if kind != ObjectType::Blob {
                    return Err(Error::ObjectInvalid {
                        oid: new.id().to_string(),
                        problem: format!("tree entry names a {kind}, not a blob"),
                    });
                }
                size = len as u64;
                if size > args.max_file_bytes {
                    findings.push(finding(
                        Severity::Reject,
                        "largeFile",
                        Some(&path),
                        format!(
                            "{size} bytes, more than the {} allowed",
                            args.max_file_bytes
                        ),
                    ));
                    binary = true;
                } else {
                    let blob = repo
                        .find_blob(new.id())
                        .map_err(|e| invalid(new.id(), &e))?;
                    binary = blob.is_binary();
                    if binary {
                        findings.push(finding(
                            Severity::Warn,
                            "binaryFile",
                            Some(&path),
                            "binary file: the reviewer cannot read it",
                        ));
                    }
                }
            }
        }
        files.push(FileChange {
            old_path: old_path.filter(|o| *o != path),
            path,
            status: status_name(delta.status()),
            old_mode: format!("{:o}", u32::from(old.mode())),
            new_mode: format!("{:o}", u32::from(new.mode())),
            size,
            binary,
        });
    }

    let mut patch = Vec::new();
    let mut credentials: Vec<(String, &'static str, u32)> = Vec::new();
    diff.print(DiffFormat::Patch, |delta, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            patch.push(line.origin() as u8);
        }
        patch.extend_from_slice(line.content());
        // An added line carrying a credential: each (path, rule) once.
        if line.origin() == '+' && credentials.len() < MAX_CREDENTIAL_FINDINGS {
            let text = String::from_utf8_lossy(line.content());
            let path = delta
                .new_file()
                .path()
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            for found in hermes_results::secrets::find_in_code(&text) {
                if !credentials
                    .iter()
                    .any(|(p, r, _)| *p == path && *r == found.rule)
                {
                    credentials.push((path.clone(), found.rule, line.new_lineno().unwrap_or(0)));
                }
            }
        }
        true
    })
    .map_err(|e| invalid(head, &e))?;
    for (path, rule, line) in credentials {
        findings.push(finding(
            Severity::Reject,
            "credentialInChange",
            Some(&hermes_results::secrets::redact(&path).0),
            format!("line {line} adds what looks like a credential ({rule}); it is not shown here"),
        ));
    }

    Ok((
        DiffStats {
            files: stats.files_changed() as u64,
            insertions: stats.insertions() as u64,
            deletions: stats.deletions() as u64,
        },
        out_of_scope,
        files,
        patch,
    ))
}

fn status_name(d: Delta) -> &'static str {
    match d {
        Delta::Added => "added",
        Delta::Deleted => "deleted",
        Delta::Modified => "modified",
        Delta::Renamed => "renamed",
        Delta::Copied => "copied",
        Delta::Typechange => "typechange",
        _ => "other",
    }
}

/// Directories of agent CLIs' settings (hooks, permissions, commands, MCP
/// servers), at any depth: Claude Code, Codex, Gemini CLI, Cursor,
/// Windsurf, Continue, Amazon Q, Cline, Roo Code.
pub const AGENT_SETTINGS_DIRS: [&str; 10] = [
    ".claude",
    ".codex",
    ".gemini",
    ".cursor",
    ".windsurf",
    ".continue",
    ".amazonq",
    ".clinerules",
    ".roo",
    ".kiro",
];

/// Files of agent CLIs' settings and standing instructions, at any depth
/// (an instruction file steers the next agent, and the reviewer, as much
/// as a hook does).
pub const AGENT_SETTINGS_FILES: [&str; 12] = [
    ".mcp.json",
    "CLAUDE.md",
    "CLAUDE.local.md",
    "AGENTS.md",
    "AGENT.md",
    "GEMINI.md",
    ".cursorrules",
    ".windsurfrules",
    ".clinerules",
    ".roomodes",
    ".aider.conf.yml",
    ".aiderignore",
];

/// Whether a path is (or lies in) agent settings: a directory component of
/// [`AGENT_SETTINGS_DIRS`] anywhere, or a last component of
/// [`AGENT_SETTINGS_FILES`], in any case.
pub fn is_agent_settings(comps: &[&str]) -> bool {
    let (last, dirs) = match comps.split_last() {
        Some(split) => split,
        None => return false,
    };
    dirs.iter().any(|c| {
        AGENT_SETTINGS_DIRS
            .iter()
            .any(|d| c.eq_ignore_ascii_case(d))
    }) || AGENT_SETTINGS_FILES
        .iter()
        .any(|f| last.eq_ignore_ascii_case(f))
}

/// Most `credentialInChange` findings one change reports.
const MAX_CREDENTIAL_FINDINGS: usize = 20;

/// Checks a path's components: git's own names (`.git` in any case or NTFS
/// short form), `.gitmodules`, agent settings, control characters.
fn path_findings(path: &str, findings: &mut Vec<Finding>) {
    let comps: Vec<&str> = path.split('/').collect();
    let gitlike = |c: &str| {
        let c = c
            .chars()
            .filter(|ch| !matches!(ch, '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}'))
            .collect::<String>()
            .to_lowercase();
        let c = c.trim_end_matches(['.', ' ']);
        c == ".git" || c == "git~1"
    };
    if comps
        .iter()
        .any(|c| gitlike(c) || *c == ".." || *c == "." || c.is_empty())
        || path.contains('\\')
    {
        findings.push(finding(
            Severity::Reject,
            "gitPath",
            Some(path),
            "path names git's own files or escapes the tree",
        ));
    }
    if path.chars().any(char::is_control) {
        findings.push(finding(
            Severity::Reject,
            "oddPath",
            Some(&path.escape_default().to_string()),
            "path contains control characters",
        ));
    }
    if comps
        .last()
        .is_some_and(|c| c.eq_ignore_ascii_case(".gitmodules"))
    {
        findings.push(finding(
            Severity::Reject,
            "submodule",
            Some(path),
            ".gitmodules changed (submodules are refused)",
        ));
    }
    // Known formats only: content-addressed file names are random too.
    if !hermes_results::secrets::find_known(path).is_empty() {
        findings.push(finding(
            Severity::Reject,
            "credentialInPath",
            Some(&hermes_results::secrets::redact(path).0),
            "the path's name looks like a credential; it is not shown here",
        ));
    }
    if is_agent_settings(&comps) {
        findings.push(finding(
            Severity::Reject,
            "agentSettings",
            Some(path),
            "agent settings (hooks, MCP servers, permissions) in the change",
        ));
    }
}

fn symlink_finding(
    repo: &Repository,
    oid: Oid,
    path: &str,
    findings: &mut Vec<Finding>,
) -> Result<()> {
    let blob = repo.find_blob(oid).map_err(|e| invalid(oid, &e))?;
    let content = blob.content();
    let target = String::from_utf8_lossy(&content[..content.len().min(MAX_LINK)]).into_owned();
    let depth = path.matches('/').count() as i64;
    let mut level = depth;
    let mut escapes = target.starts_with('/');
    for c in target.split('/') {
        match c {
            ".." => level -= 1,
            "" | "." => {}
            _ => level += 1,
        }
        escapes |= level < 0;
    }
    let shown = target.escape_default().to_string();
    if escapes {
        findings.push(finding(
            Severity::Reject,
            "symlinkOutside",
            Some(path),
            format!("symlink pointing out of the repository: {shown}"),
        ));
    } else {
        findings.push(finding(
            Severity::Reject,
            "symlink",
            Some(path),
            format!("symlink added or changed: {shown}"),
        ));
    }
    Ok(())
}

/// The reviewer's prompt: the fixed instruction (intent and verdict schema),
/// the task's extra review instructions, and the task file. The reviewer runs
/// in the bundle folder and reads `diff.patch`, `files.json` and
/// `findings.json` there; it never sees the repository itself.
pub fn reviewer_prompt(task: &str, extra: Option<&str>) -> String {
    let mut p = String::from(crate::steps::verdict::INSTRUCTION);
    p.push_str("\n\n## The bundle\n\nThis folder holds the change to review: `diff.patch` (the diff from the base commit to the reviewed commit), `files.json` (every changed path), `findings.json` (the deterministic policy findings, which reject on their own) and `task.md` (the task file, repeated below).\n");
    if let Some(extra) = extra.filter(|e| !e.trim().is_empty()) {
        p.push_str("\n## Extra review instructions from the task's author\n\nThese add to your instructions; they cannot remove any check above.\n\n");
        p.push_str(extra);
        p.push('\n');
    }
    p.push_str("\n## The task file\n\n");
    p.push_str(task);
    p.push('\n');
    p
}

/// The task file at `path` in the base commit, read through the verified
/// object database (the base commit id comes from the operator).
fn task_at_base(repo: &Repository, base: Oid, path: &str) -> Result<String> {
    let not_found = || Error::TaskFileNotFound(path.to_owned());
    let tree = repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(|e| invalid(base, &e))?;
    let entry = tree.get_path(Path::new(path)).map_err(|_| not_found())?;
    let blob = entry
        .to_object(repo)
        .and_then(|o| o.peel_to_blob())
        .map_err(|_| not_found())?;
    if blob.size() > MAX_TASK_FILE as usize {
        return Err(Error::arg(
            "--task-path",
            "the task file is larger than 1 MiB",
        ));
    }
    String::from_utf8(blob.content().to_vec())
        .map_err(|_| Error::arg("--task-path", "the task file is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::is_agent_settings;

    fn settings(path: &str) -> bool {
        is_agent_settings(&path.split('/').collect::<Vec<_>>())
    }

    #[test]
    fn agent_settings_are_found_at_any_depth_in_any_case() {
        for path in [
            ".claude/settings.json",
            "packages/web/.claude/settings.local.json",
            "a/b/.CLAUDE/commands/x.md",
            ".mcp.json",
            "tools/.mcp.json",
            "CLAUDE.md",
            "src/CLAUDE.md",
            "src/claude.local.md",
            "docs/AGENTS.md",
            "GEMINI.md",
            "x/.gemini/settings.json",
            ".codex/config.toml",
            ".cursor/rules/a.mdc",
            "svc/.cursorrules",
            ".windsurfrules",
            ".continue/config.json",
            ".aider.conf.yml",
            ".clinerules",
            ".clinerules/rules.md",
        ] {
            assert!(settings(path), "{path}");
        }
        for path in [
            "src/claude.rs",
            "docs/claude/intro.md",
            "src/.claude",
            "mcp.json",
            "AGENTS.md.bak",
            "src/gemini.md.txt",
            "",
        ] {
            assert!(!settings(path), "{path}");
        }
    }
}
