//! `podKill`: delete pods matching a selector, in rounds, and measure how
//! long the workload's controller takes to bring them back. Nothing is left
//! to undo: the restore waits (bounded) for the replacements so the record
//! says whether they came back. The victims are chosen by the pure
//! `headroom_experiments::pod_kill` (seeded, replayable).

use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::evidence::PodRecord;
use headroom_experiments::pod_kill::{self, Limits, PodKillSpec, live};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use kube::core::Selector;
use tokio::time::Instant;

use super::{ActionSpec, LiveAction, Touched};
use crate::context::Context;
use crate::duration::parse_duration;
use crate::engine::record::Record;
use crate::engine::support::now_micro;
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{Observations, RestorePlan};
use crate::verdict::Recovery;

const NAMESPACE_FIELD: &str = "spec.action.podKill.namespace";

#[async_trait]
impl ActionSpec for PodKillSpec {
    fn touched(&self, own: &str) -> Vec<Touched> {
        vec![Touched::at(NAMESPACE_FIELD, self.namespace.as_ref(), own)]
    }

    fn validate(&self) -> Result<(), Refusal> {
        live::selector(self).map_err(|e| Refusal::new(RefuseReason::InvalidSelector, e))?;
        if let Some(i) = &self.interval {
            parse_duration(i).map_err(|e| {
                Refusal::new(
                    RefuseReason::InvalidDuration,
                    format!("spec.action.podKill.interval: {e}"),
                )
            })?;
        }
        Ok(())
    }

    fn target_key(&self, own: &str) -> String {
        let sel = live::selector(self)
            .map(|s| s.to_string())
            .unwrap_or_default();
        format!("pods/{}/{sel}", self.namespace.as_deref().unwrap_or(own))
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let own = exp.namespace().unwrap_or_default();
        let ns = self.namespace.clone().unwrap_or(own);
        let selector =
            live::selector(self).map_err(|e| Refusal::new(RefuseReason::InvalidSelector, e))?;
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
        let ready_before = live::ready_count(&pods, &selector).await.map_err(|e| {
            Refusal::new(
                RefuseReason::KubernetesApiError,
                format!("listing pods: {e}"),
            )
        })?;
        let duration = parse_duration(&exp.spec.duration).unwrap_or(Duration::from_secs(300));
        let rounds = self.repeat.unwrap_or(1).max(1);
        let round_every = self
            .interval
            .as_deref()
            .and_then(|i| parse_duration(i).ok())
            .unwrap_or(duration / u32::try_from(rounds).unwrap_or(1));
        Ok(Box::new(PodKill {
            spec: self.clone(),
            ns,
            pods,
            selector,
            ready_before,
            limits: Limits {
                max_pods: exp.spec.blast_radius.as_ref().and_then(|b| b.max_pods),
                max_percent: exp.spec.blast_radius.as_ref().and_then(|b| b.max_percent),
            },
            seed: crate::engine::support::new_seed(),
            rounds,
            round_every,
            recover_bound: exp
                .spec
                .hypothesis
                .recovers_within
                .as_deref()
                .and_then(|r| parse_duration(r).ok())
                .unwrap_or(Duration::from_secs(30)),
            first_kill: None,
            started: None,
            recovering_since: None,
            recoveries: Vec::new(),
        }))
    }

