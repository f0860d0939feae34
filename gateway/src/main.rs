//! The `hermes-gateway` binary: parses the flags, sets up logging, the
//! Kubernetes watches and the three listeners. Everything else lives in the
//! library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use hermes_gateway::addr::DenySet;
use hermes_gateway::cluster::KubeDirectory;
use hermes_gateway::directory::SystemResolver;
use hermes_gateway::keys::{Credentials, KeySource};
use hermes_gateway::{Gateway, Settings};
use ipnet::IpNet;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// The Hermes gateway: model API proxy with per-task credentials and
/// budgets, and the task pods' egress proxy by host name.
#[derive(Debug, Parser)]
#[command(name = "hermes-gateway", version)]
struct Args {
    /// Address of the model API (task pods' ANTHROPIC_BASE_URL).
    #[arg(
        long,
        env = "HERMES_GATEWAY_MODEL_LISTEN",
        default_value = "0.0.0.0:8080"
    )]
    model_listen: SocketAddr,
    /// Address of the egress proxy (HTTP CONNECT and plain HTTP).
    #[arg(
        long,
        env = "HERMES_GATEWAY_PROXY_LISTEN",
        default_value = "0.0.0.0:3128"
    )]
    proxy_listen: SocketAddr,
    /// Address of /healthz, /readyz, /metrics and /v1/usage.
    #[arg(
        long,
        env = "HERMES_GATEWAY_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    admin_listen: SocketAddr,
    /// The key the operator signs credentials with (re-read when it changes).
    #[arg(long, env = "HERMES_GATEWAY_SIGNING_KEY_FILE")]
    signing_key_file: PathBuf,
    /// One subdirectory per model credential: `api-key`, optional `auth-scheme`.
    #[arg(long, env = "HERMES_GATEWAY_MODEL_CREDENTIALS_DIR")]
    model_credentials_dir: Option<PathBuf>,
    /// A namespace to watch (repeatable; none: every namespace).
    #[arg(
        long = "namespace",
        env = "HERMES_GATEWAY_NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// A range the egress proxy never connects to (repeatable): the
    /// cluster's pod and service ranges, the nodes' addresses.
    #[arg(
        long = "deny-cidr",
        env = "HERMES_GATEWAY_DENY_CIDR",
        value_delimiter = ','
    )]
    deny_cidrs: Vec<IpNet>,
    /// An extra CA bundle (PEM) for https upstreams.
    #[arg(long, env = "HERMES_GATEWAY_UPSTREAM_CA_FILE")]
    upstream_ca_file: Option<PathBuf>,
    /// Log format; the filter comes from RUST_LOG (default info).
    #[arg(
        long,
        env = "HERMES_GATEWAY_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr} for the {what}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }

    let keys = KeySource::file(args.signing_key_file.clone());
    keys.load().context("loading the signing key")?;
    let tls = hermes_gateway::upstream::tls_config(args.upstream_ca_file.as_deref())
        .context("TLS settings for the model upstreams")?;
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG or in-cluster)")?;
    let directory = KubeDirectory::start(client, &args.namespaces);

    let settings = Settings {
        keys,
        credentials: Credentials::new(args.model_credentials_dir.clone()),
        directory,
        resolver: Arc::new(SystemResolver),
        deny: DenySet::new(args.deny_cidrs.clone()),
        tls,
        instance: None,
    };
    let gateway = Gateway::new(settings).context("starting the gateway")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        instance = %gateway.instance,
        model = %args.model_listen,
        proxy = %args.proxy_listen,
        admin = %args.admin_listen,
        namespaces = if args.namespaces.is_empty() { "(all)".to_owned() } else { args.namespaces.join(",") },
        deny_cidrs = args.deny_cidrs.len(),
        "hermes-gateway starting"
    );

    let model = bind(args.model_listen, "model API").await?;
    let proxy = bind(args.proxy_listen, "egress proxy").await?;
    let admin = bind(args.admin_listen, "admin endpoints").await?;
    tokio::spawn(gateway.clone().serve_model(model));
    tokio::spawn(gateway.clone().serve_proxy(proxy));
    tokio::spawn(gateway.clone().serve_admin(admin));
    tokio::spawn(gateway.clone().evict_forever());

    shutdown_signal().await;
    tracing::info!("hermes-gateway stopping");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
