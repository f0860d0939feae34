//! The `hermes-operator` binary: wires logging, the API client, the metrics
//! and probe listener, leader election and signal handling to the
//! controller. Everything else lives in the library.
//!
//! Configuration (environment):
//! - `KUBECONFIG` or the in-cluster service account: which cluster;
//! - `HERMES_LOG_FORMAT=json` for JSON logs (default: human-readable);
//! - `RUST_LOG` for the log filter (default `info`);
//! - `HERMES_WATCH_NAMESPACE` limits the operator to a comma-separated list of
//!   namespaces (default, or empty: all); one controller runs per namespace, so
//!   namespaced RBAC (a Role in each) is enough;
//! - `HERMES_METRICS_ADDR` for `/metrics`, `/healthz`, `/readyz` (default `0.0.0.0:8080`);
//! - `HERMES_LEADER_ELECTION=false` turns leader election off (one replica only);
//! - `HERMES_LEASE_NAMESPACE` (default `POD_NAMESPACE`, else the first watched
//!   namespace, else `default`) holds the `hermes-operator` Lease;
//! - `POD_NAME` names this replica in Events and in the Lease;
//! - `HERMES_GATEWAY_SERVICE` names the Hermes gateway's Service (in
//!   `HERMES_GATEWAY_NAMESPACE`, default `POD_NAMESPACE`) and
//!   `HERMES_GATEWAY_KEY_FILE` the key that mints each phase's gateway
//!   credential; unset, profiles that route their model through the gateway
//!   (`spec.model`) fail their tasks with `GatewayNotConfigured`;
//! - `HERMES_EXCEPT_CIDRS`, a comma-separated list of CIDRs (a node subnet,
//!   other infrastructure) that no profile's CIDR rule reaches unless it
//!   names them, on top of the API server's and the nodes' addresses;
//! - `HERMES_EXCEPT_NODE_ADDRESSES=false` stops watching Nodes for their
//!   addresses (for RBAC without a ClusterRole: list the node subnet in
//!   `HERMES_EXCEPT_CIDRS` instead).

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

/// Why `HERMES_WATCH_NAMESPACE` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum WatchNamespaceError {
    /// `a,,b`, a leading or a trailing comma.
    #[error("entry {position} is empty (expected a comma-separated list of namespace names)")]
    Empty {
        /// 1-based position in the list.
        position: usize,
    },
    /// Not an RFC 1123 label, as namespace names must be.
    #[error(
        "entry {position} ({name:?}) is not a namespace name: at most 63 lower-case letters, digits or '-', starting and ending with a letter or digit"
    )]
    Invalid {
        /// 1-based position in the list.
        position: usize,
        /// The entry, trimmed.
        name: String,
    },
    /// Two controllers would act on the same namespace.
    #[error("namespace {name:?} is listed twice")]
    Duplicate {
        /// The namespace.
        name: String,
    },
}

/// Parses `HERMES_WATCH_NAMESPACE`: unset, empty or blank means every
/// namespace (`None`); otherwise a comma-separated list of namespace names,
/// each trimmed of surrounding whitespace. An empty entry, an invalid name or
/// a name listed twice is refused, so a typo stops the operator at startup
/// rather than leaving a namespace unwatched.
fn parse_watch_namespaces(value: Option<&str>) -> Result<Option<Vec<String>>, WatchNamespaceError> {
    let Some(value) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    let mut names: Vec<String> = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        let position = i + 1;
        let name = entry.trim();
        if name.is_empty() {
            return Err(WatchNamespaceError::Empty { position });
        }
        if !is_dns_label(name) {
            return Err(WatchNamespaceError::Invalid {
                position,
                name: name.to_owned(),
            });
        }
        if names.iter().any(|n| n == name) {
            return Err(WatchNamespaceError::Duplicate {
                name: name.to_owned(),
            });
        }
        names.push(name.to_owned());
    }
    Ok(Some(names))
}

