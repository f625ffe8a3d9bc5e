//! Which operator instance drives a run, and when another may take it over.
//!
//! Any two instances that see the same namespace (a cluster-wide install and
//! a namespaced one, a laptop beside the Deployment, an old leader still
//! driving while a new one starts) must never both drive a run: one would
//! restore a fault the other is still observing. The driving instance
//! records itself in `status.driver` and renews a heartbeat there; another
//! instance adopts (restores) a run only once that heartbeat is older than
//! its lease plus [`MARGIN`]. Pure decisions here; the writes are in
//! `engine::heartbeat`.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::resources::run::{ExperimentRun, RunDriver};

/// Allowance for clocks that disagree between instances: a heartbeat is
/// taken as lost only this long after its lease ran out.
pub const MARGIN: Duration = Duration::from_secs(2);

/// Default `--run-lease-duration`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Bounds on a lease read from a run's status: a record cannot make an
/// instance wait forever, nor adopt a run the moment it is written.
const MIN_LEASE_SECONDS: i64 = 1;
const MAX_LEASE_SECONDS: i64 = 3600;

/// This process as a driver of runs.
#[derive(Clone, Debug)]
pub struct Instance {
    /// Unique per process: a restarted operator is a new instance.
    pub id: String,
    /// How long one heartbeat holds.
    pub lease: Duration,
}

impl Instance {
    /// An identity from the pod name (or host name), the process id and a
    /// random suffix.
    pub fn new(lease: Duration) -> Self {
        let base = std::env::var("POD_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "headroom".into());
        let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
        Self {
            id: format!("{base}-{}-{suffix:06x}", std::process::id()),
            lease: lease.max(Duration::from_secs(1)),
        }
    }

    /// An onlooker that drives nothing (`headroom status`): every recorded
    /// driver is another instance to it.
    pub fn observer() -> Self {
        Self {
            id: String::new(),
            lease: DEFAULT_LEASE,
        }
    }

    /// How often the driver renews: three tries per lease, so one slow or
    /// failed write does not let the lease run out.
    pub fn renew_every(&self) -> Duration {
        self.lease / 3
    }

    /// The heartbeat this instance writes now.
    pub fn heartbeat(&self, now: Timestamp) -> RunDriver {
        RunDriver {
            instance: self.id.clone(),
            heartbeat_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now),
            lease_duration_seconds: i64::try_from(self.lease.as_secs()).unwrap_or(i64::MAX),
        }
    }
}

/// Who holds a run that this process is not driving, as this process sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// Another instance, whose heartbeat holds until `expires`.
    Live {
        instance: String,
        expires: Timestamp,
    },
    /// Nobody any more: the last driver (if one was recorded) stopped
    /// renewing at `since`, or it is this process's own identity with no
    /// task behind it (the task ended without finishing). Adopt it.
    Gone {
        instance: Option<String>,
        since: Timestamp,
    },
}

/// Decide who holds a run from its recorded driver, or, when none was
/// recorded yet (a run created a moment ago, or by an older version), from
/// its creation time with this instance's lease.
pub fn holder(
    driver: Option<&RunDriver>,
    created: Option<Timestamp>,
    me: &Instance,
    now: Timestamp,
) -> Holder {
    let (instance, last, lease_s) = match driver {
        Some(d) if d.instance == me.id => {
            return Holder::Gone {
                instance: Some(d.instance.clone()),
                since: d.heartbeat_time.0,
            };
        }
        Some(d) => (
            Some(d.instance.clone()),
            d.heartbeat_time.0,
            d.lease_duration_seconds
                .clamp(MIN_LEASE_SECONDS, MAX_LEASE_SECONDS),
        ),
        None => match created {
            Some(c) => (
                None,
                c,
                i64::try_from(me.lease.as_secs())
                    .unwrap_or(MAX_LEASE_SECONDS)
                    .clamp(MIN_LEASE_SECONDS, MAX_LEASE_SECONDS),
            ),
            None => {
                return Holder::Gone {
                    instance: None,
                    since: now,
                };
            }
        },
    };
    let margin_ms = i64::try_from(MARGIN.as_millis()).unwrap_or(0);
    let expires_ms = last
        .as_millisecond()
        .saturating_add(lease_s.saturating_mul(1000))
        .saturating_add(margin_ms);
    let expires = Timestamp::from_millisecond(expires_ms).unwrap_or(Timestamp::MAX);
    if now < expires {
        match instance {
            Some(instance) => Holder::Live { instance, expires },
            // Created a moment ago by someone who has not written its
            // heartbeat yet: treat it as live, by an unnamed instance.
            None => Holder::Live {
                instance: String::new(),
                expires,
            },
        }
    } else {
        Holder::Gone {
            instance,
            since: last,
        }
    }
}

