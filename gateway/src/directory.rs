//! The Kubernetes side of the gateway behind one small trait: the tasks and
//! profiles it reads (a reflector cache in production, a map in tests), and
//! the host-name resolver (the system's in production, a table in tests).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use hermes_crds::{HermesProfile, HermesTask};
use kube::ResourceExt;

/// Where the gateway looks tasks and profiles up.
pub trait Directory: Send + Sync + 'static {
    /// The task `namespace/name` in the cache.
    fn task(&self, namespace: &str, name: &str) -> Option<Arc<HermesTask>>;
    /// The task read from the API server itself, bypassing the cache.
    fn fetch_task<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<HermesTask>>>;
    /// The profile `namespace/name` in the cache.
    fn profile(&self, namespace: &str, name: &str) -> Option<Arc<HermesProfile>>;
    /// Whether the caches have synced.
    fn ready(&self) -> bool;
}

/// A directory held in memory: tests feed it objects. `cache` is what the
/// reflector would show, `server` what a direct read returns (set apart to
/// play a lagging cache).
#[derive(Default)]
pub struct MemoryDirectory {
    cache: RwLock<HashMap<(String, String), Arc<HermesTask>>>,
    server: RwLock<HashMap<(String, String), Arc<HermesTask>>>,
    profiles: RwLock<HashMap<(String, String), Arc<HermesProfile>>>,
    fetches: std::sync::atomic::AtomicU64,
}

fn key<K: ResourceExt>(obj: &K) -> (String, String) {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

impl MemoryDirectory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `task` in the cache and on the server.
    pub fn put_task(&self, task: HermesTask) {
        let k = key(&task);
        let task = Arc::new(task);
        if let Ok(mut m) = self.cache.write() {
            m.insert(k.clone(), task.clone());
        }
        if let Ok(mut m) = self.server.write() {
            m.insert(k, task);
        }
    }

    /// Puts `task` on the server only: the cache lags behind.
    pub fn put_task_on_server(&self, task: HermesTask) {
        if let Ok(mut m) = self.server.write() {
            m.insert(key(&task), Arc::new(task));
        }
    }

    /// Removes a task from the cache and the server.
    pub fn remove_task(&self, namespace: &str, name: &str) {
        let k = (namespace.to_owned(), name.to_owned());
        if let Ok(mut m) = self.cache.write() {
            m.remove(&k);
        }
        if let Ok(mut m) = self.server.write() {
            m.remove(&k);
        }
    }

    /// Puts a profile in the cache.
    pub fn put_profile(&self, profile: HermesProfile) {
        if let Ok(mut m) = self.profiles.write() {
            m.insert(key(&profile), Arc::new(profile));
        }
    }

    /// How many direct reads were made.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Directory for MemoryDirectory {
    fn task(&self, namespace: &str, name: &str) -> Option<Arc<HermesTask>> {
        self.cache
            .read()
            .ok()?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn fetch_task<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Option<Arc<HermesTask>>> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let found = self
            .server
            .read()
            .ok()
            .and_then(|m| m.get(&(namespace.to_owned(), name.to_owned())).cloned());
        Box::pin(async move { found })
    }

    fn profile(&self, namespace: &str, name: &str) -> Option<Arc<HermesProfile>> {
        self.profiles
            .read()
            .ok()?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    fn ready(&self) -> bool {
        true
    }
}

/// Turns a host name into addresses.
pub trait Resolver: Send + Sync + 'static {
    /// Every address `host` resolves to, with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo`: /etc/hosts, then DNS).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A fixed table of names (tests, benches).
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<std::net::IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// `name` resolves to `addrs` (lower-case names).
    pub fn with(mut self, name: &str, addrs: &[std::net::IpAddr]) -> Self {
        self.names.insert(name.to_ascii_lowercase(), addrs.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        let found = self
            .names
            .get(&host.to_ascii_lowercase())
            .map(|a| a.iter().map(|ip| SocketAddr::new(*ip, port)).collect());
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "name not in the table"))
        })
    }
}
