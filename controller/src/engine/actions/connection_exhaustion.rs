//! `connectionExhaustion`: open and hold connections to a target until it
//! refuses or the count is reached (mode Hold, connections held by this
//! process), or scale a client workload up step by step (mode
//! ScaleClients). The evidence is the count at the first refusal and every
//! drop of a held connection; the restore closes every connection or puts
//! the client count back.

use std::time::Duration;

use async_trait::async_trait;
use headroom_experiments::connection_exhaustion::{ConnectionExhaustionSpec, ConnectionMode};
use kube::ResourceExt;
use tokio::time::Instant;

use super::scale_down::recover_replicas;
use super::{ActionSpec, LiveAction, Touched};
use crate::allow_list::{HOST_FIELD, allowed_addresses};
use crate::context::Context;
use crate::duration::parse_duration;
use crate::engine::connections::{self, Held, Target};
use crate::engine::record::Record;
use crate::engine::support::now_micro;
use crate::engine::workload;
use crate::reasons::{Abort, AbortReason, Refusal, RefuseReason, Step};
use crate::resources::experiment::ChaosExperiment;
use crate::resources::run::{ConnectionDrop, Observations, RestorePlan, WorkloadRestore};

const FIELD: &str = "spec.action.connectionExhaustion";

#[async_trait]
impl ActionSpec for ConnectionExhaustionSpec {
    fn touched(&self, own: &str) -> Vec<Touched> {
        let mut out = Vec::new();
        if let Some(t) = &self.target {
            // A Service is reached in its namespace; a `host` touches no
            // namespace of the cluster (the allow-list guards it).
            out.push(match &t.service {
                Some(_) => Touched::at(
                    "spec.action.connectionExhaustion.target.namespace",
                    t.namespace.as_ref(),
                    own,
                ),
                None => Touched::own(own),
            });
        }
        if let Some(c) = &self.clients {
            out.push(Touched::at(
                "spec.action.connectionExhaustion.clients.namespace",
                c.namespace.as_ref(),
                own,
            ));
        }
        out
    }

    fn validate(&self) -> Result<(), Refusal> {
        let duration = |field: &str, value: &str| {
            parse_duration(value).map(|_| ()).map_err(|e| {
                Refusal::new(
                    RefuseReason::InvalidDuration,
                    format!("{FIELD}.{field}: {e}"),
                )
            })
        };
        duration("holdFor", &self.hold_for)?;
        if let Some(i) = &self.ramp_interval {
            duration("rampInterval", i)?;
        }
        Ok(())
    }

    fn target_key(&self, _own: &str) -> String {
        match &self.target {
            Some(t) => format!(
                "connections/{}/{}",
                t.host
                    .clone()
                    .or_else(|| t.service.clone())
                    .unwrap_or_default(),
                t.port
            ),
            None => format!(
                "clients/{}",
                self.clients.as_ref().map(|c| c.name.as_str()).unwrap_or("")
            ),
        }
    }

    async fn admit(&self, ctx: &Context, _own: &str) -> Result<(), Refusal> {
        let Some((host, port)) = self
            .target
            .as_ref()
            .and_then(|t| t.host.as_ref().map(|h| (h, t.port)))
        else {
            return Ok(());
        };
        let port = u16::try_from(port).map_err(|_| {
            Refusal::new(
                RefuseReason::InvalidTarget,
                format!("{FIELD}.target.port must be 1 to 65535"),
            )
        })?;
        allowed_addresses(&ctx.connection_allow, HOST_FIELD, host, port)
            .await
            .map(|_| ())
    }

    async fn prepare(
        &self,
        ctx: &Context,
        exp: &ChaosExperiment,
    ) -> Result<Box<dyn LiveAction>, Refusal> {
        let own = exp.namespace().unwrap_or_default();
        match self.mode {
            ConnectionMode::Hold => {
                let target =
                    connections::resolve(&ctx.client, &own, self, &ctx.connection_allow).await?;
                // One probe connection, closed at once: a target that is down
                // makes the experiment meaningless, and nothing is held.
                if let Err(e) = connections::open(&target).await {
                    return Err(Refusal::new(
                        RefuseReason::TargetUnreachable,
                        format!(
                            "{FIELD}.target {} does not accept connections: {e}",
                            target.address()
                        ),
                    ));
                }
                Ok(Box::new(Hold {
                    spec: self.clone(),
                    target,
                    held: Vec::new(),
                    closed: 0,
                }))
            }
            ConnectionMode::ScaleClients => {
                let c = self.clients.as_ref().ok_or_else(|| {
                    Refusal::new(
                        RefuseReason::InvalidTarget,
                        format!("{FIELD}.clients is required in mode ScaleClients"),
                    )
                })?;
                let ns = c.namespace.clone().unwrap_or(own);
                let w = workload::get(&ctx.client, c.kind, &ns, &c.name)
                    .await
                    .map_err(|e| Refusal::new(RefuseReason::KubernetesApiError, e))?
                    .ok_or_else(|| {
                        Refusal::new(
                            RefuseReason::WorkloadNotFound,
                            format!(
                                "{FIELD}.clients: {:?} {ns}/{} does not exist",
                                c.kind, c.name
                            ),
                        )
                    })?;
                Ok(Box::new(Clients {
                    spec: self.clone(),
                    restore: WorkloadRestore {
                        kind: c.kind,
                        namespace: ns,
                        name: c.name.clone(),
                        replicas: w.replicas,
                    },
                }))
            }
        }
    }

