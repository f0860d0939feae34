//! Following a task phase by phase to its end, with a watch on that one
//! object (re-established by kube's watcher when the connection drops).

use std::io::Write;

use futures::StreamExt;
use hermes_crds::TaskPhase;
use hermes_crds::task::HermesTask;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use crate::client::Connection;
use crate::status::{condition, phase_name};
use crate::{Error, Result};

/// One line for a phase the task entered.
pub fn describe(task: &HermesTask, phase: TaskPhase) -> String {
    let name = task.metadata.name.as_deref().unwrap_or_default();
    let status = task.status.as_ref();
    let note = |c: &str| {
        condition(task, c)
            .map(|c| format!(" — {}: {}", c.reason, c.message))
            .unwrap_or_default()
    };
    match phase {
        TaskPhase::Pending => format!("{name}: Pending{}", note("Admitted")),
        TaskPhase::Queued => format!("{name}: Queued{}", note("Ready")),
        TaskPhase::Preparing => format!("{name}: Preparing (cloning {})", task.spec.repo.base_ref),
        TaskPhase::Implementing => {
            let base = status
                .and_then(|s| s.base_commit.as_deref())
                .map(short)
                .unwrap_or("?");
            format!("{name}: Implementing (the agent works from {base})")
        }
        TaskPhase::Reviewing => format!("{name}: Reviewing"),
        TaskPhase::AwaitingApproval => {
            let commit = status
                .and_then(|s| s.review.as_ref())
                .map(|r| r.reviewed_commit.as_str())
                .unwrap_or("?");
            format!(
                "{name}: AwaitingApproval (reviewed commit {commit}); decide with `kubectl hermes approve {name}` or `kubectl hermes reject {name}`; see the change with `kubectl hermes diff {name}`"
            )
        }
        TaskPhase::Publishing => format!("{name}: Publishing"),
        TaskPhase::Succeeded => {
            let warning = condition(task, "PushFailed")
                .filter(|c| c.status == "True")
                .map(|c| {
                    format!(
                        " — warning: the push failed ({}); retry with `kubectl hermes retry-publish {name}`",
                        c.message
                    )
                })
                .unwrap_or_default();
            format!("{name}: Succeeded{warning}")
        }
        TaskPhase::Rejected | TaskPhase::Failed | TaskPhase::Cancelled => {
            format!("{name}: {}{}", phase_name(phase), note("Ready"))
        }
    }
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// Errors in a row (with backoff between them) before following gives up.
const MAX_ERRORS: u32 = 8;

/// Follows task `name` until it ends, printing each phase it enters; the
/// end phase.
pub async fn follow(
    conn: &Connection,
    namespace: &str,
    name: &str,
    out: &mut impl Write,
) -> Result<TaskPhase> {
    let api: Api<HermesTask> = Api::namespaced(conn.client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    // The watcher re-lists and re-watches after an error, with backoff; a
    // run of errors with no event in between ends the follow.
    let mut stream = watcher::watcher(api, config).default_backoff().boxed();
    let mut last: Option<TaskPhase> = None;
    let mut listed_any = false;
    let mut errors = 0;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => {
                errors = 0;
                e
            }
            Err(e) if errors < MAX_ERRORS => {
                errors += 1;
                eprintln!("warning: watching hermestask {name}: {e}; trying again");
                continue;
            }
            Err(e) => {
                return Err(Error::Watch {
                    name: name.to_owned(),
                    message: e.to_string(),
                });
            }
        };
        let task = match event {
            Event::Apply(t) | Event::InitApply(t) => {
                listed_any = true;
                t
            }
            Event::Delete(_) => return Err(Error::Deleted(name.to_owned())),
            Event::Init => {
                listed_any = false;
                continue;
            }
            Event::InitDone => {
                if !listed_any {
                    return Err(Error::Deleted(name.to_owned()));
                }
                continue;
            }
        };
        let Some(phase) = task.status.as_ref().and_then(|s| s.phase) else {
            continue;
        };
        if last != Some(phase) {
            writeln!(out, "{}", describe(&task, phase)).map_err(Error::Write)?;
            let _ = out.flush();
            last = Some(phase);
        }
        if phase.is_terminal() {
            return Ok(phase);
        }
    }
    Err(Error::Watch {
        name: name.to_owned(),
        message: "the watch ended".into(),
    })
}
