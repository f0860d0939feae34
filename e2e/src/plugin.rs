//! Support for testing kubectl plugins: the cluster's own kubectl binary,
//! to run `kubectl <plugin> ...` with the plugin's folder on `PATH` (kubectl
//! refuses flags before a plugin's name, so [`Cluster::kubectl`], which puts
//! `--kubeconfig` first, cannot run one).

use std::path::Path;

use crate::Cluster;

impl Cluster {
    /// The kubectl binary the cluster was built with.
    pub fn kubectl_binary(&self) -> &Path {
        &self.kubectl
    }
}
