//! The cluster's own addresses, which no CIDR rule of a profile reaches
//! unless the rule names them: the API server (its `kubernetes` Service
//! address and the endpoints behind it), every node's addresses, and the
//! ranges the platform team adds (`HERMES_EXCEPT_CIDRS`: a node subnet,
//! other infrastructure). [`crate::builders`] excepts them from every
//! ipBlock wider than them; the fixed ranges (link-local, cloud metadata)
//! live beside that rule in `builders::network`.
//!
//! They come from watches, not from configuration, so a node that joins is
//! excepted without anyone remembering to list it: Nodes cluster-wide (a
//! ClusterRole reading nodes; `HERMES_EXCEPT_NODE_ADDRESSES=false` turns it
//! off for clusters that cannot grant one, and then the node subnet belongs
//! in `HERMES_EXCEPT_CIDRS`), and the `kubernetes` Service and
//! EndpointSlice in `default` (a Role there, limited to that name). Until
//! every watch has listed once, reconciles wait (the operator's caches are
//! not ready): a policy is never written without them.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// The namespace and name of the API server's Service and EndpointSlice.
const API_NAMESPACE: &str = "default";
const API_NAME: &str = "kubernetes";

/// Where the addresses come from.
#[derive(Clone, Debug, Default)]
pub struct Config {
    /// Watch Nodes for their addresses (needs nodes list and watch).
    pub nodes: bool,
    /// Ranges excepted on top of what the watches show.
    pub extra: Vec<IpNet>,
}

/// Why `HERMES_EXCEPT_CIDRS` was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "entry {position} ({entry:?}) is not a CIDR naming a network address (e.g. 10.0.0.0/16, 2001:db8::/48)"
)]
pub struct ParseError {
    /// 1-based position in the list.
    pub position: usize,
    /// The entry, trimmed.
    pub entry: String,
}

/// Parses a comma-separated list of CIDRs (blank entries and surrounding
/// whitespace allowed); each must be a network address, as a profile's.
pub fn parse_cidrs(value: &str) -> Result<Vec<IpNet>, ParseError> {
    let mut out = Vec::new();
    for (i, entry) in value.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        match entry.parse::<IpNet>() {
            Ok(net) if net.trunc() == net => out.push(net),
            _ => {
                return Err(ParseError {
                    position: i + 1,
                    entry: entry.to_owned(),
                });
            }
        }
    }
    Ok(out)
}

/// The cluster's addresses as the watches show them.
pub struct ClusterAddresses {
    nodes: Option<Store<Node>>,
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    extra: Vec<IpNet>,
    ready: tokio::sync::watch::Receiver<bool>,
}

fn host(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Every address a node lists (internal and external IPs; names are not
/// addresses).
pub fn node_addresses(node: &Node) -> impl Iterator<Item = IpNet> + '_ {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse::<IpAddr>().ok())
        .map(host)
}

/// The Service's cluster addresses.
pub fn service_addresses(service: &Service) -> impl Iterator<Item = IpNet> + '_ {
    service
        .spec
        .iter()
        .flat_map(|s| s.cluster_ips.iter().flatten().chain(s.cluster_ip.iter()))
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(host)
}

/// The addresses of every endpoint of the slice.
pub fn slice_addresses(slice: &EndpointSlice) -> impl Iterator<Item = IpNet> + '_ {
    slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter())
        .filter_map(|ip| ip.parse::<IpAddr>().ok())
        .map(host)
}

impl ClusterAddresses {
    /// Starts the watches (on the current runtime).
    pub fn start(client: &Client, config: Config) -> Arc<Self> {
        let named = watcher::Config::default().fields(&format!("metadata.name={API_NAME}"));
        let services = spawn_watch(
            "Service",
            Api::<Service>::namespaced(client.clone(), API_NAMESPACE),
            named.clone(),
        );
        let slices = spawn_watch(
            "EndpointSlice",
            Api::<EndpointSlice>::namespaced(client.clone(), API_NAMESPACE),
            named,
        );
        let nodes = config.nodes.then(|| {
            spawn_watch(
                "Node",
                Api::<Node>::all(client.clone()),
                watcher::Config::default(),
            )
        });
        let (tx, ready) = tokio::sync::watch::channel(false);
        let stores = (nodes.clone(), services.clone(), slices.clone());
        tokio::spawn(async move {
            // One waiter per store (a store wakes only its last waiter).
            let listed = services.wait_until_ready().await.is_ok()
                && slices.wait_until_ready().await.is_ok()
                && match &nodes {
                    Some(n) => n.wait_until_ready().await.is_ok(),
                    None => true,
                };
            if listed {
                let _ = tx.send(true);
            }
        });
        Arc::new(Self {
            nodes: stores.0,
            services: stores.1,
            slices: stores.2,
            extra: config.extra,
            ready,
        })
    }

