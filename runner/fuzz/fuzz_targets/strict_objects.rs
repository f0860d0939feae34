//! The commit and tree checks publish applies to every object of the
//! verified copy before libgit2 sees it (`git::strict`), on arbitrary bytes:
//! a verifier taken over through a parser bug writes what it likes there.
//!
//! The first input byte picks the kind (even: tree, odd: commit); the rest
//! is the object. Invariants: nothing panics; what the check accepts,
//! libgit2 parses too, to the same references (a commit's tree and parents
//! in order; a tree's entries, ids and kinds in order). The check may refuse
//! what libgit2 would take (it is meant to be stricter), never the reverse.

#![no_main]

use git2::{ObjectType, Odb, Repository};
use hermes_runner::git::strict::{self, EntryKind};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, object)) = data.split_first() else {
        return;
    };
    // A repository in memory, fresh for each input.
    let odb = Odb::new().expect("an object database");
    let _mempack = odb.add_new_mempack_backend(1).expect("a memory backend");
    let repo = Repository::from_odb(odb).expect("a repository over it");
    let odb = repo.odb().expect("its objects");
    if pick % 2 == 0 {
        let Ok(entries) = strict::tree(object) else {
            return;
        };
        let oid = odb.write(ObjectType::Tree, object).expect("written");
        let tree = repo
            .find_tree(oid)
            .unwrap_or_else(|e| panic!("a checked tree libgit2 does not parse: {e}"));
        assert_eq!(tree.len(), entries.len(), "entries");
        for (entry, (id, kind)) in tree.iter().zip(&entries) {
            assert_eq!(entry.id(), *id);
            let want = match kind {
                EntryKind::Blob => ObjectType::Blob,
                EntryKind::Tree => ObjectType::Tree,
                EntryKind::Gitlink => ObjectType::Commit,
            };
            assert_eq!(entry.kind(), Some(want), "kind of {id}");
        }
    } else {
        let Ok(checked) = strict::commit(object) else {
            return;
        };
        let oid = odb.write(ObjectType::Commit, object).expect("written");
        let commit = repo
            .find_commit(oid)
            .unwrap_or_else(|e| panic!("a checked commit libgit2 does not parse: {e}"));
        assert_eq!(commit.tree_id(), checked.tree, "tree");
        assert_eq!(commit.parent_ids().collect::<Vec<_>>(), checked.parents, "parents");
    }
});
