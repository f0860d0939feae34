//! Prometheus metrics and the probe endpoints, on one small HTTP listener:
//! `/metrics`, `/healthz` (the process serves), `/readyz` (the operator has
//! reached the API server and either leads or stands by).
//!
//! Labels are bounded: phases and error kinds, never object names or error text.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hermes_crds::HermesTask;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::warn;

/// A label naming a task phase.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// The phase (`Preparing`, `Succeeded`, ...), or `None` before the first status.
    pub phase: String,
}

/// A label naming a kind of error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A bounded error kind ([`crate::Error::metric_label`]).
    pub reason: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: Counter,
    /// Reconciles failed, by kind.
    pub errors: Family<ReasonLabel, Counter>,
    /// Reconcile duration.
    pub reconcile_duration: Histogram,
    /// Phase transitions, by the phase entered.
    pub transitions: Family<PhaseLabel, Counter>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    tasks: Family<PhaseLabel, Gauge>,
    stores: Mutex<Vec<Store<HermesTask>>>,
    ready: AtomicBool,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("hermes");
        let reconciles = Counter::default();
        let errors = Family::<ReasonLabel, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        let transitions = Family::<PhaseLabel, Counter>::default();
        let leader = Gauge::default();
        let tasks = Family::<PhaseLabel, Gauge>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles failed, by kind of error",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one task",
            reconcile_duration.clone(),
        );
        registry.register(
            "phase_transitions",
            "Task phase transitions, by the phase entered",
            transitions.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            leader.clone(),
        );
        registry.register(
            "tasks",
            "Tasks known to the operator, by phase",
            tasks.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            reconcile_duration,
            transitions,
            leader,
            tasks,
            stores: Mutex::new(Vec::new()),
            ready: AtomicBool::new(false),
        }
    }
}

impl Metrics {
    /// Lets `/metrics` count tasks by phase from a controller's cache. Each
    /// controller (one per watched namespace) adds its own; `/metrics` counts
    /// the tasks of all of them.
    pub fn set_store(&self, store: Store<HermesTask>) {
        self.stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(store);
    }

    /// Marks the operator ready (or not).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let stores = self
            .stores
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !stores.is_empty() {
            self.tasks.clear();
            for t in stores.iter().flat_map(Store::state) {
                let phase = t
                    .status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .map_or_else(|| "None".to_owned(), |p| format!("{p:?}"));
                self.tasks.get_or_create(&PhaseLabel { phase }).inc();
            }
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut read = 0;
            // Read the request head (bounded); only the request line matters.
            while read < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    stream.read(&mut buf[read..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        read += n;
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                }
            }
            let head = String::from_utf8_lossy(&buf[..read]);
            let path = head.split_whitespace().nth(1).unwrap_or("/");
            let (status, body, kind) = match path {
                "/metrics" => (
                    "200 OK",
                    metrics.render(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
                "/healthz" => ("200 OK", "ok\n".to_owned(), "text/plain"),
                "/readyz" if metrics.ready.load(Ordering::Relaxed) => {
                    ("200 OK", "ok\n".to_owned(), "text/plain")
                }
                "/readyz" => (
                    "503 Service Unavailable",
                    "not ready\n".to_owned(),
                    "text/plain",
                ),
                _ => ("404 Not Found", "not found\n".to_owned(), "text/plain"),
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use hermes_crds::HermesTask;
    use kube::runtime::{reflector, watcher};

    fn task(ns: &str, name: &str) -> Result<HermesTask, serde_json::Error> {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "hermes.dev/v1alpha1",
            "kind": "HermesTask",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "repo": {"url": "https://git.example.com/a.git", "baseRef": "main"},
                "task": "# A task\n",
                "scope": ["src/**"],
            },
        }))
    }

    #[test]
    fn tasks_are_counted_across_every_controllers_store() -> Result<(), serde_json::Error> {
        let metrics = Metrics::default();
        for (ns, names) in [("team-a", &["one", "two"][..]), ("team-b", &["three"])] {
            let (store, mut writer) = reflector::store::<HermesTask>();
            for name in names {
                writer.apply_watcher_event(&watcher::Event::Apply(task(ns, name)?));
            }
            metrics.set_store(store);
        }
        let text = metrics.render();
        assert!(
            text.contains("hermes_tasks{phase=\"None\"} 3"),
            "expected 3 tasks without a phase:\n{text}"
        );
        Ok(())
    }
}
