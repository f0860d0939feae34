//! A secondary index over a watch cache: which objects carry a given task's
//! label, per namespace. A reconcile looks up its task's Jobs and pods here
//! and reads each from the cache by name, instead of scanning every Job and
//! pod of the cache (with a thousand tasks in flight, a scan per reconcile
//! visits thousands of objects tens of times per task).
//!
//! The index follows the very watch events that fill the cache, relists
//! included (an `Init` starts a new index that `InitDone` swaps in, as the
//! reflector does with its store), so it never holds less than the cache. A
//! name it holds that the cache no longer has is a miss, nothing more: the
//! cache stays the truth for the objects themselves.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use kube::Resource;
use kube::runtime::watcher::Event;

/// (namespace, label value).
type Key = (String, String);

#[derive(Default)]
struct Names {
    by_key: HashMap<Key, BTreeSet<String>>,
    /// (namespace, name) → the label value it is filed under.
    filed: HashMap<(String, String), String>,
}

impl Names {
    fn insert(&mut self, ns: String, name: String, value: Option<String>) {
        let id = (ns, name);
        if let Some(old) = self.filed.remove(&id) {
            self.unfile(&id, old);
        }
        if let Some(value) = value {
            self.by_key
                .entry((id.0.clone(), value.clone()))
                .or_default()
                .insert(id.1.clone());
            self.filed.insert(id, value);
        }
    }

    fn remove(&mut self, ns: String, name: String) {
        let id = (ns, name);
        if let Some(old) = self.filed.remove(&id) {
            self.unfile(&id, old);
        }
    }

    fn unfile(&mut self, (ns, name): &(String, String), value: String) {
        let key = (ns.clone(), value);
        if let Some(set) = self.by_key.get_mut(&key) {
            set.remove(name);
            if set.is_empty() {
                self.by_key.remove(&key);
            }
        }
    }
}

#[derive(Default)]
struct Inner {
    live: Names,
    /// Filled during a relist, swapped in when it is done.
    relist: Option<Names>,
}

/// Names of the objects labelled `label`, by namespace and label value.
#[derive(Clone)]
pub struct LabelIndex {
    label: &'static str,
    inner: Arc<Mutex<Inner>>,
}

impl LabelIndex {
    /// An empty index of the objects' `label`.
    pub fn new(label: &'static str) -> Self {
        Self {
            label,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Follows one watch event (the same the cache's reflector applies).
    pub fn apply<K: Resource>(&self, event: &Event<K>) {
        let id = |obj: &K| {
            let meta = obj.meta();
            (
                meta.namespace.clone().unwrap_or_default(),
                meta.name.clone().unwrap_or_default(),
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(self.label))
                    .cloned(),
            )
        };
        let mut inner = self.lock();
        match event {
            Event::Apply(obj) => {
                let (ns, name, value) = id(obj);
                inner.live.insert(ns, name, value);
            }
            Event::Delete(obj) => {
                let (ns, name, _) = id(obj);
                inner.live.remove(ns, name);
            }
            Event::Init => inner.relist = Some(Names::default()),
            Event::InitApply(obj) => {
                let (ns, name, value) = id(obj);
                inner
                    .relist
                    .get_or_insert_with(Names::default)
                    .insert(ns, name, value);
            }
            Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.live = fresh;
                }
            }
        }
    }

    /// The names of the objects in `namespace` whose label is `value`.
    pub fn names(&self, namespace: &str, value: &str) -> Vec<String> {
        self.lock()
            .live
            .by_key
            .get(&(namespace.to_owned(), value.to_owned()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use serde_json::json;

    fn job(ns: &str, name: &str, task: Option<&str>) -> Job {
        let labels = task.map(|t| json!({"hermes.dev/task": t}));
        serde_json::from_value(json!({
            "metadata": {"namespace": ns, "name": name, "labels": labels},
        }))
        .expect("job")
    }

    #[test]
    fn objects_are_found_by_namespace_and_label_value() {
        let index = LabelIndex::new("hermes.dev/task");
        index.apply(&Event::Apply(job("a", "t-prepare", Some("t"))));
        index.apply(&Event::Apply(job("a", "t-implement", Some("t"))));
        index.apply(&Event::Apply(job("a", "u-prepare", Some("u"))));
        index.apply(&Event::Apply(job("b", "t-prepare", Some("t"))));
        index.apply(&Event::Apply(job("a", "unlabelled", None)));
        assert_eq!(index.names("a", "t"), ["t-implement", "t-prepare"]);
        assert_eq!(index.names("b", "t"), ["t-prepare"]);
        assert!(index.names("c", "t").is_empty());

        index.apply(&Event::Delete(job("a", "t-prepare", Some("t"))));
        assert_eq!(index.names("a", "t"), ["t-implement"]);
        // A label that changes moves the object.
        index.apply(&Event::Apply(job("a", "t-implement", Some("u"))));
        assert!(index.names("a", "t").is_empty());
        assert_eq!(index.names("a", "u"), ["t-implement", "u-prepare"]);
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_is_done() {
        let index = LabelIndex::new("hermes.dev/task");
        index.apply(&Event::Apply(job("a", "gone-prepare", Some("gone"))));
        index.apply(&Event::Apply(job("a", "t-prepare", Some("t"))));
        index.apply(&Event::<Job>::Init);
        index.apply(&Event::InitApply(job("a", "t-prepare", Some("t"))));
        index.apply(&Event::InitApply(job("a", "t-review", Some("t"))));
        // Until the relist is done, the index is the one before it.
        assert_eq!(index.names("a", "gone"), ["gone-prepare"]);
        assert_eq!(index.names("a", "t"), ["t-prepare"]);
        index.apply(&Event::<Job>::InitDone);
        // A deletion the watch missed while it was down is gone with the relist.
        assert!(index.names("a", "gone").is_empty());
        assert_eq!(index.names("a", "t"), ["t-prepare", "t-review"]);
    }
}
