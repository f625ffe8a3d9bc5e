//! Leader election on a coordination.k8s.io Lease, so two replicas never
//! both inject. The leader renews every third of the lease duration; a
//! candidate takes the lease once it has not been renewed for a full
//! duration. A leader that cannot renew in time exits: the faults it holds
//! are restored by the next leader from the plans saved in the runs.
//!
//! Like client-go, a candidate judges expiry by when it last saw the lease
//! record change, on its own clock, so clock skew between replicas does
//! not matter.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The record last seen (holder, renew time) and when it was seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            duration,
            observed: None,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Wait until this process holds the lease.
    pub async fn acquire(&mut self) {
        let retry = (self.duration / 5).max(Duration::from_millis(200));
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Keep the lease; returns only when it was lost or could not be
    /// renewed within the lease duration.
    pub async fn hold(&mut self) -> String {
        let every = self.duration / 3;
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => return "another instance holds the lease".into(),
                Err(e) => {
                    warn!(error = %e, "leader election: renewing the lease failed");
                    if last_renewed.elapsed() >= self.duration {
                        return format!("could not renew the lease for {:?}: {e}", self.duration);
                    }
                }
            }
        }
    }

    /// Give the lease up on a clean shutdown, so the next leader need not
    /// wait for it to expire.
    pub async fn release(&mut self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                if let Err(e) = self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    warn!(error = %e, "releasing the lease failed");
                }
            }
        }
    }

    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = (spec.holder_identity.clone(), spec.renew_time.clone());
        let seen_at = match &self.observed {
            Some((h, r, at)) if (h, r) == (&record.0, &record.1) => *at,
            _ => Instant::now(),
        };
        self.observed = Some((record.0.clone(), record.1.clone(), seen_at));
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let free = spec.holder_identity.is_none();
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(seconds)).unwrap_or(0),
        );
        let expired = seen_at.elapsed() >= held_for;
        if !(mine || free || expired) {
            return Ok(false);
        }
        let new_spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            new_spec.acquire_time = Some(now.clone());
            new_spec.lease_transitions = Some(new_spec.lease_transitions.unwrap_or(0) + 1);
            if !free {
                info!(previous = ?spec.holder_identity, "taking over an expired lease");
            }
        }
        new_spec.holder_identity = Some(self.identity.clone());
        new_spec.lease_duration_seconds = Some(seconds);
        new_spec.renew_time = Some(now);
        // The resourceVersion in `lease` makes this a compare-and-swap: of
        // two candidates, one wins and the other gets 409.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
