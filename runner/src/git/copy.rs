//! Copying the objects of a commit range out of the volume, as data: each
//! object is read raw, re-hashed and compared with its id, parsed only after
//! that, and written into the destination object database, which must
//! produce the same id again.

use std::collections::HashSet;

use git2::{ObjectType, Odb, Oid, Repository};

use crate::{Error, Result};

fn invalid(oid: Oid, problem: impl Into<String>) -> Error {
    Error::ObjectInvalid {
        oid: oid.to_string(),
        problem: problem.into(),
    }
}

struct Copier<'a> {
    src: &'a Odb<'a>,
    dst: &'a Odb<'a>,
    seen: HashSet<Oid>,
    copied: usize,
}

impl Copier<'_> {
    /// Copies one object; returns its kind, or `None` when `dst` already had it.
    fn object(&mut self, oid: Oid, expect: ObjectType) -> Result<Option<Vec<u8>>> {
        if !self.seen.insert(oid) || self.dst.exists(oid) {
            return Ok(None);
        }
        let obj = self
            .src
            .read(oid)
            .map_err(|e| invalid(oid, format!("unreadable: {}", e.message())))?;
        let kind = obj.kind();
        let data = obj.data();
        if kind != expect {
            return Err(invalid(oid, format!("expected a {expect}, found a {kind}")));
        }
        let rehash =
            Oid::hash_object(kind, data).map_err(|e| invalid(oid, e.message().to_owned()))?;
        if rehash != oid {
            return Err(invalid(oid, format!("content hashes to {rehash}")));
        }
        let written = self
            .dst
            .write(kind, data)
            .map_err(|e| invalid(oid, format!("not accepted: {}", e.message())))?;
        if written != oid {
            return Err(invalid(oid, "written under another id"));
        }
        self.copied += 1;
        Ok(Some(data.to_vec()))
    }

    fn tree(&mut self, src_repo: &Repository, oid: Oid) -> Result<()> {
        if self.object(oid, ObjectType::Tree)?.is_none() {
            return Ok(());
        }
        let tree = src_repo
            .find_tree(oid)
            .map_err(|e| invalid(oid, format!("malformed tree: {}", e.message())))?;
        for entry in tree.iter() {
            match entry.kind() {
                Some(ObjectType::Tree) => self.tree(src_repo, entry.id())?,
                Some(ObjectType::Blob) => {
                    self.object(entry.id(), ObjectType::Blob)?;
                }
                // Gitlinks name commits of other repositories: nothing to copy.
                Some(ObjectType::Commit) => {}
                _ => return Err(invalid(oid, "tree entry of an unknown kind")),
            }
        }
        Ok(())
    }
}

/// Copies every object reachable from `tip` and not from `base` from `src`
/// (the volume, read through a private repository) into `dst`. Returns the
/// number of objects written.
pub fn copy_range(src: &Repository, dst: &Repository, tip: Oid, base: Oid) -> Result<usize> {
    let src_odb = src
        .odb()
        .map_err(Error::git("opening the volume's objects"))?;
    let dst_odb = dst
        .odb()
        .map_err(Error::git("opening the clone's objects"))?;
    let mut walk = src
        .revwalk()
        .map_err(Error::git("walking the reviewed commits"))?;
    walk.push(tip)
        .map_err(|e| invalid(tip, e.message().to_owned()))?;
    walk.hide(base)
        .map_err(|e| invalid(base, e.message().to_owned()))?;
    let mut copier = Copier {
        src: &src_odb,
        dst: &dst_odb,
        seen: HashSet::new(),
        copied: 0,
    };
    for oid in walk {
        let oid = oid.map_err(|e| invalid(tip, format!("walking history: {}", e.message())))?;
        if copier.object(oid, ObjectType::Commit)?.is_none() {
            continue;
        }
        let commit = src
            .find_commit(oid)
            .map_err(|e| invalid(oid, format!("malformed commit: {}", e.message())))?;
        copier.tree(src, commit.tree_id())?;
    }
    Ok(copier.copied)
}