    async fn recover(&self, ctx: &Context, _run_ns: &str, rec: &mut Record) -> Result<(), String> {
        // Connections held by the dead process were closed by the kernel
        // when it died; a client count is put back.
        recover_replicas(ctx, rec).await
    }
}

/// The ramp of a spec, with its defaults: `rampStep` (1) added every
/// `rampInterval` (1s), then held for `holdFor` (30s when unreadable; the
/// spec is validated before a run).
struct Ramp {
    step: i32,
    every: Duration,
    hold_for: Duration,
}

impl Ramp {
    fn of(spec: &ConnectionExhaustionSpec) -> Self {
        Self {
            step: spec.ramp_step.unwrap_or(1).max(1),
            every: spec
                .ramp_interval
                .as_deref()
                .and_then(|d| parse_duration(d).ok())
                .unwrap_or(Duration::from_secs(1)),
            hold_for: parse_duration(&spec.hold_for).unwrap_or(Duration::from_secs(30)),
        }
    }
}

/// Mode Hold prepared for one run: the connections live in this process.
struct Hold {
    spec: ConnectionExhaustionSpec,
    target: Target,
    held: Vec<Held>,
    /// Connections closed by [`LiveAction::release`].
    closed: usize,
}

#[async_trait]
impl LiveAction for Hold {
    fn describe(&self) -> String {
        format!(
            "open up to {} {:?} connections to {} in steps of {}, hold them {}; restore closes every one",
            self.spec.connections,
            self.spec.protocol,
            self.target.address(),
            self.spec.ramp_step.unwrap_or(1),
            self.spec.hold_for
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            connections_held: Some(0),
            ..Default::default()
        }
    }

    async fn progress(
        &mut self,
        _ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        hold_sequence(rec, &self.spec, &self.target, &mut self.held, deadline)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))
    }

    fn release(&mut self) {
        self.closed = self.held.len();
        self.held.clear();
    }

    async fn restore(&mut self, _ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        Ok(format!("{} connections closed", self.closed))
    }
}

/// Mode ScaleClients prepared for one run.
struct Clients {
    spec: ConnectionExhaustionSpec,
    restore: WorkloadRestore,
}

#[async_trait]
impl LiveAction for Clients {
    fn describe(&self) -> String {
        let w = &self.restore;
        format!(
            "scale client {:?} {}/{} from {} up to {} replicas in steps of {}, hold {}; restore puts {} back",
            w.kind,
            w.namespace,
            w.name,
            w.replicas,
            self.spec.connections,
            self.spec.ramp_step.unwrap_or(1),
            self.spec.hold_for,
            w.replicas
        )
    }

    fn restore_plan(&self) -> RestorePlan {
        RestorePlan {
            workload: Some(self.restore.clone()),
            ..Default::default()
        }
    }

    async fn progress(
        &mut self,
        ctx: &Context,
        rec: &mut Record,
        deadline: Instant,
    ) -> Result<(), Abort> {
        clients_sequence(ctx, rec, &self.spec, &self.restore, deadline)
            .await
            .map_err(|e| Abort::new(AbortReason::ActionFailed, e))
    }

    async fn restore(&mut self, ctx: &Context, _rec: &mut Record) -> Result<String, String> {
        workload::restore_replicas(&ctx.client, &self.restore).await
    }
}

