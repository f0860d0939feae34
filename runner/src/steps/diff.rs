//! `diff`: print the reviewed change, `--base-commit..--commit`, as a git
//! patch on standard output. Run by `kubectl hermes diff` in a short-lived
//! pod that mounts the task's repo volume read-only, with no credentials and
//! no network.
//!
//! The volume is read as data, as `context` reads it: its shape is checked
//! first, its objects are looked up through a private repository (no config,
//! hooks, attributes or refs of the volume; every object hash-verified), and
//! both commits come from the caller (the task's status), never from a ref
//! on the volume. The patch is built in memory up to `--max-bytes` (container
//! logs, which carry it, rotate past 10 MiB); a larger diff is an error
//! rather than a silently cut one.

use git2::{DiffFormat, DiffOptions, Oid, Repository};

use crate::cli::DiffArgs;
use crate::git::{parse_commit_id, volume};
use crate::{Error, Result};

/// Runs `diff`: the patch from the base commit's tree to the commit's.
pub fn run(args: &DiffArgs) -> Result<Vec<u8>> {
    let base = parse_commit_id("--base-commit", &args.base_commit)?;
    let commit = parse_commit_id("--commit", &args.commit)?;
    if args.max_bytes == 0 {
        return Err(Error::arg("--max-bytes", "must be positive"));
    }
    crate::steps::empty_dir("--scratch-dir", &args.scratch_dir)?;
    let vol = volume::check(&args.repo_dir)?;
    let result = volume::open_objects(&vol, &args.scratch_dir)
        .and_then(|repo| patch(&repo, base, commit, args.max_bytes));
    let _ = std::fs::remove_dir_all(&args.scratch_dir);
    result
}

fn patch(repo: &Repository, base: Oid, commit: Oid, max: u64) -> Result<Vec<u8>> {
    let find = |id: Oid, arg: &str| -> Result<git2::Tree<'_>> {
        let missing = |e: git2::Error| {
            if e.code() == git2::ErrorCode::NotFound {
                Error::CommitMismatch(format!("{arg} {id} is not in the volume's objects"))
            } else {
                Error::ObjectInvalid {
                    oid: id.to_string(),
                    problem: e.message().to_owned(),
                }
            }
        };
        repo.find_commit(id).and_then(|c| c.tree()).map_err(missing)
    };
    let base_tree = find(base, "--base-commit")?;
    let tree = find(commit, "--commit")?;
    let mut opts = DiffOptions::new();
    opts.ignore_submodules(false);
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&tree), Some(&mut opts))
        .map_err(|e| Error::ObjectInvalid {
            oid: commit.to_string(),
            problem: e.message().to_owned(),
        })?;
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut too_large = false;
    let printed = diff.print(DiffFormat::Patch, |_, _, line| {
        let origin = line.origin();
        let extra = usize::from(matches!(origin, '+' | '-' | ' '));
        if out.len() + extra + line.content().len() > limit {
            too_large = true;
            return false;
        }
        if extra == 1 {
            out.push(origin as u8);
        }
        out.extend_from_slice(line.content());
        true
    });
    if too_large {
        return Err(Error::TooLarge {
            what: "the diff",
            limit: max,
        });
    }
    printed.map_err(|e| Error::ObjectInvalid {
        oid: commit.to_string(),
        problem: e.message().to_owned(),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use git2::{Repository, Signature};

    use super::*;

    /// A work tree with a base commit and a change on top; (dir, base, head).
    fn repo() -> (tempfile::TempDir, Oid, Oid) {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("repo");
        let repo = Repository::init(&dir).expect("init");
        let sig = Signature::now("t", "t@example.com").expect("sig");
        let commit = |files: &[(&str, &str)], parent: Option<Oid>| -> Oid {
            for (path, text) in files {
                let p = dir.join(path);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(p, text).expect("write");
            }
            let mut index = repo.index().expect("index");
            index
                .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
                .expect("add");
            index.write().expect("write index");
            let tree = repo
                .find_tree(index.write_tree().expect("tree"))
                .expect("tree");
            let parents: Vec<git2::Commit<'_>> = parent
                .map(|p| repo.find_commit(p).expect("parent"))
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit<'_>> = parents.iter().collect();
            repo.commit(Some("HEAD"), &sig, &sig, "c", &tree, &refs)
                .expect("commit")
        };
        let base = commit(
            &[
                ("src/greet.sh", "echo \"Hello $name\"\n"),
                ("README.md", "# r\n"),
            ],
            None,
        );
        let head = commit(
            &[
                ("src/greet.sh", "echo \"Hello, $name!\"\n"),
                ("src/new.txt", "new\n"),
            ],
            Some(base),
        );
        (tmp, base, head)
    }

    fn args(dir: &Path, base: Oid, commit: Oid, scratch: PathBuf) -> DiffArgs {
        DiffArgs {
            repo_dir: dir.join("repo"),
            base_commit: base.to_string(),
            commit: commit.to_string(),
            scratch_dir: scratch,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn prints_the_patch_from_base_to_commit() {
        let (tmp, base, head) = repo();
        let out = run(&args(tmp.path(), base, head, tmp.path().join("scratch"))).expect("diff");
        let text = String::from_utf8(out).expect("utf-8");
        assert!(
            text.contains("diff --git a/src/greet.sh b/src/greet.sh"),
            "{text}"
        );
        assert!(
            text.contains("-echo \"Hello $name\"\n+echo \"Hello, $name!\"\n"),
            "{text}"
        );
        assert!(
            text.contains("+++ b/src/new.txt\n@@ -0,0 +1 @@\n+new\n"),
            "{text}"
        );
        assert!(!text.contains("README"), "{text}");
        assert!(
            !tmp.path().join("scratch").exists(),
            "the scratch repository is removed"
        );
    }

    #[test]
    fn a_diff_larger_than_the_limit_is_an_error() {
        let (tmp, base, head) = repo();
        let mut a = args(tmp.path(), base, head, tmp.path().join("scratch"));
        a.max_bytes = 40;
        let e = run(&a).expect_err("too large");
        assert!(matches!(e, Error::TooLarge { limit: 40, .. }), "{e}");
    }

    #[test]
    fn commits_come_from_the_caller_and_must_be_in_the_volume() {
        let (tmp, base, _) = repo();
        let absent = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
        let e = run(&args(tmp.path(), base, absent, tmp.path().join("s1"))).expect_err("absent");
        assert!(matches!(e, Error::CommitMismatch(_)), "{e}");
        let mut a = args(tmp.path(), base, base, tmp.path().join("s2"));
        a.commit = "HEAD".into();
        assert!(matches!(run(&a), Err(Error::InvalidArgument { .. })));
    }

    #[test]
    fn an_unsafe_volume_is_refused() {
        let (tmp, base, head) = repo();
        let alternates = tmp.path().join("repo/.git/objects/info/alternates");
        std::fs::create_dir_all(alternates.parent().expect("parent")).expect("mkdir");
        std::fs::write(&alternates, "/elsewhere\n").expect("write");
        let e = run(&args(tmp.path(), base, head, tmp.path().join("scratch"))).expect_err("unsafe");
        assert!(matches!(e, Error::VolumeUnsafe(_)), "{e}");
    }
}
