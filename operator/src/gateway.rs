//! The operator's side of `hermes-gateway`: where the gateway is (its
//! Service, read from the API), the key that mints each phase's credential
//! (`hermes_crds::gateway`), and the usage its instances counted.
//!
//! ```text
//!   poll (leader, every POLL_EVERY)
//!     EndpointSlices of the gateway Service ─> each instance's admin port
//!     GET /v1/usage (bearer: the usage reader token) ─> the book, by task uid
//!     an entry that changed ─> wake its task ─> reconcile records it in status
//!   a phase Job that ended ─> refresh_task(uid): the final count, at once
//! ```
//!
//! The operator stays the only writer of task status: the gateway serves
//! counts, the reconcile writes them (`status.usage.meters`, one per gateway
//! instance and phase; the figures are their sum).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use hermes_crds::gateway::{Claims, Figures, SigningKey, UsageReport};
use hermes_crds::{HermesTask, RunPhase};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::body::Bytes;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::ObjectRef;
use tracing::{debug, warn};

/// How often the instances' counts are read while phases run.
pub const POLL_EVERY: Duration = Duration::from_secs(3);
/// How long one read of one instance may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest usage report read.
const MAX_REPORT_BYTES: usize = 8 << 20;
/// The Service port names the chart gives the gateway.
pub const PORT_MODEL: &str = "model";
/// The egress proxy's port name.
pub const PORT_PROXY: &str = "proxy";
/// The admin port's name (metrics, probes, usage).
pub const PORT_ADMIN: &str = "admin";

/// Errors of the gateway link.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// Reading the gateway's Service or EndpointSlices failed.
    #[error("{action}")]
    Kube {
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// The Service lacks what the operator needs.
    #[error("gateway Service {0}: {1}")]
    Service(String, &'static str),
    /// Reading an instance's usage failed.
    #[error("reading usage from gateway instance {addr}: {why}")]
    Fetch {
        /// The instance's admin address.
        addr: SocketAddr,
        /// What went wrong.
        why: String,
    },
}

/// Where task pods reach the gateway, as its Service says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The Service's cluster IP (task pods have no DNS).
    pub address: String,
    /// The model API's Service port.
    pub model_port: u16,
    /// The egress proxy's Service port.
    pub proxy_port: u16,
    /// The gateway's namespace.
    pub namespace: String,
    /// The labels of the gateway's pods (the Service's selector).
    pub pod_labels: BTreeMap<String, String>,
    /// The pods' port behind the model Service port, which a NetworkPolicy
    /// names (it sees traffic after the Service's translation).
    pub model_target_port: i32,
    /// The pods' port behind the proxy Service port.
    pub proxy_target_port: i32,
}

impl Endpoint {
    /// The base URL of the model API.
    pub fn model_url(&self) -> String {
        format!("http://{}:{}", self.host(), self.model_port)
    }

    /// The proxy URL carrying `token`.
    pub fn proxy_url(&self, token: &str) -> String {
        format!(
            "http://{}:{token}@{}:{}",
            hermes_crds::gateway::PROXY_USER,
            self.host(),
            self.proxy_port
        )
    }

    fn host(&self) -> String {
        if self.address.contains(':') {
            format!("[{}]", self.address)
        } else {
            self.address.clone()
        }
    }
}

/// What one instance counted for one phase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counted {
    /// The figures.
    pub figures: Figures,
    /// Requests refused because the budget was spent.
    pub refused: u64,
}

/// One task's counts: by (instance, phase).
pub type TaskUsage = BTreeMap<(String, RunPhase), Counted>;

/// A controller's wake channel and the namespace it covers (None: all).
type Waker = (Option<String>, UnboundedSender<ObjectRef<HermesTask>>);

