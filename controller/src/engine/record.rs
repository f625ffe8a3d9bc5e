//! A run's status in memory, written to the API server at each step: the
//! durable record of the run even if this process dies. Phases change only
//! through [`Record::advance`], which asks the state machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use serde_json::json;
use tracing::{info, warn};

use super::state::{self, Event, Write};
use super::support::{RETRY_FOR, now, now_micro, retry};
use crate::context::{Context, MANAGER};
use crate::reasons::{Refusal, StepName};
use crate::resources::run::{ExperimentRun, ExperimentRunStatus, TimelineEntry, Verdict};

pub struct Record {
    api: Api<ExperimentRun>,
    pub(crate) name: String,
    reference: ObjectReference,
    pub status: ExperimentRunStatus,
    recorder: kube::runtime::events::Recorder,
    /// Set when another instance took the run over: from then on this
    /// process writes nothing to the run, whose record is the new driver's.
    pub(crate) lost: Arc<AtomicBool>,
}

impl Record {
    /// The record of `run`, starting from `status`.
    pub fn new(ctx: &Context, run: &ExperimentRun, status: ExperimentRunStatus) -> Self {
        let ns = run.namespace().unwrap_or_default();
        Self {
            api: Api::namespaced(ctx.client.clone(), &ns),
            name: run.name_any(),
            reference: ObjectReference {
                api_version: Some("headroom.dev/v1alpha1".into()),
                kind: Some("ExperimentRun".into()),
                name: Some(run.name_any()),
                namespace: Some(ns),
                uid: run.metadata.uid.clone(),
                ..Default::default()
            },
            status,
            recorder: ctx.recorder.clone(),
            lost: Arc::default(),
        }
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// A timestamped step in the timeline (and the log).
    pub fn step(&mut self, step: impl Into<StepName>, message: impl Into<String>) {
        let (step, message) = (step.into().to_string(), message.into());
        info!(run = %self.name, step, %message, "run step");
        self.status.timeline.push(TimelineEntry {
            time: now_micro(),
            step,
            message: Some(message),
        });
    }

    /// Move to the phase `event` leads to and write the status as the state
    /// machine says. `Err` only for a [`Write::Required`] write that failed
    /// (the caller must not go on) or an illegal event (a bug, logged; the
    /// phase is left as it was).
    pub async fn advance(&mut self, event: Event) -> Result<(), String> {
        let (to, write) = match state::transition(self.status.phase, event) {
            Ok(t) => t,
            Err(illegal) => {
                warn!(run = %self.name, %illegal, "run state machine refused an event");
                debug_assert!(false, "{illegal}");
                return Err(illegal.to_string());
            }
        };
        self.status.phase = to;
        if to.is_final() {
            self.status.completion_time = Some(now());
        }
        match write {
            Write::Required => self.save().await.map_err(|e| e.to_string()),
            Write::BestEffort => {
                self.save_or_log().await;
                Ok(())
            }
            Write::Final => {
                self.save_final().await;
                Ok(())
            }
        }
    }

    pub async fn save(&self) -> Result<(), kube::Error> {
        if self.is_lost() {
            info!(run = %self.name, "not writing the run's record: another instance drives it now");
            return Ok(());
        }
        let mut status = serde_json::to_value(&self.status).map_err(kube::Error::SerdeError)?;
        // `status.driver` belongs to the heartbeat's own field manager; left
        // out here so this apply neither owns nor removes it.
        if let Some(fields) = status.as_object_mut() {
            fields.remove("driver");
        }
        let patch = json!({
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ExperimentRun",
            "status": status,
        });
        self.api
            .patch_status(
                &self.name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map(|_| ())
    }

    /// Save, and only log a failure: past injection, the restore must go on
    /// whether or not the API server takes the write.
    pub async fn save_or_log(&self) {
        if let Err(e) = self.save().await {
            warn!(run = %self.name, error = %e, "writing run status failed");
        }
    }

    /// The run's final record, retried while the API server is away: a run
    /// whose last write fell into an outage must not look unfinished (and
    /// then be adopted as an orphan and re-judged) once it is back.
    pub async fn save_final(&self) {
        if let Err(e) = retry("writing the run's final status", RETRY_FOR, || self.save()).await {
            warn!(run = %self.name, error = %e, "giving up on writing the run's final status");
        }
    }

    pub async fn event(&self, warning: bool, reason: &str, note: String) {
        let ev = KubeEvent {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_owned(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &self.reference).await {
            warn!(run = %self.name, error = %e, "publishing event failed");
        }
    }

    /// End without touching anything.
    pub async fn refuse(&mut self, refusal: Refusal) {
        let Refusal { reason, message } = refusal;
        self.status.reason = Some(format!("{reason}: {message}"));
        self.status.verdict = Some(Verdict::Inconclusive);
        self.step(reason, format!("{message}; nothing was injected"));
        // Pending or Injecting (plan not written): both are legal.
        let _ = self.advance(Event::Refused).await;
        self.event(true, reason.as_str(), message).await;
    }
}
