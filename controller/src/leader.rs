//! Leader election on a coordination.k8s.io Lease, so two replicas never
//! both inject. As in client-go's leader election there are three times:
//! the lease duration (a candidate takes the lease once it has not seen
//! it change for that long), the renew deadline (shorter: a leader that
//! has not renewed within it stops leading) and the retry period (how
//! often the leader renews). Every API call is bounded by a timeout that
//! ends no later than the renew deadline, so a hung API server cannot keep
//! a leader waiting past it. The leader therefore stops, and drops the
//! faults it holds in this process, before any candidate may take over;
//! the next leader restores what is left from the plans saved in the runs.
//!
//! Like client-go, a candidate judges expiry by when it last saw the lease
//! record change, on its own clock, so clock skew between replicas does
//! not matter. A leader measures its deadline from when it *sent* its last
//! successful renewal, which is no later than any candidate saw it.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::time::Instant;
use tracing::{info, warn};

/// The three times of leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A lease not seen to change for this long is free to take.
    pub lease_duration: Duration,
    /// A leader that has not renewed for this long stops leading.
    pub renew_deadline: Duration,
    /// How often the leader renews, and a candidate retries.
    pub retry_period: Duration,
}

impl Timing {
    /// client-go's proportions (15s / 10s / 2s): the renew deadline two
    /// thirds of the lease, the retry period a little under a seventh.
    pub fn from_lease(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: (lease_duration * 2 / 15).max(Duration::from_millis(100)),
        }
    }

    /// The deadline must leave the leader time to stop before a candidate
    /// may take over, and the retry period must fit in the deadline.
    pub fn check(&self) -> Result<(), String> {
        if self.renew_deadline >= self.lease_duration {
            return Err(format!(
                "--renew-deadline ({:?}) must be shorter than --lease-duration ({:?}), or a candidate may take over while the leader still injects",
                self.renew_deadline, self.lease_duration
            ));
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return Err(format!(
                "the retry period ({:?}) must be above zero and shorter than --renew-deadline ({:?})",
                self.retry_period, self.renew_deadline
            ));
        }
        Ok(())
    }

    /// How long the next API call may take: a retry period at most, and
    /// never past the renew deadline. `None` once the deadline has passed.
    pub fn call_timeout(&self, since_renewed: Duration) -> Option<Duration> {
        let left = self.renew_deadline.checked_sub(since_renewed)?;
        (!left.is_zero()).then_some(left.min(self.retry_period))
    }
}

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    timing: Timing,
    /// The record last seen (holder, renew time) and when it was seen.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl Elector {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity,
            duration: timing.lease_duration,
            timing,
            observed: None,
        }
    }

    /// One attempt, bounded by `limit`: a call that hangs (an API server
    /// that stopped answering) counts as a failure when the time is up.
    async fn attempt(&mut self, limit: Duration) -> Result<bool, String> {
        match tokio::time::timeout(limit, self.try_acquire_or_renew()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer from the API server within {limit:?}")),
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Wait until this process holds the lease.
    /// Returns when the winning call was sent: the renew deadline counts
    /// from there.
    pub async fn acquire(&mut self) -> Instant {
        let retry = self.timing.retry_period;
        loop {
            let sent = Instant::now();
            match self.attempt(retry).await {
                Ok(true) => {
                    info!(identity = %self.identity, lease = %self.name, "became the leader");
                    return sent;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election: reading the lease failed"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Keep the lease; returns only when it was lost or could not be
    /// renewed within the renew deadline. `acquired` is when the call that
    /// won the lease was sent (the deadline counts from there).
    pub async fn hold(&mut self, acquired: Instant) -> String {
        let mut last_renewed = acquired;
        loop {
            tokio::time::sleep(self.timing.retry_period).await;
            let Some(limit) = self.timing.call_timeout(last_renewed.elapsed()) else {
                return format!(
                    "could not renew the lease within the renew deadline ({:?})",
                    self.timing.renew_deadline
                );
            };
            let sent = Instant::now();
            match self.attempt(limit).await {
                Ok(true) => last_renewed = sent,
                Ok(false) => return "another instance holds the lease".into(),
                Err(e) => {
                    warn!(error = %e, "leader election: renewing the lease failed");
                    if self.timing.call_timeout(last_renewed.elapsed()).is_none() {
                        return format!(
                            "could not renew the lease within the renew deadline ({:?}): {e}",
                            self.timing.renew_deadline
                        );
                    }
                }
            }
        }
    }

    /// Give the lease up on a clean shutdown, so the next leader need not
    /// wait for it to expire.
    pub async fn release(&mut self) {
        let limit = self.timing.retry_period;
        if let Ok(Ok(Some(mut lease))) =
            tokio::time::timeout(limit, self.api.get_opt(&self.name)).await
        {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                match tokio::time::timeout(
                    limit,
                    self.api.replace(&self.name, &PostParams::default(), &lease),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => warn!(error = %e, "releasing the lease failed"),
                    Err(_) => warn!("releasing the lease: no answer within {limit:?}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_client_go() {
        let t = Timing::from_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert_eq!(t.retry_period, Duration::from_secs(2));
        assert_eq!(t.check(), Ok(()));
    }

    #[test]
    fn a_deadline_not_shorter_than_the_lease_is_refused() {
        let s = Duration::from_secs;
        let cases = [
            (s(15), s(10), s(2), true),
            (s(15), s(15), s(2), false),
            (s(15), s(20), s(2), false),
            (s(15), s(10), s(10), false),
            (s(15), s(10), Duration::ZERO, false),
        ];
        for (lease_duration, renew_deadline, retry_period, ok) in cases {
            let t = Timing {
                lease_duration,
                renew_deadline,
                retry_period,
            };
            assert_eq!(t.check().is_ok(), ok, "{t:?}");
        }
    }

    #[test]
    fn no_call_outlives_the_renew_deadline() {
        let t = Timing::from_lease(Duration::from_secs(15));
        let ms = Duration::from_millis;
        // (time since the last renewal, the timeout of the next call)
        let cases = [
            (ms(0), Some(ms(2000))),
            (ms(7000), Some(ms(2000))),
            (ms(9500), Some(ms(500))),
            (ms(10_000), None),
            (ms(12_000), None),
        ];
        for (since, want) in cases {
            assert_eq!(t.call_timeout(since), want, "{since:?}");
        }
    }
}