async fn hold_sequence(
    rec: &mut Record,
    spec: &ConnectionExhaustionSpec,
    target: &Target,
    held: &mut Vec<Held>,
    deadline: Instant,
) -> Result<(), String> {
    let want = usize::try_from(spec.connections).unwrap_or(0);
    let Ramp {
        step,
        every,
        hold_for,
    } = Ramp::of(spec);
    let step = usize::try_from(step).unwrap_or(1);
    let mut refused = false;
    while held.len() < want && !refused {
        note_drops(rec, target, connections::prune(held), held.len());
        for _ in 0..step {
            if held.len() >= want {
                break;
            }
            match connections::open(target).await {
                Ok(h) => held.push(h),
                Err(e) => {
                    let obs = rec
                        .status
                        .observations
                        .get_or_insert_with(Observations::default);
                    obs.connections_at_first_refusal = i32::try_from(held.len()).ok();
                    obs.refusal_message = Some(e.clone());
                    rec.step(
                        Step::TargetRefused,
                        format!(
                            "{} refused connection {} with {} held: {e}",
                            target.address(),
                            held.len() + 1,
                            held.len()
                        ),
                    );
                    refused = true;
                    break;
                }
            }
        }
        let n = i32::try_from(held.len()).unwrap_or(i32::MAX);
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        obs.max_connections_held = Some(obs.max_connections_held.unwrap_or(0).max(n));
        if let Some(r) = rec.status.restore.as_mut() {
            r.connections_held = Some(n);
        }
        rec.step(
            Step::ConnectionsHeld,
            format!("{n} connections to {} held", target.address()),
        );
        rec.save_or_log().await;
        if refused || held.len() >= want || Instant::now() + every > deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    rec.step(
        Step::Holding,
        format!(
            "holding {} connections for {}, taking every slot the target frees",
            held.len(),
            spec.hold_for
        ),
    );
    rec.save_or_log().await;
    // Keep the target full: a slot another client gives up is taken again,
    // as a crowd of clients would. That is what starves a pool that
    // recycles its sessions.
    let hold_end = (Instant::now() + hold_for).min(deadline);
    // Freed slots are retaken quickly, as a crowd of clients would.
    let retake = every.min(Duration::from_millis(100));
    while Instant::now() + retake <= hold_end {
        tokio::time::sleep(retake).await;
        // Liveness first: a connection the target dropped is not held, and
        // its slot is free to take again.
        let before = held.len();
        let dropped = connections::prune(held);
        note_drops(rec, target, dropped, held.len());
        for _ in 0..step {
            if held.len() >= want {
                break;
            }
            match connections::open(target).await {
                Ok(h) => held.push(h),
                Err(_) => break,
            }
        }
        let n = i32::try_from(held.len()).unwrap_or(i32::MAX);
        if dropped == 0 && held.len() == before {
            continue;
        }
        if let Some(r) = rec.status.restore.as_mut() {
            r.connections_held = Some(n);
        }
        let obs = rec
            .status
            .observations
            .get_or_insert_with(Observations::default);
        if obs.max_connections_held.is_none_or(|m| n > m) {
            obs.max_connections_held = Some(n);
        }
        if held.len() != before - dropped {
            rec.step(Step::ConnectionsHeld, format!("{n} connections held"));
        }
        rec.save_or_log().await;
    }
    tokio::time::sleep_until(hold_end).await;
    Ok(())
}

/// Record connections the target dropped as evidence: how many, when, and
/// how many are still held.
fn note_drops(rec: &mut Record, target: &Target, dropped: usize, held: usize) {
    if dropped == 0 {
        return;
    }
    let (dropped, held) = (
        i32::try_from(dropped).unwrap_or(i32::MAX),
        i32::try_from(held).unwrap_or(i32::MAX),
    );
    let obs = rec
        .status
        .observations
        .get_or_insert_with(Observations::default);
    obs.connections_dropped = Some(obs.connections_dropped.unwrap_or(0).saturating_add(dropped));
    obs.connection_drops.push(ConnectionDrop {
        time: now_micro(),
        dropped,
        held,
    });
    if let Some(r) = rec.status.restore.as_mut() {
        r.connections_held = Some(held);
    }
    rec.step(
        Step::ConnectionsDropped,
        format!(
            "{} dropped {dropped} held connections; {held} still held",
            target.address()
        ),
    );
}

async fn clients_sequence(
    ctx: &Context,
    rec: &mut Record,
    spec: &ConnectionExhaustionSpec,
    w: &WorkloadRestore,
    deadline: Instant,
) -> Result<(), String> {
    let (kind, ns, name, from) = (w.kind, w.namespace.as_str(), w.name.as_str(), w.replicas);
    let Ramp {
        step,
        every,
        hold_for,
    } = Ramp::of(spec);
    let mut replicas = from;
    while replicas < spec.connections {
        replicas = (replicas + step).min(spec.connections);
        workload::scale(&ctx.client, kind, ns, name, replicas).await?;
        rec.step(
            Step::ClientsScaled,
            format!("{kind:?} {ns}/{name} scaled to {replicas}"),
        );
        rec.save_or_log().await;
        if Instant::now() + every > deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    tokio::time::sleep_until((Instant::now() + hold_for).min(deadline)).await;
    Ok(())
}
