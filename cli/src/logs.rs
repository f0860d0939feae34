//! `logs`: the logs of a task's pods (label `hermes.dev/task`), every
//! container (init containers first, in the order they run), the pods in
//! phase order (prepare, implement, review, publish), attempts in order.
//! With `-f`, each container is streamed as it runs and the next phases'
//! pods are picked up as they appear, until the task ends.

use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

use futures::AsyncBufReadExt;
use hermes_crds::RunPhase;
use hermes_crds::task::HermesTask;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::api::{Api, ListParams, LogParams};

use crate::args::{GlobalArgs, LogsArgs};
use crate::client::connect;
use crate::naming::{ANNOTATION_TASK_NAME, LABEL_ATTEMPT, LABEL_PHASE, LABEL_TASK, task_label};
use crate::status::get_task;
use crate::{Error, Result};

/// A pod of the task, with where it sorts.
#[derive(Debug, Clone)]
pub struct PhasePod {
    /// Its phase.
    pub phase: RunPhase,
    /// Its infrastructure attempt.
    pub attempt: u32,
    /// The pod.
    pub pod: Pod,
}

impl PhasePod {
    fn key(&self) -> (RunPhase, u32, String) {
        (
            self.phase,
            self.attempt,
            self.pod
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
                .unwrap_or_default(),
        )
    }

    fn name(&self) -> String {
        self.pod.metadata.name.clone().unwrap_or_default()
    }

    /// The containers in the order they run: init containers, then the rest.
    pub fn containers(&self) -> Vec<String> {
        let Some(spec) = &self.pod.spec else {
            return vec![];
        };
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
            .map(|c| c.name.clone())
            .collect()
    }

    fn status_of(&self, container: &str) -> Option<&ContainerStatus> {
        let s = self.pod.status.as_ref()?;
        s.init_container_statuses
            .iter()
            .flatten()
            .chain(s.container_statuses.iter().flatten())
            .find(|c| c.name == container)
    }

    /// Whether the container has started (running, or ran and ended).
    pub fn started(&self, container: &str) -> bool {
        self.status_of(container).is_some_and(|c| {
            let st = c.state.as_ref();
            st.is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                || c.last_state
                    .as_ref()
                    .is_some_and(|s| s.terminated.is_some())
        })
    }

    /// Whether the pod has finished (nothing more will start in it).
    pub fn finished(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
            || matches!(
                self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
    }
}

fn parse_phase(s: &str) -> Option<RunPhase> {
    RunPhase::ALL.into_iter().find(|p| p.as_str() == s)
}

/// The task's phase pods, in order: phase, attempt, creation time. Pods of
/// another task whose name shortens to the same label are left out.
pub fn order(task: &str, pods: Vec<Pod>, only: Option<RunPhase>) -> Vec<PhasePod> {
    let mut out: Vec<PhasePod> = pods
        .into_iter()
        .filter(|p| {
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ANNOTATION_TASK_NAME))
                .is_none_or(|n| n == task)
        })
        .filter_map(|pod| {
            let labels = pod.metadata.labels.as_ref()?;
            let phase = parse_phase(labels.get(LABEL_PHASE)?)?;
            let attempt = labels
                .get(LABEL_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(1);
            Some(PhasePod {
                phase,
                attempt,
                pod,
            })
        })
        .filter(|p| only.is_none_or(|o| o == p.phase))
        .collect();
    out.sort_by_key(PhasePod::key);
    out
}

/// The header line before a container's logs.
pub fn header(p: &PhasePod, container: &str) -> String {
    let attempt = if p.attempt > 1 {
        format!(" (attempt {})", p.attempt)
    } else {
        String::new()
    };
    format!(
        "==> {}{attempt} · pod {} · container {container} <==",
        p.phase.as_str(),
        p.name()
    )
}

