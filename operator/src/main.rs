//! The `hermes-operator` binary: wires logging, the API client and signal
//! handling to the controller. Everything else lives in the library.
//!
//! Configuration (environment):
//! - `KUBECONFIG` or the in-cluster service account: which cluster;
//! - `HERMES_LOG_FORMAT=json` for JSON logs (default: human-readable);
//! - `RUST_LOG` for the log filter (default `info`);
//! - `POD_NAME` names this replica in Events;
//! - `HERMES_WATCH_NAMESPACE` limits the operator to one namespace (default: all).

use anyhow::Context as _;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("HERMES_LOG_FORMAT").is_ok_and(|f| f == "json");
    if json {
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
    let instance = std::env::var("POD_NAME").ok();
    let namespace = std::env::var("HERMES_WATCH_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "hermes-operator starting"
    );
    hermes_operator::controller::run(client, namespace, instance, shutdown_signal()).await;
    tracing::info!("hermes-operator stopped");
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