/// An RFC 1123 label: what a namespace name must be.
fn is_dns_label(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| alnum(c) || c == '-')
        && s.starts_with(alnum)
        && s.ends_with(alnum)
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
    let namespaces = parse_watch_namespaces(env("HERMES_WATCH_NAMESPACE").as_deref())
        .context("HERMES_WATCH_NAMESPACE")?;
    let identity =
        env("POD_NAME").unwrap_or_else(|| format!("hermes-operator-{}", std::process::id()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        identity,
        namespaces = namespaces
            .as_ref()
            .map_or_else(|| "(all)".to_owned(), |n| n.join(",")),
        "hermes-operator starting"
    );

    let gateway = match env("HERMES_GATEWAY_SERVICE") {
        None => None,
        Some(service) => {
            let key_file = env("HERMES_GATEWAY_KEY_FILE")
                .context("HERMES_GATEWAY_SERVICE is set, so HERMES_GATEWAY_KEY_FILE must name the gateway's signing key")?;
            let bytes = std::fs::read(&key_file)
                .with_context(|| format!("reading the gateway signing key {key_file}"))?;
            let key = hermes_crds::gateway::SigningKey::from_bytes(&bytes)
                .with_context(|| format!("the gateway signing key {key_file}"))?;
            let namespace = env("HERMES_GATEWAY_NAMESPACE")
                .or_else(|| env("POD_NAMESPACE"))
                .context("HERMES_GATEWAY_SERVICE is set: HERMES_GATEWAY_NAMESPACE or POD_NAMESPACE must name its namespace")?;
            tracing::info!(namespace, service, "using the Hermes gateway");
            Some(Arc::new(hermes_operator::gateway::Gateway::new(
                client.clone(),
                namespace,
                service,
                key,
            )))
        }
    };

    let except = hermes_operator::cluster_addresses::parse_cidrs(
        &env("HERMES_EXCEPT_CIDRS").unwrap_or_default(),
    )
    .context("HERMES_EXCEPT_CIDRS")?;
    let watch_nodes = env("HERMES_EXCEPT_NODE_ADDRESSES").is_none_or(|v| v != "false");
    tracing::info!(
        except = except.len(),
        watch_nodes,
        "the cluster's addresses: no CIDR rule reaches them unless it names them"
    );
    let cluster = hermes_operator::cluster_addresses::ClusterAddresses::start(
        &client,
        hermes_operator::cluster_addresses::Config {
            nodes: watch_nodes,
            extra: except,
        },
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
            .or_else(|| namespaces.as_ref().and_then(|n| n.first().cloned()))
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

    // The gateway's counts are read by the leader only.
    let poller = gateway.clone().map(|g| {
        tokio::spawn(async move {
            if let Err(e) = g.refresh_endpoint().await {
                tracing::warn!(error = %e, "gateway Service (tasks that use the gateway wait for it)");
            }
            g.poll().await;
        })
    });

    // One controller per watched namespace (or one over all): each watches
    // with namespaced requests only, so a Role per namespace is all the RBAC
    // it needs. They share the client, metrics and shutdown.
    let scopes: Vec<Option<String>> = match namespaces {
        None => vec![None],
        Some(list) => list.into_iter().map(Some).collect(),
    };
    let controllers = scopes.into_iter().map(|namespace| {
        let mut stop = stop_rx.clone();
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        hermes_operator::controller::run(
            client.clone(),
            namespace,
            Some(identity.clone()),
            metrics.clone(),
            gateway.clone(),
            cluster.clone(),
            shutdown,
        )
    });
    futures::future::join_all(controllers).await;
    if let Some(p) = poller {
        p.abort();
    }

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

#[cfg(test)]
mod tests {
    use super::{WatchNamespaceError, parse_watch_namespaces};

    fn list(names: &[&str]) -> Option<Vec<String>> {
        Some(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn unset_empty_or_blank_watches_every_namespace() {
        assert_eq!(parse_watch_namespaces(None), Ok(None));
        assert_eq!(parse_watch_namespaces(Some("")), Ok(None));
        assert_eq!(parse_watch_namespaces(Some("  \t ")), Ok(None));
    }

    #[test]
    fn one_namespace_is_a_list_of_one() {
        assert_eq!(
            parse_watch_namespaces(Some("team-a")),
            Ok(list(&["team-a"]))
        );
    }

    #[test]
    fn comma_separated_names_keep_their_order_and_lose_surrounding_whitespace() {
        assert_eq!(
            parse_watch_namespaces(Some(" team-a , team-b,x1 ")),
            Ok(list(&["team-a", "team-b", "x1"]))
        );
    }

    #[test]
    fn empty_entries_are_refused_with_their_position() {
        for (value, position) in [("a,,b", 2), (",a", 1), ("a,", 2), ("a, ,b", 2)] {
            assert_eq!(
                parse_watch_namespaces(Some(value)),
                Err(WatchNamespaceError::Empty { position }),
                "{value:?}"
            );
        }
    }

    #[test]
    fn invalid_names_are_refused_by_name() {
        let long = "a".repeat(64);
        for (value, bad) in [
            ("Team-A", "Team-A"),
            ("a,b_c", "b_c"),
            ("-a", "-a"),
            ("a-", "a-"),
            ("a.b", "a.b"),
            ("a b", "a b"),
            (long.as_str(), long.as_str()),
        ] {
            match parse_watch_namespaces(Some(value)) {
                Err(WatchNamespaceError::Invalid { name, .. }) => {
                    assert_eq!(name, bad, "{value:?}")
                }
                other => panic!("{value:?}: expected Invalid, got {other:?}"),
            }
        }
        assert_eq!(
            parse_watch_namespaces(Some(&"a".repeat(63))),
            Ok(list(&[&"a".repeat(63)]))
        );
    }

    #[test]
    fn a_namespace_listed_twice_is_refused() {
        assert_eq!(
            parse_watch_namespaces(Some("a,b, a")),
            Err(WatchNamespaceError::Duplicate { name: "a".into() })
        );
    }

    #[test]
    fn the_error_message_names_the_entry() {
        let Err(e) = parse_watch_namespaces(Some("ok,Bad")) else {
            panic!("accepted an invalid name");
        };
        let msg = e.to_string();
        assert!(msg.contains("entry 2") && msg.contains("\"Bad\""), "{msg}");
    }
}