/// The link: configuration, the Service as last read, the counts.
pub struct Gateway {
    client: Client,
    namespace: String,
    service: String,
    key: SigningKey,
    endpoint: RwLock<Option<Endpoint>>,
    book: Mutex<HashMap<String, (String, String, TaskUsage)>>,
    wakers: Mutex<Vec<Waker>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Gateway {
    /// A link to the Service `service` in `namespace`, minting with `key`.
    pub fn new(client: Client, namespace: String, service: String, key: SigningKey) -> Self {
        Self {
            client,
            namespace,
            service,
            key,
            endpoint: RwLock::new(None),
            book: Mutex::new(HashMap::new()),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Where pods reach the gateway, once its Service was read.
    pub fn endpoint(&self) -> Option<Endpoint> {
        match self.endpoint.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The credential for `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        self.key.mint(claims)
    }

    /// Registers the wake channel of a controller over `namespace` (None: all).
    pub fn subscribe(
        &self,
        namespace: Option<String>,
        wake: UnboundedSender<ObjectRef<HermesTask>>,
    ) {
        lock(&self.wakers).push((namespace, wake));
    }

    /// What the instances counted for the task `uid`, as last read.
    pub fn usage_of(&self, uid: &str) -> TaskUsage {
        lock(&self.book)
            .get(uid)
            .map(|(_, _, u)| u.clone())
            .unwrap_or_default()
    }

    /// Reads the gateway's Service: its cluster IP, ports and selector.
    pub async fn refresh_endpoint(&self) -> Result<Endpoint, GatewayError> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
        let svc = api
            .get(&self.service)
            .await
            .map_err(|source| GatewayError::Kube {
                action: format!(
                    "reading the gateway Service {}/{}",
                    self.namespace, self.service
                ),
                source,
            })?;
        let endpoint = endpoint_of(&self.namespace, &svc)?;
        match self.endpoint.write() {
            Ok(mut g) => *g = Some(endpoint.clone()),
            Err(p) => *p.into_inner() = Some(endpoint.clone()),
        }
        Ok(endpoint)
    }

    /// The admin addresses of the gateway's ready instances.
    async fn instances(&self) -> Result<Vec<SocketAddr>, GatewayError> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &self.namespace);
        let slices = api
            .list(
                &ListParams::default()
                    .labels(&format!("kubernetes.io/service-name={}", self.service)),
            )
            .await
            .map_err(|source| GatewayError::Kube {
                action: format!("listing the gateway's EndpointSlices in {}", self.namespace),
                source,
            })?;
        let mut out = Vec::new();
        for slice in slices.items {
            let Some(port) = slice
                .ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(PORT_ADMIN))
                .and_then(|p| p.port)
                .and_then(|p| u16::try_from(p).ok())
            else {
                continue;
            };
            for ep in &slice.endpoints {
                // Terminating instances still hold counts: read them too.
                let serving = ep.conditions.as_ref().is_none_or(|c| {
                    c.ready.unwrap_or(true)
                        || c.serving.unwrap_or(false)
                        || c.terminating.unwrap_or(false)
                });
                if !serving {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse() {
                        out.push(SocketAddr::new(ip, port));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    async fn fetch(
        &self,
        addr: SocketAddr,
        uid: Option<&str>,
    ) -> Result<UsageReport, GatewayError> {
        let fail = |why: String| GatewayError::Fetch { addr, why };
        let path = match uid {
            Some(uid) => format!("/v1/usage?uid={uid}"),
            None => "/v1/usage".to_owned(),
        };
        let token = self.key.usage_reader_token();
        let work = async {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| fail(format!("connect: {e}")))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| fail(format!("handshake: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::get(path)
                .header("host", addr.to_string())
                .header("authorization", format!("Bearer {token}"))
                .body(Empty::<Bytes>::new())
                .map_err(|e| fail(format!("request: {e}")))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| fail(format!("request: {e}")))?;
            if !resp.status().is_success() {
                return Err(fail(format!("answered {}", resp.status())));
            }
            let body = Limited::new(resp.into_body(), MAX_REPORT_BYTES)
                .collect()
                .await
                .map_err(|e| fail(format!("body: {e}")))?
                .to_bytes();
            serde_json::from_slice::<UsageReport>(&body).map_err(|e| fail(format!("report: {e}")))
        };
        tokio::time::timeout(FETCH_TIMEOUT, work)
            .await
            .map_err(|_| fail("timed out".into()))?
    }

    /// Takes `report` into the book; the tasks whose counts changed.
    fn take(&self, report: &UsageReport) -> Vec<(String, String)> {
        let mut changed = Vec::new();
        let mut book = lock(&self.book);
        for e in &report.entries {
            let (_, _, usage) = book
                .entry(e.uid.clone())
                .or_insert_with(|| (e.namespace.clone(), e.task.clone(), TaskUsage::new()));
            let counted = Counted {
                figures: e.figures,
                refused: e.refused_for_budget,
            };
            let key = (report.instance.clone(), e.phase);
            if usage.get(&key) != Some(&counted) {
                usage.insert(key, counted);
                changed.push((e.namespace.clone(), e.task.clone()));
            }
        }
        changed
    }

    /// Reads the final counts of the task `uid` from every instance, at
    /// once (a phase just ended). Failures are logged: the book keeps the
    /// last counts read, at most [`POLL_EVERY`] old.
    pub async fn refresh_task(&self, uid: &str) {
        let instances = match self.instances().await {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, "gateway instances");
                return;
            }
        };
        for addr in instances {
            match self.fetch(addr, Some(uid)).await {
                Ok(report) => {
                    self.take(&report);
                }
                Err(e) => warn!(error = %e, "gateway usage"),
            }
        }
    }

    fn wake(&self, namespace: &str, name: &str) {
        for (scope, tx) in lock(&self.wakers).iter() {
            if scope.as_deref().is_none_or(|s| s == namespace) {
                let _ = tx.unbounded_send(ObjectRef::new(name).within(namespace));
            }
        }
    }

    /// Reads every instance's counts every [`POLL_EVERY`] and wakes the
    /// tasks whose counts changed; re-reads the Service every minute.
    pub async fn poll(self: Arc<Self>) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: u64 = 0;
        loop {
            tick.tick().await;
            if (rounds.is_multiple_of(20) || self.endpoint().is_none())
                && let Err(e) = self.refresh_endpoint().await
            {
                warn!(error = %e, "gateway Service");
            }
            rounds += 1;
            let instances = match self.instances().await {
                Ok(i) => i,
                Err(e) => {
                    debug!(error = %e, "gateway instances");
                    continue;
                }
            };
            let mut seen = std::collections::HashSet::new();
            let mut complete = true;
            for addr in instances {
                match self.fetch(addr, None).await {
                    Ok(report) => {
                        seen.extend(report.entries.iter().map(|e| e.uid.clone()));
                        for (ns, name) in self.take(&report) {
                            self.wake(&ns, &name);
                        }
                    }
                    Err(e) => {
                        complete = false;
                        debug!(error = %e, "gateway usage");
                    }
                }
            }
            // What no instance remembers any more (it evicts ended tasks
            // after a while) leaves the book; an entry that did not change
            // wakes nothing, so an ended task is not reconciled again.
            if complete {
                lock(&self.book).retain(|uid, _| seen.contains(uid));
            }
        }
    }
}

/// The endpoint a gateway Service describes.
pub fn endpoint_of(namespace: &str, svc: &Service) -> Result<Endpoint, GatewayError> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let spec = svc
        .spec
        .as_ref()
        .ok_or_else(|| GatewayError::Service(name.clone(), "has no spec"))?;
    let address = spec
        .cluster_ip
        .clone()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .ok_or_else(|| GatewayError::Service(name.clone(), "has no cluster IP"))?;
    let pod_labels = spec
        .selector
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| GatewayError::Service(name.clone(), "has no selector"))?;
    let port = |wanted: &str| {
        spec.ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(wanted))
    };
    let service_port = |wanted: &'static str| -> Result<(u16, i32), GatewayError> {
        let p = port(wanted).ok_or_else(|| {
            GatewayError::Service(name.clone(), "lacks a port named model, proxy or admin")
        })?;
        let target = match &p.target_port {
            Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(t)) => *t,
            None => p.port,
            Some(_) => {
                return Err(GatewayError::Service(
                    name.clone(),
                    "names a target port by name; the operator needs numbers for NetworkPolicies",
                ));
            }
        };
        let port = u16::try_from(p.port)
            .map_err(|_| GatewayError::Service(name.clone(), "has a port out of range"))?;
        Ok((port, target))
    };
    let (model_port, model_target_port) = service_port(PORT_MODEL)?;
    let (proxy_port, proxy_target_port) = service_port(PORT_PROXY)?;
    Ok(Endpoint {
        address,
        model_port,
        proxy_port,
        namespace: namespace.to_owned(),
        pod_labels,
        model_target_port,
        proxy_target_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn svc(target: IntOrString) -> Service {
        Service {
            metadata: kube::api::ObjectMeta {
                name: Some("hermes-gateway".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.40".into()),
                selector: Some(BTreeMap::from([(
                    "app.kubernetes.io/name".to_owned(),
                    "hermes-gateway".to_owned(),
                )])),
                ports: Some(vec![
                    ServicePort {
                        name: Some("model".into()),
                        port: 80,
                        target_port: Some(target),
                        ..Default::default()
                    },
                    ServicePort {
                        name: Some("proxy".into()),
                        port: 3128,
                        ..Default::default()
                    },
                ]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn the_endpoint_comes_from_the_services_ip_ports_and_selector() {
        let e = endpoint_of("hermes-system", &svc(IntOrString::Int(8080)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.model_url(), "http://10.96.0.40:80");
        assert_eq!(e.proxy_url("tok"), "http://hermes:tok@10.96.0.40:3128");
        assert_eq!((e.model_target_port, e.proxy_target_port), (8080, 3128));
        assert_eq!(e.namespace, "hermes-system");
    }

    #[tokio::test]
    async fn a_report_wakes_its_task_only_when_a_count_changed() {
        use hermes_crds::gateway::UsageEntry;
        let Ok(client) = kube::Client::try_from(kube::Config::new(
            "http://127.0.0.1:9".parse().unwrap_or_default(),
        )) else {
            return;
        };
        let key = SigningKey::from_bytes(&[1u8; 32]).unwrap_or_else(|e| panic!("{e}"));
        let g = Gateway::new(client, "ns".into(), "gw".into(), key);
        let mut report = UsageReport {
            instance: "a".into(),
            entries: vec![UsageEntry {
                namespace: "team".into(),
                task: "t".into(),
                uid: "u".into(),
                phase: RunPhase::Implement,
                figures: Figures {
                    turns: 1,
                    ..Figures::default()
                },
                refused_for_budget: 0,
            }],
        };
        assert_eq!(g.take(&report), vec![("team".to_owned(), "t".to_owned())]);
        assert!(
            g.take(&report).is_empty(),
            "the same count again wakes nothing"
        );
        report.entries[0].figures.turns = 2;
        assert_eq!(g.take(&report).len(), 1);
        assert_eq!(g.usage_of("u").len(), 1);
    }

    #[test]
    fn a_service_with_named_target_ports_is_refused_clearly() {
        let err = endpoint_of("ns", &svc(IntOrString::String("http".into())))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("target port by name"), "{err}");
    }
}
