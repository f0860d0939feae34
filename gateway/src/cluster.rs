//! The production [`Directory`]: reflector caches of HermesTask and
//! HermesProfile (managedFields dropped), one pair per watched namespace or
//! one over all namespaces, and a direct GET for a task the cache may show
//! late.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;
use futures::future::BoxFuture;
use hermes_crds::{HermesProfile, HermesTask};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::directory::Directory;

struct Scope {
    namespace: Option<String>,
    tasks: Store<HermesTask>,
    profiles: Store<HermesProfile>,
}

/// Tasks and profiles from the API server.
pub struct KubeDirectory {
    client: Client,
    scopes: Vec<Scope>,
    ready: Arc<AtomicBool>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn watch<K>(client: &Client, namespace: Option<&str>) -> Store<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api::<K>(client, namespace), watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut K| {
            o.managed_fields_mut().clear();
            o.annotations_mut()
                .remove("kubectl.kubernetes.io/last-applied-configuration");
        })
        .reflect(writer)
        .touched_objects();
    let kind = K::kind(&K::DynamicType::default()).into_owned();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(kind, error = %e, "watch error (retrying)");
            }
        }
    });
    store
}

impl KubeDirectory {
    /// Starts the watches over `namespaces` (empty: every namespace).
    pub fn start(client: Client, namespaces: &[String]) -> Arc<Self> {
        let names: Vec<Option<String>> = if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.iter().cloned().map(Some).collect()
        };
        let scopes: Vec<Scope> = names
            .into_iter()
            .map(|ns| Scope {
                tasks: watch(&client, ns.as_deref()),
                profiles: watch(&client, ns.as_deref()),
                namespace: ns,
            })
            .collect();
        let ready = Arc::new(AtomicBool::new(false));
        let waits: Vec<_> = scopes
            .iter()
            .map(|s| (s.tasks.clone(), s.profiles.clone()))
            .collect();
        let flag = ready.clone();
        tokio::spawn(async move {
            for (tasks, profiles) in waits {
                if tasks.wait_until_ready().await.is_err()
                    || profiles.wait_until_ready().await.is_err()
                {
                    return;
                }
            }
            tracing::info!("task and profile caches synced");
            flag.store(true, Ordering::Relaxed);
        });
        Arc::new(Self {
            client,
            scopes,
            ready,
        })
    }

    fn scope(&self, namespace: &str) -> Option<&Scope> {
        self.scopes
            .iter()
            .find(|s| s.namespace.as_deref().is_none_or(|n| n == namespace))
    }
}

impl Directory for KubeDirectory {
    fn task(&self, namespace: &str, name: &str) -> Option<Arc<HermesTask>> {
        self.scope(namespace)?
            .tasks
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn fetch_task<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<HermesTask>>> {
        Box::pin(async move {
            self.scope(namespace)?;
            let api: Api<HermesTask> = Api::namespaced(self.client.clone(), namespace);
            match tokio::time::timeout(std::time::Duration::from_secs(5), api.get_opt(name)).await {
                Ok(Ok(found)) => found.map(|mut t| {
                    t.managed_fields_mut().clear();
                    Arc::new(t)
                }),
                Ok(Err(e)) => {
                    tracing::warn!(namespace, task = name, error = %e, "reading the task failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(namespace, task = name, "reading the task timed out");
                    None
                }
            }
        })
    }

    fn profile(&self, namespace: &str, name: &str) -> Option<Arc<HermesProfile>> {
        self.scope(namespace)?
            .profiles
            .get(&ObjectRef::new(name).within(namespace))
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}
