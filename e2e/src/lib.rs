//! Hermes' end-to-end test support: connecting to the project's own test
//! clusters (built and started by `e2e/cluster/hermes-cluster`), installing the
//! generated CRDs, and per-test namespaces that clean up after themselves.
//!
//! ```text
//!   scripts/test ── hermes-cluster up ──> etcd, kube-apiserver, controller-manager, scheduler
//!        │                                     ▲
//!        └── cargo test ── e2e/tests/* ── TierA::connect() (kube client, kubectl)
//! ```
//!
//! A test that needs a cluster calls [`TierA::connect`]. Without a cluster it
//! is skipped (a plain `cargo test` must not fail for want of one), unless
//! `HERMES_E2E=require`, which the README's test command sets: then a missing
//! cluster fails the test.
//!
//! [`chart`] holds the Helm chart's tooling (Helm, kubeconform, schemas from
//! the cluster's own OpenAPI) and installs the operator release that
//! [`tier_b`] runs against.
//!
//! The tests never use `KUBECONFIG`, so they cannot touch a real cluster by
//! accident: the Tier A kubeconfig comes from `HERMES_KUBECONFIG` or the
//! cluster script's state folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub mod chart;
pub mod plugin;
pub mod tier_b;

/// The field manager the tests apply with.
pub const TEST_FIELD_MANAGER: &str = "e2e.hermes.dev";
/// Label on every namespace a test creates, so leftovers can be found.
pub const TEST_NAMESPACE_LABEL: &str = "hermes.dev/e2e";

/// Errors of the test support.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig could not be read.
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// A client could not be built from the kubeconfig.
    #[error("building a client from {path}")]
    Client {
        /// The kubeconfig's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A file could not be read.
    #[error("reading {path}")]
    Io {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A manifest did not parse.
    #[error("parsing {path}")]
    Yaml {
        /// Its path.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_yaml::Error,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Whether the run demands a cluster (`HERMES_E2E=require`).
pub fn cluster_required() -> bool {
    std::env::var("HERMES_E2E").is_ok_and(|v| v == "require")
}

/// The two test clusters `e2e/cluster/hermes-cluster` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// A control plane on loopback; tests play the kubelet.
    A,
    /// Tier A plus a real node (containerd, kubelet, CNI, kube-proxy,
    /// a NetworkPolicy enforcer, a volume provisioner).
    B,
}

impl Tier {
    fn name(self) -> &'static str {
        match self {
            Tier::A => "Tier A",
            Tier::B => "Tier B",
        }
    }

    fn kubeconfig(self) -> PathBuf {
        let (kubeconfig_var, dir_var, default) = match self {
            Tier::A => (
                "HERMES_KUBECONFIG",
                "HERMES_CLUSTER_DIR",
                "/var/lib/hermes/tier-a",
            ),
            Tier::B => (
                "HERMES_TIER_B_KUBECONFIG",
                "HERMES_TIER_B_CLUSTER_DIR",
                "/var/lib/hermes/tier-b",
            ),
        };
        if let Some(p) = std::env::var_os(kubeconfig_var) {
            return PathBuf::from(p);
        }
        std::env::var_os(dir_var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(default))
            .join("kubeconfig")
    }

    fn up_command(self) -> &'static str {
        match self {
            Tier::A => "e2e/cluster/hermes-cluster up",
            Tier::B => "e2e/cluster/hermes-cluster --tier b up",
        }
    }
}

/// The kubectl built with the cluster (same version as the server).
fn kubectl_path() -> PathBuf {
    if let Some(p) = std::env::var_os("HERMES_KUBECTL") {
        return PathBuf::from(p);
    }
    let script = repo_root().join("e2e/cluster/build.sh");
    Command::new("bash")
        .arg(&script)
        .arg("--print-dirs")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8(o.stdout)
                .ok()
                .and_then(|s| s.lines().next().map(|l| PathBuf::from(l).join("kubectl")))
        })
        .unwrap_or_else(|| PathBuf::from("kubectl"))
}

/// A connection to Tier A (see [`Cluster`]).
pub type TierA = Cluster;

