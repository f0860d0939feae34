//! `batch`: one task per markdown file of a folder, all labelled
//! `hermes.dev/batch=<id>`.
//!
//! Every file is parsed and checked before anything is sent. By default the
//! valid ones are then applied and each invalid one reported (the command
//! fails, so a script notices). With `--atomic`, nothing is applied unless
//! every file is valid and the API server accepts every task in a
//! server-side dry run first; the real applies follow. That is not a
//! transaction (the API has none): a task changed by someone else between
//! the dry run and the apply can still fail alone, and re-running the same
//! batch is safe (server-side apply of the same files changes nothing).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

use hermes_crds::task::HermesTask;

use crate::args::{BatchArgs, DryRun, GlobalArgs};
use crate::client::connect;
use crate::manifest::{LABEL_BATCH, label_value};
use crate::run::{apply, load, manifest_value, print};
use crate::taskfile::{Origin, Problem};
use crate::{Error, Result};

/// The task files of a folder: `*.md`, sorted by name, not recursive.
pub fn task_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::EmptyBatch {
            path: dir.to_owned(),
        });
    }
    Ok(files)
}

/// A generated batch id: `b-YYYYMMDD-HHMMSS-xxxx` (UTC), a valid label value.
pub fn generate_id() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    let nanos = now.subsec_nanosecond().unsigned_abs();
    format!(
        "b-{}-{:04x}",
        now.strftime("%Y%m%d-%H%M%S"),
        (nanos >> 8) & 0xffff
    )
}

/// Each file's task, or its error; duplicate names are errors of the later file.
pub fn load_all(
    files: &[PathBuf],
    overrides: &crate::manifest::Overrides,
    batch_id: &str,
) -> Vec<(PathBuf, Result<HermesTask>)> {
    let labels = BTreeMap::from([(LABEL_BATCH.to_owned(), batch_id.to_owned())]);
    let mut names: BTreeMap<String, PathBuf> = BTreeMap::new();
    files
        .iter()
        .map(|f| {
            let loaded = load(f, overrides, &labels).and_then(|t| {
                let name = t.metadata.name.clone().unwrap_or_default();
                match names.get(&name) {
                    Some(first) => Err(Error::InvalidTask {
                        path: f.clone(),
                        problems: vec![Problem::new(
                            Origin::File,
                            "metadata.name",
                            format!("{name:?} is also the name of {}", first.display()),
                        )],
                    }),
                    None => {
                        names.insert(name, f.clone());
                        Ok(t)
                    }
                }
            });
            (f.clone(), loaded)
        })
        .collect()
}

/// Runs `batch`.
pub async fn run(
    global: &GlobalArgs,
    args: &BatchArgs,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<()> {
    let batch_id = match &args.batch_id {
        Some(id) => {
            label_value(id)
                .and_then(|()| {
                    if id.is_empty() {
                        Err("is empty".to_owned())
                    } else {
                        Ok(())
                    }
                })
                .map_err(|message| Error::Flag {
                    flag: "--batch-id",
                    message: format!("not a valid label value: {message}"),
                })?;
            id.clone()
        }
        None => generate_id(),
    };
    let files = task_files(&args.dir)?;
    let loaded = load_all(&files, &args.spec.overrides(), &batch_id);
    let total = loaded.len();
    let mut valid = Vec::new();
    let mut invalid = BTreeSet::new();
    for (path, result) in loaded {
        match result {
            Ok(t) => valid.push((path, t)),
            Err(e) => {
                writeln!(err, "error: {e}").map_err(Error::Write)?;
                invalid.insert(path);
            }
        }
    }
    let stop_early = args.atomic && !invalid.is_empty();

    if let (Some(format), DryRun::None) = (args.output, args.dry_run) {
        if !stop_early {
            let values: Vec<_> = valid
                .iter()
                .map(|(_, t)| manifest_value(t, global.namespace.as_deref()))
                .collect();
            print(out, format, &values)?;
        }
        return finish(invalid.len(), total, !stop_early && !valid.is_empty());
    }
    if stop_early {
        return finish(invalid.len(), total, false);
    }

    let conn = connect(global).await?;
    let ns = conn.namespace.clone();
    if args.atomic && args.dry_run == DryRun::None {
        let mut refused = 0;
        for (path, t) in &valid {
            if let Err(e) = apply(&conn, &ns, t, DryRun::Server, args.force_conflicts).await {
                writeln!(err, "error: {}: {e}", path.display()).map_err(Error::Write)?;
                refused += 1;
            }
        }
        if refused > 0 {
            writeln!(
                err,
                "the API server refused {refused} task(s) in a dry run; nothing was applied"
            )
            .map_err(Error::Write)?;
            return finish(refused, total, false);
        }
    }
    let suffix = if args.dry_run == DryRun::Server {
        " (server dry run)"
    } else {
        ""
    };
    let mut failed = invalid.len();
    let mut stored = Vec::new();
    for (path, t) in &valid {
        match apply(&conn, &ns, t, args.dry_run, args.force_conflicts).await {
            Ok((s, applied)) => {
                if args.output.is_none() {
                    writeln!(
                        out,
                        "hermestask.hermes.dev/{} {}{suffix} ({})",
                        s.metadata.name.as_deref().unwrap_or_default(),
                        applied.word(),
                        path.display()
                    )
                    .map_err(Error::Write)?;
                }
                stored.push(manifest_value(&s, Some(&ns)));
            }
            Err(e) => {
                writeln!(err, "error: {}: {e}", path.display()).map_err(Error::Write)?;
                failed += 1;
            }
        }
    }
    if let Some(format) = args.output {
        print(out, format, &stored)?;
    } else if args.dry_run == DryRun::None {
        writeln!(out, "batch {batch_id}: {} task(s) applied", stored.len())
            .map_err(Error::Write)?;
    }
    finish(failed, total, !stored.is_empty())
}

fn finish(invalid: usize, total: usize, applied: bool) -> Result<()> {
    if invalid == 0 {
        Ok(())
    } else {
        Err(Error::InvalidBatch {
            invalid,
            total,
            applied,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_label_values() {
        let id = generate_id();
        assert!(label_value(&id).is_ok(), "{id}");
        assert!(id.starts_with("b-2"), "{id}");
    }

    #[test]
    fn files_are_the_folders_markdown_sorted_and_names_must_differ() {
        let dir = tempfile::tempdir().expect("tmp");
        let front = |name: &str| {
            format!(
                "---\nname: {name}\nrepo: {{url: 'https://git.example.com/o/r.git', baseRef: main}}\nscope: ['**']\n---\nDo it.\n"
            )
        };
        std::fs::write(dir.path().join("b.md"), front("one")).expect("write");
        std::fs::write(dir.path().join("a.md"), front("one")).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a task").expect("write");
        std::fs::create_dir(dir.path().join("sub.md")).expect("mkdir");
        let files = task_files(dir.path()).expect("files");
        let names: Vec<_> = files.iter().filter_map(|f| f.file_name()).collect();
        assert_eq!(names, ["a.md", "b.md"]);
        let loaded = load_all(&files, &Default::default(), "b1");
        assert!(loaded[0].1.is_ok());
        let e = loaded[1].1.as_ref().expect_err("duplicate");
        assert!(e.to_string().contains("also the name of"), "{e}");
        let empty = tempfile::tempdir().expect("tmp");
        assert!(matches!(
            task_files(empty.path()),
            Err(Error::EmptyBatch { .. })
        ));
    }
}