/// [`holder`] of a run, from its recorded driver and creation time.
pub fn holder_of(run: &ExperimentRun, me: &Instance, now: Timestamp) -> Holder {
    holder(
        run.status.as_ref().and_then(|s| s.driver.as_ref()),
        run.metadata.creation_timestamp.as_ref().map(|t| t.0),
        me,
        now,
    )
}

/// How an instance that drives runs looks to this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DriverState {
    /// This process.
    This,
    /// Another instance whose heartbeat holds.
    Live,
    /// Another instance whose heartbeat ran out: its runs will be adopted.
    Expired,
}

impl DriverState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::This => "this instance",
            Self::Live => "live",
            Self::Expired => "heartbeat expired",
        }
    }
}

/// One instance driving runs, with the runs it drives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriverView {
    pub instance: String,
    pub state: DriverState,
    /// Latest heartbeat over its runs.
    pub heartbeat: Timestamp,
    /// `namespace/name` of each run, sorted.
    pub runs: Vec<String>,
}

/// The instances driving the unfinished runs among `runs`, this process
/// first, then live ones, then expired ones.
pub fn drivers<'a>(
    runs: impl IntoIterator<Item = &'a ExperimentRun>,
    me: &Instance,
    now: Timestamp,
) -> Vec<DriverView> {
    let mut views: Vec<DriverView> = Vec::new();
    for run in runs {
        let Some(status) = run.status.as_ref() else {
            continue;
        };
        if status.phase.is_final() {
            continue;
        }
        let Some(d) = status.driver.as_ref() else {
            continue;
        };
        let state = if d.instance == me.id {
            DriverState::This
        } else {
            match holder(Some(d), None, me, now) {
                Holder::Live { .. } => DriverState::Live,
                Holder::Gone { .. } => DriverState::Expired,
            }
        };
        let name = format!(
            "{}/{}",
            run.metadata.namespace.as_deref().unwrap_or_default(),
            run.metadata.name.as_deref().unwrap_or_default()
        );
        match views.iter_mut().find(|v| v.instance == d.instance) {
            Some(v) => {
                v.runs.push(name);
                v.heartbeat = v.heartbeat.max(d.heartbeat_time.0);
                // One live run makes the instance live.
                v.state = v.state.min(state);
            }
            None => views.push(DriverView {
                instance: d.instance.clone(),
                state,
                heartbeat: d.heartbeat_time.0,
                runs: vec![name],
            }),
        }
    }
    for v in &mut views {
        v.runs.sort();
    }
    views.sort_by(|a, b| (a.state, &a.instance).cmp(&(b.state, &b.instance)));
    views
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::run::{ExperimentRunSpec, ExperimentRunStatus, RunPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).expect("time")
    }

    fn me() -> Instance {
        Instance {
            id: "me-1-aaaaaa".into(),
            lease: Duration::from_secs(10),
        }
    }

    fn driver(instance: &str, beat: i64, lease: i64) -> RunDriver {
        RunDriver {
            instance: instance.into(),
            heartbeat_time: MicroTime(at(beat)),
            lease_duration_seconds: lease,
        }
    }

    #[test]
    fn holder_table() {
        let other = |beat, lease| Some(driver("other", beat, lease));
        // (what, recorded driver, created at, now, who holds it)
        type Case = (&'static str, Option<RunDriver>, Option<i64>, i64, Holder);
        let cases: Vec<Case> = vec![
            (
                "fresh heartbeat of another instance",
                other(0, 10),
                None,
                5,
                Holder::Live {
                    instance: "other".into(),
                    expires: at(12),
                },
            ),
            (
                "lease run out but still within the margin",
                other(0, 10),
                None,
                11,
                Holder::Live {
                    instance: "other".into(),
                    expires: at(12),
                },
            ),
            (
                "lease and margin run out",
                other(0, 10),
                None,
                12,
                Holder::Gone {
                    instance: Some("other".into()),
                    since: at(0),
                },
            ),
            (
                "the other instance's own lease counts, not ours",
                other(0, 60),
                None,
                30,
                Holder::Live {
                    instance: "other".into(),
                    expires: at(62),
                },
            ),
            (
                "a lease of zero is read as one second",
                other(0, 0),
                None,
                2,
                Holder::Live {
                    instance: "other".into(),
                    expires: at(3),
                },
            ),
            (
                "a huge lease is capped at an hour",
                other(0, i64::MAX),
                None,
                3603,
                Holder::Gone {
                    instance: Some("other".into()),
                    since: at(0),
                },
            ),
            (
                "our own identity with no task behind it",
                Some(driver("me-1-aaaaaa", 0, 10)),
                None,
                1,
                Holder::Gone {
                    instance: Some("me-1-aaaaaa".into()),
                    since: at(0),
                },
            ),
            (
                "no driver yet, created a moment ago",
                None,
                Some(0),
                3,
                Holder::Live {
                    instance: String::new(),
                    expires: at(12),
                },
            ),
            (
                "no driver, created long ago (an older operator's run)",
                None,
                Some(0),
                600,
                Holder::Gone {
                    instance: None,
                    since: at(0),
                },
            ),
        ];
        for (what, d, created, now, want) in cases {
            let got = holder(d.as_ref(), created.map(at), &me(), at(now));
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn unknown_creation_and_no_driver_is_adoptable() {
        assert!(matches!(
            holder(None, None, &me(), at(0)),
            Holder::Gone { instance: None, .. }
        ));
    }

    #[test]
    fn identities_differ_per_process_instance() {
        let a = Instance::new(Duration::from_secs(10));
        let b = Instance::new(Duration::from_secs(10));
        assert_ne!(a.id, b.id);
        assert_eq!(a.renew_every().as_millis(), 3333);
        assert!(Instance::new(Duration::ZERO).lease >= Duration::from_secs(1));
    }

    fn run(name: &str, phase: RunPhase, d: Option<RunDriver>) -> ExperimentRun {
        let mut r = ExperimentRun::new(
            name,
            ExperimentRunSpec {
                experiment: "e".into(),
                trigger: None,
                snapshot: serde_json::from_value(serde_json::json!({
                    "hypothesis": {"description": "h"},
                    "slos": ["s"],
                    "duration": "1m",
                    "action": {"podKill": {"selector": {"matchLabels": {"a": "b"}}}}
                }))
                .expect("spec"),
                slos: vec![],
            },
        );
        r.metadata.namespace = Some("ns".into());
        r.status = Some(ExperimentRunStatus {
            phase,
            driver: d,
            ..Default::default()
        });
        r
    }

    #[test]
    fn drivers_groups_runs_by_instance_and_skips_finished_ones() {
        let runs = [
            run("a", RunPhase::Observing, Some(driver("other", 0, 10))),
            run("b", RunPhase::Pending, Some(driver("other", 4, 10))),
            run("c", RunPhase::Observing, Some(driver("me-1-aaaaaa", 5, 10))),
            run("d", RunPhase::Restoring, Some(driver("gone", -100, 10))),
            run("e", RunPhase::Completed, Some(driver("finished", 5, 10))),
            run("f", RunPhase::Observing, None),
        ];
        let views = drivers(&runs, &me(), at(6));
        let summary: Vec<(&str, DriverState, Vec<&str>)> = views
            .iter()
            .map(|v| {
                (
                    v.instance.as_str(),
                    v.state,
                    v.runs.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("me-1-aaaaaa", DriverState::This, vec!["ns/c"]),
                ("other", DriverState::Live, vec!["ns/a", "ns/b"]),
                ("gone", DriverState::Expired, vec!["ns/d"]),
            ]
        );
        assert_eq!(
            views[1].heartbeat,
            at(4),
            "latest heartbeat of the instance"
        );
    }
}