    async fn recover(&self, ctx: &Context, run_ns: &str, rec: &mut Record) -> Result<(), String> {
        let Some(before) = rec
            .status
            .restore
            .as_ref()
            .and_then(|r| r.ready_pods_before)
        else {
            return Ok(());
        };
        let Ok(selector) = live::selector(self) else {
            return Ok(());
        };
        let ns = self.namespace.as_deref().unwrap_or(run_ns);
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            if let Ok(ready) = live::ready_count(&pods, &selector).await
                && ready >= usize::try_from(before).unwrap_or(0)
            {
                rec.step(Step::Recovered, format!("{ready} of {before} pods Ready"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Ok(())
    }
}

/// A podKill prepared for one run.
struct PodKill {
    spec: PodKillSpec,
    ns: String,
    pods: Api<Pod>,
    selector: Selector,
    ready_before: usize,
    limits: Limits,
    seed: u64,
    rounds: i32,
    round_every: Duration,
    recover_bound: Duration,
    first_kill: Option<Instant>,
    /// When the first round was applied; later rounds follow every
    /// `round_every` from it.
    started: Option<Instant>,
    /// When the last round's pods were deleted, while recovery is pending.
    recovering_since: Option<Instant>,
    /// Time to recover, per round.
    recoveries: Vec<Duration>,
}

const RECOVERY_POLL: Duration = Duration::from_millis(500);

impl PodKill {
    /// The pods one round would delete, and how many were candidates.
    async fn plan_round(&self, seed: u64) -> Result<(Vec<Pod>, usize), String> {
        let candidates = live::candidates(&self.pods, &self.selector)
            .await
            .map_err(|e| format!("listing pods: {e}"))?;
        let n = self.spec.victims_per_round(candidates.len());
        pod_kill::check_blast_radius(n, candidates.len(), self.limits)
            .map_err(|e| e.to_string())?;
        let names: Vec<String> = candidates.iter().map(ResourceExt::name_any).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let chosen = pod_kill::choose(&refs, n, seed);
        let total = candidates.len();
        Ok((
            candidates
                .into_iter()
                .filter(|p| chosen.contains(&p.name_any().as_str()))
                .collect(),
            total,
        ))
    }

    /// Delete one round's pods, recording each in the evidence.
    async fn kill_round(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        round: i32,
    ) -> Result<Vec<PodRecord>, String> {
        let round_seed = self.seed.wrapping_add(u64::try_from(round).unwrap_or(0));
        let (victims, total) = self.plan_round(round_seed).await?;
        let mut killed = Vec::new();
        for pod in &victims {
            match live::delete(&self.pods, pod, self.spec.grace_period_seconds).await {
                Ok(()) => {
                    let record = live::record(pod, now_micro().0.to_string());
                    rec.step(
                        Step::PodKilled,
                        format!(
                            "round {}: deleted {} (uid {}, node {}) of {total} candidates",
                            round + 1,
                            record.name,
                            record.uid.as_deref().unwrap_or("?"),
                            record.node.as_deref().unwrap_or("?")
                        ),
                    );
                    ctx.metrics.pods_killed.inc();
                    killed.push(record);
                }
                // Gone already (or replaced): nothing was done to it.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(format!("deleting pod {}: {e}", pod.name_any())),
            }
        }
        rec.status
            .observations
            .get_or_insert_with(Observations::default)
            .killed_pods
            .extend(killed.iter().cloned());
        if !killed.is_empty() {
            self.first_kill.get_or_insert_with(Instant::now);
            self.recovering_since.get_or_insert_with(Instant::now);
        }
        Ok(killed)
    }

    /// Until `until`, note the last round's recovery as soon as it happens.
    async fn watch_recovery_until(&mut self, rec: &mut Record, until: Instant) {
        while Instant::now() < until {
            if self.recovering_since.is_some() && self.check_recovered(rec).await {
                rec.save_or_log().await;
            }
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(if self.recovering_since.is_some() {
                RECOVERY_POLL.min(left)
            } else {
                left
            })
            .await;
        }
    }

    /// Note the recovery when enough pods are Ready again.
    async fn check_recovered(&mut self, rec: &mut Record) -> bool {
        let Some(since) = self.recovering_since else {
            return true;
        };
        match live::ready_count(&self.pods, &self.selector).await {
            Ok(ready) if ready >= self.ready_before => {
                let took = since.elapsed();
                self.recoveries.push(took);
                self.recovering_since = None;
                rec.step(
                    Step::Recovered,
                    format!(
                        "{ready} of {} pods Ready again after {:.1}s",
                        self.ready_before,
                        took.as_secs_f64()
                    ),
                );
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl LiveAction for PodKill {
    fn describe(&self) -> String {
        format!(
            "delete pods matching {} in {} ({} round(s), {} Ready now); their controller replaces them, and the restore waits until {} are Ready again",
            self.selector, self.ns, self.rounds, self.ready_before, self.ready_before
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            ready_pods_before: i32::try_from(self.ready_before).ok(),
            ..Default::default()
        }
    }

    fn seed(&self) -> Option<u64> {
        Some(self.seed)
    }

    async fn dry_run(&self, _ctx: &Context) -> String {
        match self.plan_round(self.seed).await {
            Ok((victims, total)) => format!(
                "dry run: would delete {} of {total} pods: {}",
                victims.len(),
                victims
                    .iter()
                    .map(|p| p.name_any())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Err(e) => format!("dry run: the round would be refused: {e}"),
        }
    }

    async fn inject(&mut self, ctx: &Context, rec: &mut Record) -> Result<(), Abort> {
        self.started = Some(Instant::now());
        self.kill_round(ctx, rec, 0)
            .await
            .map_err(|e| Abort::new(AbortReason::InjectionRefused, e))?;
        rec.save_or_log().await;
        Ok(())
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        let started = self.started.unwrap_or_else(Instant::now);
        let mut next_round = started + self.round_every;
        for round in 1..self.rounds {
            // Between rounds, watch the recovery of the last one.
            self.watch_recovery_until(rec, next_round).await;
            if Instant::now() >= deadline {
                break;
            }
            self.kill_round(ctx, rec, round)
                .await
                .map_err(|e| Abort::new(AbortReason::InjectionRefused, e))?;
            rec.save_or_log().await;
            next_round += self.round_every;
        }
        // The fault's time runs out; recovery is still watched meanwhile.
        self.watch_recovery_until(rec, deadline).await;
        Ok(())
    }

    async fn restore(&mut self, _ctx: &Context, rec: &mut Record) -> Result<String, String> {
        let bound = self.recover_bound.max(Duration::from_secs(5));
        while let Some(since) = self.recovering_since {
            if self.check_recovered(rec).await {
                break;
            }
            if since.elapsed() > bound {
                break;
            }
            tokio::time::sleep(RECOVERY_POLL).await;
        }
        rec.status
            .observations
            .get_or_insert_with(Observations::default)
            .recovery_seconds = self.recoveries.iter().max().map(Duration::as_secs_f64);
        Ok(match self.recovering_since {
            None => "nothing left to undo: every deleted pod was replaced".to_owned(),
            Some(_) => {
                "nothing left to undo by Headroom; the controller had not replaced every pod yet"
                    .to_owned()
            }
        })
    }

    fn recovery(&self) -> Recovery {
        match (self.first_kill, self.recovering_since) {
            (None, _) => Recovery::Unmeasured,
            (Some(_), Some(since)) => Recovery::NotRecovered(since.elapsed()),
            (Some(_), None) => self
                .recoveries
                .iter()
                .max()
                .copied()
                .map_or(Recovery::Unmeasured, Recovery::Recovered),
        }
    }
}