/// A connection to a test cluster.
#[derive(Clone)]
pub struct Cluster {
    /// A client with cluster-admin rights.
    pub client: Client,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Cluster {
    /// Connects to a running Tier A cluster. Returns `None` (and says why on
    /// stderr) when there is none, so the calling test can return early;
    /// panics instead when `HERMES_E2E=require`.
    pub async fn connect() -> Option<Self> {
        Self::connect_tier(Tier::A).await
    }

    /// Like [`Cluster::connect`], for the given tier.
    pub async fn connect_tier(tier: Tier) -> Option<Self> {
        match Self::try_connect(tier).await {
            Ok(t) => Some(t),
            Err(why) if !cluster_required() => {
                eprintln!(
                    "skipped: no {} cluster ({why}); run `{}`, or the README's test command",
                    tier.name(),
                    tier.up_command()
                );
                None
            }
            Err(why) => panic!(
                "HERMES_E2E=require but {} is not reachable: {why}",
                tier.name()
            ),
        }
    }

    async fn try_connect(tier: Tier) -> Result<Self, String> {
        let kubeconfig = tier.kubeconfig();
        if !kubeconfig.exists() {
            return Err(format!("{} does not exist", kubeconfig.display()));
        }
        let raw = Kubeconfig::read_from(&kubeconfig).map_err(|source| {
            Error::Kubeconfig {
                path: kubeconfig.clone(),
                source,
            }
            .to_string()
        })?;
        let config = Config::from_custom_kubeconfig(raw, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("{}: {e}", kubeconfig.display()))?;
        let client = Client::try_from(config).map_err(|source| {
            Error::Client {
                path: kubeconfig.clone(),
                source,
            }
            .to_string()
        })?;
        tokio::time::timeout(Duration::from_secs(5), client.apiserver_version())
            .await
            .map_err(|_| "the API server did not answer in 5s".to_owned())?
            .map_err(|e| format!("the API server did not answer: {e}"))?;
        Ok(Self {
            client,
            kubeconfig,
            kubectl: kubectl_path(),
        })
    }

    /// Applies the checked-in CRDs (what users install) with server-side
    /// apply and waits until each is Established.
    pub async fn install_crds(&self) -> Result<Vec<String>, Error> {
        let api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let dir = repo_root().join("charts/hermes/crds");
        let mut names = Vec::new();
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let crd: CustomResourceDefinition =
                serde_yaml::from_str(&text).map_err(|source| Error::Yaml {
                    path: path.clone(),
                    source,
                })?;
            let name = crd.metadata.name.clone().unwrap_or_default();
            api.patch(
                &name,
                &PatchParams::apply(TEST_FIELD_MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .map_err(|source| Error::Api {
                what: format!("applying CRD {name}"),
                source,
            })?;
            names.push(name);
        }
        for name in &names {
            self.wait_established(&api, name).await?;
        }
        Ok(names)
    }

    async fn wait_established(
        &self,
        api: &Api<CustomResourceDefinition>,
        name: &str,
    ) -> Result<(), Error> {
        for _ in 0..100 {
            let crd = api.get(name).await.map_err(|source| Error::Api {
                what: format!("reading CRD {name}"),
                source,
            })?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Timeout(format!("CRD {name} not Established in 10s")))
    }

    /// Creates a namespace of its own for one test; it is deleted when the
    /// returned guard drops, even if the test panics.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        self.namespace_labelled(prefix, &[]).await
    }

    /// Like [`Cluster::namespace`], with extra labels (e.g. Pod Security enforcement).
    pub async fn namespace_labelled(
        &self,
        prefix: &str,
        extra_labels: &[(&str, &str)],
    ) -> Result<TestNamespace, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "e2e-{prefix}-{:x}{:x}{}",
            std::process::id(),
            nanos % 0xfffff,
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut labels = serde_json::Map::new();
        labels.insert(TEST_NAMESPACE_LABEL.into(), "true".into());
        for (k, v) in extra_labels {
            labels.insert((*k).into(), (*v).into());
        }
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        }))
        .map_err(|e| Error::Timeout(format!("building namespace: {e}")))?;
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .map_err(|source| Error::Api {
                what: format!("creating namespace {name}"),
                source,
            })?;
        Ok(TestNamespace {
            name,
            kubectl: self.kubectl.clone(),
            kubeconfig: self.kubeconfig.clone(),
        })
    }

    /// The kubeconfig of the cluster (for processes the tests start).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs the cluster's kubectl against Tier A.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_kubectl(&self.kubectl, &self.kubeconfig, args)
    }
}

impl Cluster {
    /// Runs the cluster's kubectl with `stdin` as its standard input.
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::Write as _;
        let child = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot run {}: {e}", self.kubectl.display()),
        };
        if let Some(mut input) = child.stdin.take() {
            let _ = input.write_all(stdin.as_bytes());
        }
        match child.wait_with_output() {
            Ok(o) => o,
            Err(e) => panic!("waiting for {}: {e}", self.kubectl.display()),
        }
    }
}

fn run_kubectl<I, S>(kubectl: &Path, kubeconfig: &Path, args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    match Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
    {
        Ok(o) => o,
        Err(e) => panic!("cannot run {}: {e}", kubectl.display()),
    }
}

/// A namespace owned by one test.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Synchronous on purpose: it also runs while a test panics.
        let _ = run_kubectl(
            &self.kubectl,
            &self.kubeconfig,
            [
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ],
        );
    }
}
