//! `publish`: fresh clone of the base branch from the remote (push
//! credentials; fetch and push through the gateway's egress proxy with
//! `--proxy-dir`), copy the reviewed commit's objects out of the volume as
//! data (hash-verified; no config, no refs), check ancestry, then merge
//! (always a merge commit Hermes authors, naming the task and the reviewed
//! commit; a conflict pushes nothing) or push the task branch. A refused push is a result (`pushed: false`), not a failure.
//!
//! Checks, in order: the remote base still contains the base commit (it
//! moved only forward); the reviewed commit descends from the base commit.

use git2::{MergeOptions, Oid, Repository};
use hermes_results::{PublishMode, Published};

use crate::cli::{Mode, PublishArgs};
use crate::credentials::Credentials;
use crate::git::proxy::Proxy;
use crate::git::{self, copy, parse_commit_id, remote, volume};
use crate::steps::{branch_arg, collect::task_name, empty_dir};
use crate::{Error, Result};

/// The local ref pushed from.
const PUBLISH_REF: &str = "refs/hermes/publish";

/// Runs `publish`; `Ok(Published{pushed: false, ..})` when the push failed.
pub fn run(args: &PublishArgs, creds: &Credentials, proxy: Option<&Proxy>) -> Result<Published> {
    remote::validate_url(&args.url)?;
    branch_arg("--base-ref", &args.base_ref)?;
    branch_arg("--branch", &args.branch)?;
    task_name(&args.task_name)?;
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    let reviewed = parse_commit_id("--reviewed-commit", &args.reviewed_commit)?;
    empty_dir("--work-dir", &args.work_dir)?;

    // The volume, as data.
    let vol = volume::check(&args.repo_dir)?;
    let src = volume::open_objects(&vol, &args.work_dir.join("volume-objects.git"))?;
    let unreadable = |oid: Oid| {
        move |e: git2::Error| {
            if e.code() == git2::ErrorCode::NotFound {
                Error::CommitMismatch(format!("commit {oid} is not in the volume's objects"))
            } else {
                Error::ObjectInvalid {
                    oid: oid.to_string(),
                    problem: e.message().to_owned(),
                }
            }
        }
    };
    src.find_commit(reviewed).map_err(unreadable(reviewed))?;
    if reviewed != base
        && !src
            .graph_descendant_of(reviewed, base)
            .map_err(unreadable(reviewed))?
    {
        return Err(Error::CommitMismatch(format!(
            "the reviewed commit {reviewed} does not descend from the base commit {base}"
        )));
    }

    // The fresh clone, from the remote only.
    let clone = git::init_private(&args.work_dir.join("clone.git"), true)?;
    let remote_base = remote::fetch_branch(&clone, &args.url, &args.base_ref, creds, proxy, false)?;
    if remote_base != base
        && !(clone.odb().is_ok_and(|o| o.exists(base))
            && clone
                .graph_descendant_of(remote_base, base)
                .unwrap_or(false))
    {
        return Err(Error::CommitMismatch(format!(
            "the remote base branch {} no longer contains the base commit {base}: it was rewritten",
            args.base_ref
        )));
    }

    let copied = copy::copy_range(&src, &clone, reviewed, base)?;
    tracing::info!(copied, %reviewed, "copied the reviewed objects out of the volume");
    drop(src);
    let _ = std::fs::remove_dir_all(args.work_dir.join("volume-objects.git"));

    let (mode, target, dst) = match args.mode {
        Mode::Branch => (
            PublishMode::Branch,
            reviewed,
            format!("refs/heads/{}", args.branch),
        ),
        Mode::Merge => {
            let merged = merge(&clone, remote_base, reviewed, &args.task_name)?;
            (
                PublishMode::Merge,
                merged,
                format!("refs/heads/{}", args.base_ref),
            )
        }
    };
    clone
        .reference(PUBLISH_REF, target, true, "hermes publish")
        .map_err(Error::git("recording the commit to push"))?;
    let scrubber = match proxy {
        Some(p) => creds.scrubber().with(p.scrubber()),
        None => creds.scrubber(),
    };
    let pushed = remote::push(&clone, &args.url, PUBLISH_REF, &dst, creds, proxy)?;
    let merge_commit = (mode == PublishMode::Merge).then(|| target.to_string());
    Ok(match pushed {
        Ok(()) => Published {
            mode,
            merge_commit,
            pushed: true,
            push_error: None,
        },
        Err(text) => {
            let text = scrubber.scrub(&text);
            tracing::warn!(error = %text, "push failed");
            Published {
                mode,
                merge_commit,
                pushed: false,
                push_error: Some(text),
            }
        }
    })
}

/// Merges the reviewed commit into the remote base with a merge commit, also
/// when a fast-forward would do: the base branch then shows, in one commit
/// Hermes authored, where a reviewed task entered it and which commit was
/// reviewed (`Hermes-Reviewed-Commit`), and `git revert -m 1` undoes the whole
/// task. Nothing to merge (the base already is the reviewed commit) merges
/// nothing. Conflicts fail the step.
fn merge(repo: &Repository, remote_base: Oid, reviewed: Oid, task: &str) -> Result<Oid> {
    if remote_base == reviewed
        || repo
            .graph_descendant_of(remote_base, reviewed)
            .map_err(Error::git("checking ancestry"))?
    {
        return Ok(remote_base);
    }
    let ours = repo
        .find_commit(remote_base)
        .map_err(Error::git("reading the base"))?;
    let theirs = repo
        .find_commit(reviewed)
        .map_err(Error::git("reading the reviewed commit"))?;
    let sig = git::hermes_signature()?;
    let message = format!(
        "Merge hermes task {task}\n\nHermes-Task: {task}\nHermes-Reviewed-Commit: {reviewed}\n"
    );
    // The base did not move: the merge's tree is the reviewed tree, as is
    // (no index, no checkout of anything the agent wrote).
    if repo
        .graph_descendant_of(reviewed, remote_base)
        .map_err(Error::git("checking ancestry"))?
    {
        let tree = theirs
            .tree()
            .map_err(Error::git("reading the reviewed tree"))?;
        return repo
            .commit(None, &sig, &sig, &message, &tree, &[&ours, &theirs])
            .map_err(Error::git("committing the merge"));
    }
    let mut opts = MergeOptions::new();
    opts.fail_on_conflict(false);
    let mut index = repo
        .merge_commits(&ours, &theirs, Some(&opts))
        .map_err(Error::git("merging"))?;
    if index.has_conflicts() {
        let mut paths = Vec::new();
        if let Ok(conflicts) = index.conflicts() {
            for c in conflicts.flatten().take(20) {
                let entry = c.our.or(c.their).or(c.ancestor);
                if let Some(e) = entry {
                    paths.push(String::from_utf8_lossy(&e.path).into_owned());
                }
            }
        }
        return Err(Error::MergeConflict { paths });
    }
    let tree_id = index
        .write_tree_to(repo)
        .map_err(Error::git("writing the merged tree"))?;
    let tree = repo
        .find_tree(tree_id)
        .map_err(Error::git("reading the merged tree"))?;
    repo.commit(None, &sig, &sig, &message, &tree, &[&ours, &theirs])
        .map_err(Error::git("committing the merge"))
}
