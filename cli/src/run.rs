//! `run`: a task file to a HermesTask, applied with server-side apply, or
//! printed for GitOps; `--watch` follows it to its end.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use hermes_crds::task::HermesTask;
use kube::api::{Api, Patch, PatchParams};

use crate::args::{DryRun, Format, GlobalArgs, RunArgs};
use crate::client::{Connection, connect};
use crate::manifest::{self, Overrides};
use crate::naming::FIELD_MANAGER;
use crate::taskfile::{Problem, TaskFile};
use crate::{Error, Result, watch};

/// How a `run` ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Applied (or printed) without waiting.
    Done,
    /// Watched to its end, which was this phase.
    Ended(hermes_crds::TaskPhase),
}

/// Reads and parses a task file, then builds and checks its task.
pub fn load(
    path: &Path,
    overrides: &Overrides,
    labels: &BTreeMap<String, String>,
) -> Result<HermesTask> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |problems: Vec<Problem>| Error::InvalidTask {
        path: path.to_owned(),
        problems,
    };
    let tf = TaskFile::parse(&text).map_err(invalid)?;
    manifest::build(path, &tf, overrides, labels).map_err(invalid)
}

/// The task as a manifest for `kubectl apply` (no status; the namespace
/// only when `namespace` is given).
pub fn manifest_value(task: &HermesTask, namespace: Option<&str>) -> serde_json::Value {
    let mut t = task.clone();
    t.status = None;
    t.metadata.namespace = namespace.map(str::to_owned);
    t.metadata.managed_fields = None;
    serde_json::to_value(&t).unwrap_or_default()
}

/// Prints values as YAML documents or JSON.
pub fn print(out: &mut impl Write, format: Format, values: &[serde_json::Value]) -> Result<()> {
    match format {
        Format::Yaml => {
            for (i, v) in values.iter().enumerate() {
                let text = serde_yaml::to_string(v).map_err(|e| Error::Serialize(e.to_string()))?;
                if i > 0 || values.len() > 1 {
                    writeln!(out, "---").map_err(Error::Write)?;
                }
                write!(out, "{text}").map_err(Error::Write)?;
            }
        }
        Format::Json => {
            let v = match values {
                [one] => one.clone(),
                many => serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many}),
            };
            let text =
                serde_json::to_string_pretty(&v).map_err(|e| Error::Serialize(e.to_string()))?;
            writeln!(out, "{text}").map_err(Error::Write)?;
        }
    }
    Ok(())
}

/// What applying a task did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It did not exist.
    Created,
    /// It existed and changed.
    Configured,
    /// It existed and nothing changed.
    Unchanged,
}

impl Applied {
    /// kubectl's word for it.
    pub fn word(&self) -> &'static str {
        match self {
            Applied::Created => "created",
            Applied::Configured => "configured",
            Applied::Unchanged => "unchanged",
        }
    }
}

/// Applies `task` in `namespace` with server-side apply (field manager
/// `kubectl-hermes`); the stored object and what happened.
pub async fn apply(
    conn: &Connection,
    namespace: &str,
    task: &HermesTask,
    dry_run: DryRun,
    force: bool,
) -> Result<(HermesTask, Applied)> {
    let api: Api<HermesTask> = Api::namespaced(conn.client.clone(), namespace);
    let name = task.metadata.name.clone().unwrap_or_default();
    let before = api
        .get_opt(&name)
        .await
        .map_err(Error::api(format!("reading hermestask {name}")))?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    params.dry_run = dry_run == DryRun::Server;
    params.force = force;
    let body = manifest_value(task, Some(namespace));
    let after = api
        .patch(&name, &params, &Patch::Apply(&body))
        .await
        .map_err(Error::api(format!("applying hermestask {name}")))?;
    let applied = match before {
        None => Applied::Created,
        Some(b) if b.metadata.resource_version == after.metadata.resource_version => {
            Applied::Unchanged
        }
        Some(b) if b.spec == after.spec && b.metadata.labels == after.metadata.labels => {
            Applied::Unchanged
        }
        Some(_) => Applied::Configured,
    };
    Ok((after, applied))
}

/// Runs `run`.
pub async fn run(global: &GlobalArgs, args: &RunArgs, out: &mut impl Write) -> Result<RunOutcome> {
    let mut overrides = args.spec.overrides();
    overrides.name = args.name.clone();
    overrides.depends_on = args.depends_on.clone();
    let task = load(&args.file, &overrides, &BTreeMap::new())?;
    if let (Some(format), DryRun::None) = (args.output, args.dry_run) {
        print(
            out,
            format,
            &[manifest_value(&task, global.namespace.as_deref())],
        )?;
        return Ok(RunOutcome::Done);
    }
    let conn = connect(global).await?;
    let namespace = conn.namespace.clone();
    let (stored, applied) =
        apply(&conn, &namespace, &task, args.dry_run, args.force_conflicts).await?;
    let name = stored.metadata.name.clone().unwrap_or_default();
    if let Some(format) = args.output {
        print(out, format, &[manifest_value(&stored, Some(&namespace))])?;
        return Ok(RunOutcome::Done);
    }
    let suffix = if args.dry_run == DryRun::Server {
        " (server dry run)"
    } else {
        ""
    };
    writeln!(
        out,
        "hermestask.hermes.dev/{name} {}{suffix}",
        applied.word()
    )
    .map_err(Error::Write)?;
    if args.watch {
        let phase = watch::follow(&conn, &namespace, &name, out).await?;
        return Ok(RunOutcome::Ended(phase));
    }
    Ok(RunOutcome::Done)
}
