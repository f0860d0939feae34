//! The `hermes-operator` binary: wires logging, the API client, the metrics
//! and probe listener, leader election and signal handling to the
//! controller. Everything else lives in the library.
//!
//! Configuration (environment):
//! - `KUBECONFIG` or the in-cluster service account: which cluster;
//! - `HERMES_LOG_FORMAT=json` for JSON logs (default: human-readable);
//! - `RUST_LOG` for the log filter (default `info`);
//! - `HERMES_WATCH_NAMESPACE` limits the operator to one namespace (default: all);
//! - `HERMES_METRICS_ADDR` for `/metrics`, `/healthz`, `/readyz` (default `0.0.0.0:8080`);
//! - `HERMES_LEADER_ELECTION=false` turns leader election off (one replica only);
//! - `HERMES_LEASE_NAMESPACE` (default `POD_NAMESPACE`, else the watched
//!   namespace, else `default`) holds the `hermes-operator` Lease;
//! - `POD_NAME` names this replica in Events and in the Lease.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hermes_operator::leader::Elector;
use hermes_operator::metrics::{self, Metrics};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

const LEASE_NAME: &str = "hermes-operator";
const LEASE_DURATION: Duration = Duration::from_secs(15);
const RENEW_EVERY: Duration = Duration::from_secs(4);
const RETRY_EVERY: Duration = Duration::from_secs(2);

fn env(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if env("HERMES_LOG_FORMAT").is_some_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }

    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster)")?;
    let namespace = env("HERMES_WATCH_NAMESPACE");
    let identity =
        env("POD_NAME").unwrap_or_else(|| format!("hermes-operator-{}", std::process::id()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        identity,
        "hermes-operator starting"
    );

    let metrics = Arc::new(Metrics::default());
    let addr = env("HERMES_METRICS_ADDR").unwrap_or_else(|| "0.0.0.0:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("listening on {addr} for metrics and probes"))?;
    tokio::spawn(metrics::serve(listener, metrics.clone()));

    // `stop` turns true on SIGTERM/SIGINT, or when leadership is lost.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal_tx = stop_tx.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = signal_tx.send(true);
    });

    let elector = if env("HERMES_LEADER_ELECTION").is_some_and(|v| v == "false") {
        None
    } else {
        let lease_ns = env("HERMES_LEASE_NAMESPACE")
            .or_else(|| env("POD_NAMESPACE"))
            .or_else(|| namespace.clone())
            .unwrap_or_else(|| "default".into());
        Some(Arc::new(Elector::new(
            client.clone(),
            &lease_ns,
            LEASE_NAME,
            &identity,
            LEASE_DURATION,
        )))
    };
    metrics.set_ready(true);

    let mut lost = false;
    if let Some(elector) = &elector {
        let mut stop = stop_rx.clone();
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = tokio::time::sleep(RETRY_EVERY) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        tracing::info!(identity, "acquired leadership");
        metrics.leader.set(1);
        let elector = elector.clone();
        let lost_tx = stop_tx.clone();
        tokio::spawn(async move {
            let mut last_renewal = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(RENEW_EVERY).await;
                match elector.try_acquire_or_renew().await {
                    Ok(true) => last_renewal = tokio::time::Instant::now(),
                    Ok(false) => {
                        tracing::error!("another replica holds the lease; stopping");
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "renewing the lease"),
                }
                // Stop acting well before the lease could expire for others.
                if last_renewal.elapsed() > LEASE_DURATION * 2 / 3 {
                    tracing::error!("could not renew the lease in time; stopping");
                    let _ = lost_tx.send(true);
                    return;
                }
            }
        });
    }

    let mut stop = stop_rx.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    hermes_operator::controller::run(client, namespace, Some(identity), metrics.clone(), shutdown)
        .await;

    if let Some(elector) = &elector {
        metrics.leader.set(0);
        // Leadership lost: exit non-zero so the Deployment restarts this replica as a standby.
        let still_leader = elector.try_acquire_or_renew().await.unwrap_or(false);
        if !still_leader {
            lost = true;
        } else if let Err(e) = elector.release().await {
            tracing::warn!(error = %e, "releasing the lease");
        }
    }
    tracing::info!("hermes-operator stopped");
    if lost {
        anyhow::bail!("lost leadership");
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
