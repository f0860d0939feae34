//! The verified copy between the publish pod's two containers, tampered
//! with: `verify` parsed the agent's bytes, so the pushing container takes
//! nothing it wrote on trust. Each tampering below is refused with
//! `ObjectsInvalid` and pushes nothing; the untouched copy, last, pushes (so
//! the test can fail).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use hermes_results::{FailureReason, StepResult};

/// Copies a verified copy (regular files and directories only).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

/// The copy's object files, by kind (`blob`, `tree`, `commit`).
fn objects_of(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            std::fs::read(p)
                .unwrap()
                .starts_with(format!("{kind} ").as_bytes())
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no {kind} in the copy");
    found
}

/// `<kind> <size>\0<data>`, written as the object `objects/<its hash>`.
fn write_object(dir: &Path, kind: git2::ObjectType, name: &str, data: &[u8]) -> PathBuf {
    let oid = git2::Oid::hash_object(kind, data).unwrap();
    let path = dir.join("objects").join(oid.to_string());
    let mut bytes = format!("{name} {}\0", data.len()).into_bytes();
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

type Tamper = fn(&Path, &str);

const TAMPERINGS: &[(&str, Tamper)] = &[
    ("a blob's bytes changed under its name", |d, _| {
        let f = &objects_of(d, "blob")[0];
        let mut bytes = std::fs::read(f).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(f, bytes).unwrap();
    }),
    ("a header declaring more bytes than it holds", |d, _| {
        let f = &objects_of(d, "blob")[0];
        let bytes = std::fs::read(f).unwrap();
        let nul = bytes.iter().position(|&b| b == 0).unwrap();
        let size: usize = std::str::from_utf8(&bytes[5..nul])
            .unwrap()
            .parse()
            .unwrap();
        let mut out = format!("blob {}\0", size + 1).into_bytes();
        out.extend_from_slice(&bytes[nul + 1..]);
        std::fs::write(f, out).unwrap();
    }),
    ("a header with a size in another spelling", |d, _| {
        let f = &objects_of(d, "blob")[0];
        let bytes = std::fs::read(f).unwrap();
        let mut out = b"blob 0".to_vec();
        out.extend_from_slice(&bytes[5..]);
        std::fs::write(f, out).unwrap();
    }),
    ("a file beside the objects", |d, _| {
        std::fs::write(d.join("config"), "[core]\n\thooksPath = /tmp\n").unwrap();
    }),
    ("a pack directory among the objects", |d, _| {
        std::fs::create_dir(d.join("objects/pack")).unwrap();
    }),
    ("an object id in upper case", |d, _| {
        let f = &objects_of(d, "blob")[0];
        let upper = f.file_name().unwrap().to_str().unwrap().to_uppercase();
        std::fs::rename(f, f.with_file_name(upper)).unwrap();
    }),
    ("a symlink named by an object id", |d, _| {
        let f = &objects_of(d, "blob")[0];
        let outside = d.with_extension("outside");
        std::fs::rename(f, &outside).unwrap();
        std::os::unix::fs::symlink(&outside, f).unwrap();
    }),
    ("a FIFO named by an object id", |d, _| {
        let f = &objects_of(d, "blob")[0];
        std::fs::remove_file(f).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(f)
            .status()
            .unwrap();
        assert!(made.success());
    }),
    (
        "a tree with a mode git never writes, under its true hash",
        |d, _| {
            let mut tree = b"100755 x\0".to_vec();
            tree.extend_from_slice(&[0u8; 20]);
            tree[..6].copy_from_slice(b"100777");
            write_object(d, git2::ObjectType::Tree, "tree", &tree);
        },
    ),
    (
        "a commit with its headers out of order, under its true hash",
        |d, _| {
            let commit = format!(
                "tree {}\ncommitter a <a> 0 +0000\nauthor a <a> 0 +0000\n\nm\n",
                "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
            );
            write_object(d, git2::ObjectType::Commit, "commit", commit.as_bytes());
        },
    ),
    ("a tag object", |d, _| {
        let tag = "object 4b825dc642cb6eb9a060e54bf8d69288fbee4904\ntype tree\ntag t\n\nm\n";
        write_object(d, git2::ObjectType::Tag, "tag", tag.as_bytes());
    }),
    ("the reviewed commit left out", |d, reviewed| {
        std::fs::remove_file(d.join("objects").join(reviewed)).unwrap();
    }),
    ("a new blob left out", |d, _| {
        for f in objects_of(d, "blob") {
            std::fs::remove_file(f).unwrap();
        }
    }),
    ("the reviewed tree left out", |d, _| {
        for f in objects_of(d, "tree") {
            std::fs::remove_file(f).unwrap();
        }
    }),
];

#[test]
fn publish_refuses_a_tampered_verified_copy_and_pushes_nothing() {
    let w = World::new();
    let p = w.prepare();
    w.agent_edits();
    let c = w.collect(&p.base_commit);
    let verified = w.verify(&p.base_commit, &c.head_commit).unwrap();
    let pristine = w.path("pristine-copy");
    copy_tree(&verified, &pristine);

    for (what, tamper) in TAMPERINGS {
        let copy = w.path("tampered-copy");
        let _ = std::fs::remove_dir_all(&copy);
        let _ = std::fs::remove_file(copy.with_extension("outside"));
        copy_tree(&pristine, &copy);
        tamper(&copy, &c.head_commit);
        let before = w.server.requests().len();
        let r = w.publish_from(
            &copy,
            "merge",
            &p.base_commit,
            &c.head_commit,
            &w.push_creds,
        );
        let StepResult::Failed(f) = &r.result else {
            panic!("{what}: published {:?}", r.result)
        };
        assert!(!r.success, "{what}");
        // A missing reviewed commit is named as such; everything else is an
        // invalid copy.
        let want = if *what == "the reviewed commit left out" {
            FailureReason::CommitMismatch
        } else {
            FailureReason::ObjectsInvalid
        };
        assert_eq!(f.reason, want, "{what}: {}", f.message);
        assert_eq!(
            w.remote_ref("refs/heads/main"),
            Some(p.base_commit.clone()),
            "{what}: nothing pushed"
        );
        assert_eq!(
            w.remote_refs(),
            vec!["refs/heads/main".to_owned()],
            "{what}"
        );
        // Refused copies are refused before the remote is asked anything,
        // except where only the walk after the fetch can tell.
        let asked = w.server.requests().len() - before;
        if !what.ends_with("left out") {
            assert_eq!(asked, 0, "{what}: the remote was contacted");
        }
    }

    let r = w.publish_from(
        &pristine,
        "merge",
        &p.base_commit,
        &c.head_commit,
        &w.push_creds,
    );
    let StepResult::Published(pubd) = &r.result else {
        panic!("the untouched copy: {:?}\n{}", r.result, r.stderr)
    };
    assert!(pubd.pushed, "{pubd:?}");
}

#[test]
fn verify_writes_only_the_range_and_no_result_on_success() {
    let w = World::new();
    let p = w.prepare();
    w.agent_edits();
    let c = w.collect(&p.base_commit);
    let verified = w.verify(&p.base_commit, &c.head_commit).unwrap();
    let top: Vec<_> = std::fs::read_dir(&verified)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("objects")]);
    // The range: the agent's commit and the collected one, their new trees
    // and blobs; nothing of the base's history.
    let range = git(
        &w.repo_dir(),
        &[
            "rev-list",
            "--objects",
            &c.head_commit,
            &format!("^{}", p.base_commit),
        ],
    );
    let mut want: Vec<String> = range
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_owned())
        .collect();
    want.sort();
    want.dedup();
    let mut got: Vec<String> = std::fs::read_dir(verified.join("objects"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    // verify skips what the base's tree already holds; rev-list --objects
    // with a negative base skips the same.
    assert_eq!(got, want);
    assert!(!got.contains(&p.base_commit));
}
