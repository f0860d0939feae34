//! `collect`: after the agent, commit what it left on the task branch with
//! the fixed Hermes identity and a `Hermes-Task:` trailer, keep its own
//! commits, and summarize. The report is advisory: review recomputes it.
//!
//! Staging respects `.gitignore`: ignoring can only leave files *out* of the
//! change, never add any, and what is published is exactly what review
//! reads from the commit, so hiding a file hides it from the change too.
//! `.git` must be a real directory (a gitdir file or symlink is refused).

use git2::{IndexAddOption, Oid, Repository, RepositoryOpenFlags};
use hermes_results::{Collected, DiffStats};

use crate::cli::CollectArgs;
use crate::git::{self, parse_commit_id};
use crate::scope::Globs;
use crate::steps::branch_arg;
use crate::{Error, Result, agent};

/// Runs `collect`.
pub fn run(args: &CollectArgs) -> Result<Collected> {
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    branch_arg("--branch", &args.branch)?;
    task_name(&args.task_name)?;
    let scope = Globs::new("--scope", &args.scope)?;

    let dotgit = args.repo_dir.join(".git");
    match std::fs::symlink_metadata(&dotgit) {
        Ok(m) if m.is_dir() => {}
        _ => {
            return Err(Error::VolumeUnsafe(
                ".git is not a real directory (missing, a file or a symlink)".to_owned(),
            ));
        }
    }
    let repo = Repository::open_ext(
        &args.repo_dir,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|e| Error::VolumeUnsafe(format!("opening the repository: {}", e.message())))?;
    if repo.is_bare() {
        return Err(Error::VolumeUnsafe("the repository is bare".to_owned()));
    }
    let branch_ref = format!("refs/heads/{}", args.branch);
    let branch_tip = repo
        .refname_to_id(&branch_ref)
        .map_err(|_| Error::BranchMissing(args.branch.clone()))?;
    // Commit on top of what HEAD points at when it is the task branch; if the
    // agent moved HEAD elsewhere, on top of the task branch all the same.
    let parent_id = match repo.head() {
        Ok(h) if h.name() == Some(branch_ref.as_str()) => branch_tip,
        _ => {
            tracing::warn!("HEAD is not on the task branch; committing onto the task branch");
            branch_tip
        }
    };
    let parent = repo
        .find_commit(parent_id)
        .map_err(Error::git("reading the task branch head"))?;

    let mut index = repo.index().map_err(Error::git("reading the index"))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(Error::git("staging changes"))?;
    index
        .update_all(["*"], None)
        .map_err(Error::git("staging deletions"))?;
    index.write().map_err(Error::git("writing the index"))?;
    let tree_id = index.write_tree().map_err(Error::git("writing the tree"))?;

    let head = if tree_id == parent.tree_id() {
        parent_id
    } else {
        let tree = repo
            .find_tree(tree_id)
            .map_err(Error::git("reading the tree"))?;
        let sig = git::hermes_signature()?;
        let message = format!(
            "hermes: changes left by the agent for task {0}\n\nHermes-Task: {0}\n",
            args.task_name
        );
        let oid = repo
            .commit(None, &sig, &sig, &message, &tree, &[&parent])
            .map_err(Error::git("committing"))?;
        repo.reference(&branch_ref, oid, true, "hermes collect")
            .map_err(Error::git("updating the task branch"))?;
        oid
    };
    if repo
        .head()
        .ok()
        .and_then(|h| h.name().map(str::to_owned))
        .as_deref()
        != Some(&branch_ref)
    {
        repo.set_head(&branch_ref)
            .map_err(Error::git("setting HEAD"))?;
    }

    let (commits, diff, out_of_scope) = summarize(&repo, base, head, &scope)?;
    let exit_code = match &args.agent_exit_code_file {
        // `exec` always writes it; its absence means the agent never ran to the end.
        Some(path) => std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .unwrap_or(-1),
        None => args.agent_exit_code,
    };
    let agent = args
        .agent_output
        .as_deref()
        .and_then(|p| agent::read_report(p, exit_code));
    Ok(Collected {
        head_commit: head.to_string(),
        commits,
        diff,
        out_of_scope,
        agent,
        truncated: false,
    })
}

/// Checks a task name (a Kubernetes object name).
pub fn task_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::arg("--task-name", "not a Kubernetes object name"))
    }
}

fn summarize(
    repo: &Repository,
    base: Oid,
    head: Oid,
    scope: &Globs,
) -> Result<(u64, DiffStats, Vec<String>)> {
    let mut walk = repo.revwalk().map_err(Error::git("walking commits"))?;
    walk.push(head).map_err(Error::git("walking commits"))?;
    walk.hide(base).map_err(|_| {
        Error::CommitMismatch("the base commit is not in the repository".to_owned())
    })?;
    let commits = walk.count() as u64;
    let base_tree = repo
        .find_commit(base)
        .and_then(|c| c.tree())
        .map_err(Error::git("reading the base tree"))?;
    let head_tree = repo
        .find_commit(head)
        .and_then(|c| c.tree())
        .map_err(Error::git("reading the head tree"))?;
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&head_tree), None)
        .map_err(Error::git("diffing"))?;
    let stats = diff.stats().map_err(Error::git("diff stats"))?;
    let mut out = Vec::new();
    for d in diff.deltas() {
        for f in [d.old_file(), d.new_file()] {
            if let Some(p) = f.path().and_then(|p| p.to_str())
                && !scope.matches(p)
                && !out.iter().any(|o| o == p)
            {
                out.push(p.to_owned());
            }
        }
    }
    Ok((
        commits,
        DiffStats {
            files: stats.files_changed() as u64,
            insertions: stats.insertions() as u64,
            deletions: stats.deletions() as u64,
        },
        out,
    ))
}
