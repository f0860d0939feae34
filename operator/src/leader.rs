//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas are
//! safe: only the holder reconciles. Writes use the Lease's resourceVersion
//! (optimistic concurrency), so two candidates can never both believe they
//! acquired it. A leader that cannot renew in time stops acting before its
//! lease could pass to another replica.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// Lease-based leader election for one identity.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a lease holds without renewal.
    pub lease_duration: Duration,
}

impl Elector {
    /// An elector for the Lease `namespace/name`, as `identity`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: &str,
        lease_duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration,
        }
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: i32::try_from(self.lease_duration.as_secs()).ok(),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Acquires the lease, renews it if held, or takes it over if it
    /// expired. True when this identity holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let Some(current) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("reading the leader Lease"))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(Error::kube("creating the leader Lease")(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.identity {
            self.spec(now, spec.acquire_time.clone(), transitions)
        } else {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            let expired = holder.is_empty()
                || spec
                    .renew_time
                    .as_ref()
                    .is_none_or(|t| t.0.saturating_add(duration).is_ok_and(|end| end < now));
            if !expired {
                return Ok(false);
            }
            self.spec(now, None, transitions + 1)
        };
        let mut lease = current;
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("renewing the leader Lease")(e)),
        }
    }

    /// Gives the lease up (on a graceful stop), so a standby takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(Error::kube("reading the leader Lease"))?
        else {
            return Ok(());
        };
        let held = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.identity.as_str());
        if !held {
            return Ok(());
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
        }
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(Error::kube("releasing the leader Lease")(e)),
        }
    }
}