    /// Fixed addresses only, ready at once: for tests and benches that
    /// build without a cluster.
    pub fn fixed(extra: Vec<IpNet>) -> Arc<Self> {
        let (_tx, ready) = tokio::sync::watch::channel(true);
        Arc::new(Self {
            nodes: None,
            services: reflector::store().0,
            slices: reflector::store().0,
            extra,
            ready,
        })
    }

    /// Resolves once every watch has listed once.
    pub fn ready(&self) -> tokio::sync::watch::Receiver<bool> {
        self.ready.clone()
    }

    /// The addresses, sorted and without duplicates; `None` until every
    /// watch has listed once.
    pub fn addresses(&self) -> Option<Vec<IpNet>> {
        if !*self.ready.borrow() {
            return None;
        }
        let mut all: BTreeSet<IpNet> = self.extra.iter().copied().collect();
        if let Some(nodes) = &self.nodes {
            for n in nodes.state() {
                all.extend(node_addresses(&n));
            }
        }
        for s in self.services.state() {
            all.extend(service_addresses(&s));
        }
        for s in self.slices.state() {
            all.extend(slice_addresses(&s));
        }
        Some(all.into_iter().collect())
    }
}

/// A watch filling a store, its errors logged; objects stripped of what the
/// addresses do not need (a node's image list is most of it).
fn spawn_watch<K>(kind: &'static str, api: Api<K>, config: watcher::Config) -> Store<K>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + Strip
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut().clear();
            o.strip();
        })
        .reflect(writer)
        .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(kind, error = %e, "watch of the cluster's addresses failed (retrying; reconciles wait for its first list)");
            }
        }
    });
    store
}

/// Drops the parts of an object the addresses do not read.
pub trait Strip {
    /// Clears them.
    fn strip(&mut self);
}

impl Strip for Node {
    fn strip(&mut self) {
        self.spec = None;
        if let Some(s) = self.status.as_mut() {
            s.images = None;
            s.conditions = None;
            s.volumes_attached = None;
            s.volumes_in_use = None;
            s.node_info = None;
            s.capacity = None;
            s.allocatable = None;
        }
    }
}

impl Strip for Service {
    fn strip(&mut self) {
        self.status = None;
    }
}

impl Strip for EndpointSlice {
    fn strip(&mut self) {
        for e in &mut self.endpoints {
            e.target_ref = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_lists_parse_network_addresses_only() {
        assert_eq!(
            parse_cidrs(" 10.0.0.0/16, ,fd00::/8 ").unwrap(),
            vec![
                "10.0.0.0/16".parse::<IpNet>().unwrap(),
                "fd00::/8".parse().unwrap()
            ]
        );
        assert_eq!(parse_cidrs("").unwrap(), Vec::<IpNet>::new());
        assert_eq!(
            parse_cidrs("10.0.0.0/16,10.1.2.3/8"),
            Err(ParseError {
                position: 2,
                entry: "10.1.2.3/8".into()
            })
        );
        assert!(parse_cidrs("10.0.0.1").is_err(), "a bare address");
        assert!(parse_cidrs("node-subnet").is_err());
    }

    #[test]
    fn addresses_are_read_from_nodes_services_and_slices() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.5"},
                {"type": "ExternalIP", "address": "2001:db8::5"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalIP", "address": "not-an-ip"},
            ]},
        }))
        .unwrap();
        let nets: Vec<String> = node_addresses(&node).map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.5/32", "2001:db8::5/128"]);

        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "spec": {"clusterIP": "10.96.0.1", "clusterIPs": ["10.96.0.1", "fd00:96::1"]},
        }))
        .unwrap();
        let nets: BTreeSet<String> = service_addresses(&service).map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            BTreeSet::from(["10.96.0.1/32".into(), "fd00:96::1/128".into()])
        );

        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "kubernetes"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.5"]}, {"addresses": ["10.0.0.6"]}],
        }))
        .unwrap();
        let nets: Vec<String> = slice_addresses(&slice).map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.5/32", "10.0.0.6/32"]);
    }

    #[test]
    fn a_node_stripped_keeps_its_addresses() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "images": [{"names": ["x"], "sizeBytes": 1}],
            },
        }))
        .unwrap();
        node.strip();
        assert!(node.spec.is_none());
        assert_eq!(node_addresses(&node).count(), 1);
    }

    #[tokio::test]
    async fn fixed_addresses_are_ready_at_once_and_sorted() {
        let a = ClusterAddresses::fixed(vec![
            "10.2.0.0/16".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        let nets: Vec<String> = a
            .addresses()
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(nets, ["10.1.0.0/16", "10.2.0.0/16"]);
    }
}