/// Runs `logs`.
pub async fn run(global: &GlobalArgs, args: &LogsArgs, out: &mut impl Write) -> Result<()> {
    let conn = connect(global).await?;
    let tasks: Api<HermesTask> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let pods: Api<Pod> = Api::namespaced(conn.client.clone(), &conn.namespace);
    let name = args.task.as_str();
    let only = args.phase.map(|p| p.phase());
    get_task(&tasks, name, &conn.namespace).await?;
    let selector = format!("{LABEL_TASK}={},{LABEL_PHASE}", task_label(name));
    let list = || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .map(|l| order(name, l.items, only))
            .map_err(Error::api(format!("listing the pods of hermestask {name}")))
    };

    if !args.follow {
        let all = list().await?;
        if all.is_empty() {
            return Err(no_pods(name, only));
        }
        for p in &all {
            for c in p.containers() {
                writeln!(out, "{}", header(p, &c)).map_err(Error::Write)?;
                if !p.started(&c) {
                    writeln!(out, "(not started)").map_err(Error::Write)?;
                    continue;
                }
                let params = LogParams {
                    container: Some(c.clone()),
                    ..LogParams::default()
                };
                let text = pods
                    .logs(&p.name(), &params)
                    .await
                    .map_err(Error::api(format!("reading the logs of {}/{c}", p.name())))?;
                write!(out, "{text}").map_err(Error::Write)?;
                if !text.is_empty() && !text.ends_with('\n') {
                    writeln!(out).map_err(Error::Write)?;
                }
            }
        }
        return Ok(());
    }

    // Follow: pods in order, each container as it starts, until the task ends.
    let mut done: BTreeSet<String> = BTreeSet::new();
    loop {
        let pending: Vec<PhasePod> = list()
            .await?
            .into_iter()
            .filter(|p| !done.contains(&p.name()))
            .collect();
        if let Some(p) = pending.into_iter().next() {
            follow_pod(&pods, p.clone(), out).await?;
            done.insert(p.name());
            continue;
        }
        let task = get_task(&tasks, name, &conn.namespace).await?;
        let ended = task
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .is_some_and(|p| p.is_terminal());
        if ended {
            if done.is_empty() {
                return Err(no_pods(name, only));
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn follow_pod(pods: &Api<Pod>, mut p: PhasePod, out: &mut impl Write) -> Result<()> {
    let name = p.name();
    for c in p.containers() {
        writeln!(out, "{}", header(&p, &c)).map_err(Error::Write)?;
        // Wait for the container to start, or for the pod to end without it.
        loop {
            if p.started(&c) {
                break;
            }
            if p.finished() {
                writeln!(out, "(not started)").map_err(Error::Write)?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            match pods
                .get_opt(&name)
                .await
                .map_err(Error::api(format!("reading pod {name}")))?
            {
                Some(pod) => p.pod = pod,
                None => {
                    writeln!(out, "(the pod was deleted)").map_err(Error::Write)?;
                    return Ok(());
                }
            }
        }
        if !p.started(&c) {
            continue;
        }
        let params = LogParams {
            container: Some(c.clone()),
            follow: true,
            ..LogParams::default()
        };
        let stream = pods
            .log_stream(&name, &params)
            .await
            .map_err(Error::api(format!("reading the logs of {name}/{c}")))?;
        let mut lines = stream.lines();
        use futures::StreamExt as _;
        while let Some(line) = lines.next().await {
            let line = line.map_err(Error::Write)?;
            writeln!(out, "{line}").map_err(Error::Write)?;
            let _ = out.flush();
        }
        if let Some(pod) = pods
            .get_opt(&name)
            .await
            .map_err(Error::api(format!("reading pod {name}")))?
        {
            p.pod = pod;
        }
    }
    Ok(())
}

fn no_pods(name: &str, only: Option<RunPhase>) -> Error {
    let which = only.map_or_else(String::new, |p| format!(" of phase {}", p.as_str()));
    Error::NoLogs(format!(
        "hermestask {name} has no pods{which}: it has not started that far, or its pods were deleted (a cancelled task's Jobs are deleted with their pods)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, task: &str, phase: &str, attempt: &str, created: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created,
                "labels": {LABEL_TASK: task, LABEL_PHASE: phase, LABEL_ATTEMPT: attempt},
                "annotations": {ANNOTATION_TASK_NAME: task}},
            "spec": {"initContainers": [{"name": "context"}, {"name": "install-runner"}, {"name": "reviewer"}],
                     "containers": [{"name": "verdict"}]},
        }))
        .expect("pod")
    }

    #[test]
    fn pods_sort_by_phase_then_attempt_and_skip_other_tasks() {
        let pods = vec![
            pod("t-publish-x", "t", "publish", "1", "2026-01-01T00:04:00Z"),
            pod("t-review-x", "t", "review", "1", "2026-01-01T00:03:00Z"),
            pod("t-prepare-2-x", "t", "prepare", "2", "2026-01-01T00:01:00Z"),
            pod("t-prepare-x", "t", "prepare", "1", "2026-01-01T00:00:00Z"),
            pod(
                "t-implement-x",
                "t",
                "implement",
                "1",
                "2026-01-01T00:02:00Z",
            ),
            pod("u-review-x", "u", "review", "1", "2026-01-01T00:03:00Z"),
        ];
        let names: Vec<String> = order("t", pods.clone(), None)
            .iter()
            .map(PhasePod::name)
            .collect();
        assert_eq!(
            names,
            [
                "t-prepare-x",
                "t-prepare-2-x",
                "t-implement-x",
                "t-review-x",
                "t-publish-x"
            ]
        );
        let names: Vec<String> = order("t", pods, Some(RunPhase::Review))
            .iter()
            .map(PhasePod::name)
            .collect();
        assert_eq!(names, ["t-review-x"]);
    }

    #[test]
    fn containers_run_init_first() {
        let p = &order(
            "t",
            vec![pod("p", "t", "review", "1", "2026-01-01T00:00:00Z")],
            None,
        )[0];
        assert_eq!(
            p.containers(),
            ["context", "install-runner", "reviewer", "verdict"]
        );
        assert!(!p.started("verdict"));
        assert!(header(p, "verdict").contains("review · pod p · container verdict"));
    }
}
