//! Notifications: a run started, aborted (with the reason) and finished
//! (verdict, budget spent, a link to the run page), POSTed to webhooks the
//! operator's administrator lists in one Secret of the operator's namespace
//! (`--notify-secret`): each key names a webhook, its value is the URL.
//! Experiments cannot name a URL, so no team can make the operator POST
//! anywhere.
//!
//! The run never waits for a webhook: the driver hands a [`Notice`] to a
//! bounded queue ([`Notifier::send`] never blocks; a full queue drops and
//! counts), and a background task delivers it, one worker per webhook so a
//! dead receiver delays only its own notices. Each worker delivers its
//! notices one at a time in the order they were sent, so a run's notices
//! arrive in order; each is POSTed until the receiver takes it, retried
//! with exponential backoff for a bounded time only when the receiver
//! surely did not take it ([`after_attempt`]), so none arrives twice.
//!
//! Pure parts (payloads, the Secret's parsing, the retry decision) are
//! separate from the sender and have table tests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::resources::run::{ExperimentRunStatus, RunPhase, Verdict};

/// What happened to a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NoticeKind {
    /// The fault is in place.
    Started,
    /// An abort rule fired; the restore follows at once.
    Aborted,
    /// The run ended (restored, or its restore failed) with a verdict.
    Finished,
}

/// One notification, as the driver saw the run at that moment.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    pub kind: NoticeKind,
    pub namespace: String,
    pub experiment: String,
    pub run: String,
    pub hypothesis: String,
    pub phase: RunPhase,
    pub verdict: Option<Verdict>,
    pub reason: Option<String>,
    /// Share of the budget the run spent (ratio, as `status.budget.spent`).
    pub budget_spent: Option<f64>,
    /// Lowest budget remaining after the run (ratio).
    pub budget_remaining_after: Option<f64>,
    /// RFC 3339, when the notice was made (not when it is delivered).
    pub time: String,
}

/// Which run a notice is about.
pub struct RunRef<'a> {
    pub namespace: &'a str,
    pub experiment: &'a str,
    pub run: &'a str,
    pub hypothesis: &'a str,
}

impl Notice {
    /// A notice of `kind` about `run` with the figures of `status` now.
    pub fn new(kind: NoticeKind, run: RunRef<'_>, status: &ExperimentRunStatus) -> Self {
        let budget = status.budget.as_ref();
        Self {
            kind,
            namespace: run.namespace.to_owned(),
            experiment: run.experiment.to_owned(),
            run: run.run.to_owned(),
            hypothesis: run.hypothesis.to_owned(),
            phase: status.phase,
            // A verdict or spend before the end would be a partial figure.
            verdict: (kind == NoticeKind::Finished)
                .then_some(status.verdict)
                .flatten(),
            reason: (kind != NoticeKind::Started)
                .then(|| status.reason.clone())
                .flatten(),
            budget_spent: (kind == NoticeKind::Finished)
                .then(|| budget.and_then(|b| b.spent))
                .flatten(),
            budget_remaining_after: (kind == NoticeKind::Finished)
                .then(|| budget.and_then(|b| b.remaining_after))
                .flatten(),
            time: k8s_openapi::jiff::Timestamp::now().to_string(),
        }
    }

    /// Unique per run and kind: receivers may drop a notice they already
    /// have by it (sent as `id` and the `X-Headroom-Event-Id` header).
    pub fn id(&self) -> String {
        format!("{}/{}/{:?}", self.namespace, self.run, self.kind)
    }
}

/// The link to a run's dashboard page.
pub fn run_url(dashboard_url: &str, namespace: &str, run: &str) -> String {
    format!(
        "{}/runs/{namespace}/{run}",
        dashboard_url.trim_end_matches('/')
    )
}

/// The body of a notification for webhooks of `format`.
pub fn payload(format: Format, notice: &Notice, dashboard_url: &str) -> Value {
    let url = run_url(dashboard_url, &notice.namespace, &notice.run);
    match format {
        Format::Generic => generic(notice, &url),
        Format::Slack => slack(notice, &url),
    }
}

/// The generic JSON event: every field always present (null when not
/// known), so receivers can rely on one shape.
pub fn generic(n: &Notice, run_url: &str) -> Value {
    json!({
        "event": n.kind,
        "id": n.id(),
        "namespace": n.namespace,
        "experiment": n.experiment,
        "run": n.run,
        "hypothesis": n.hypothesis,
        "phase": n.phase,
        "verdict": n.verdict,
        "reason": n.reason,
        "budgetSpent": n.budget_spent,
        "budgetRemainingAfter": n.budget_remaining_after,
        "runUrl": run_url,
        "time": n.time,
    })
}

/// A Slack incoming-webhook message: `text` (also what notifications and
/// Slack-compatible receivers without blocks show) and one mrkdwn section
/// with the same words.
pub fn slack(n: &Notice, run_url: &str) -> Value {
    let text = slack_text(n, run_url);
    json!({
        "text": text,
        "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": text } }],
    })
}

fn slack_text(n: &Notice, run_url: &str) -> String {
    let who = format!(
        "Chaos run *{}* of experiment {}/{}",
        slack_escape(&n.run),
        slack_escape(&n.namespace),
        slack_escape(&n.experiment)
    );
    let what = match n.kind {
        NoticeKind::Started => format!(
            "started: the fault is in place. Hypothesis: {}",
            slack_escape(&n.hypothesis)
        ),
        NoticeKind::Aborted => format!(
            "aborted: {}. Restoring now.",
            slack_escape(n.reason.as_deref().unwrap_or("no reason recorded"))
        ),
        NoticeKind::Finished => {
            let verdict = n
                .verdict
                .map_or_else(|| "no verdict".to_owned(), |v| format!("{v:?}"));
            let mut s = format!("finished ({:?}): hypothesis *{verdict}*", n.phase);
            if let Some(spent) = n.budget_spent {
                s.push_str(&format!("; {} of the error budget spent", percent(spent)));
            }
            if let Some(after) = n.budget_remaining_after {
                s.push_str(&format!(", {} left", percent(after)));
            }
            if let Some(reason) = &n.reason {
                s.push_str(&format!(". {}", slack_escape(reason)));
            }
            s
        }
    };
    format!("{who} {what} <{}|Run page>", slack_escape(run_url))
}

fn percent(ratio: f64) -> String {
    format!("{:.1}%", ratio * 100.0)
}

/// Slack reads `&`, `<` and `>` as markup (links, mentions): user-written
/// text (a hypothesis, a reason quoting a check) must not become one.
pub fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The body a webhook receives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// The generic JSON event.
    Generic,
    /// `{"text", "blocks"}` for Slack and Slack-compatible receivers.
    Slack,
}

/// One rule, written in the key so the administrator decides and no URL
/// is guessed at: a key ending in `.slack` gets Slack messages (Slack, or
/// anything that takes Slack's format, e.g. Mattermost), every other key
/// the generic event.
pub fn format_of(key: &str) -> Format {
    if key.ends_with(".slack") {
        Format::Slack
    } else {
        Format::Generic
    }
}

/// A webhook from the Secret.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The Secret's key (shown in logs; the URL never is: it is often the
    /// credential itself, as Slack's are).
    pub name: String,
    pub url: String,
    pub format: Format,
}

/// The webhooks of a Secret's data, by key, and a line per key that is not
/// a usable URL (naming the key, never the value).
pub fn targets(data: &BTreeMap<String, ByteString>) -> (Vec<Target>, Vec<String>) {
    let mut ok = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in data {
        // `echo url | kubectl create secret --from-file` leaves a newline.
        let Ok(text) = std::str::from_utf8(&value.0).map(str::trim) else {
            problems.push(format!("{key}: not UTF-8 text"));
            continue;
        };
        match reqwest::Url::parse(text) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                ok.push(Target {
                    name: key.clone(),
                    url: text.to_owned(),
                    format: format_of(key),
                })
            }
            Ok(_) => problems.push(format!("{key}: not an http(s) URL with a host")),
            Err(_) => problems.push(format!("{key}: not a URL")),
        }
    }
    (ok, problems)
}

/// How one POST went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The receiver answered with this status.
    Status(u16),
    /// No connection was made: the receiver surely has nothing.
    NotSent,
    /// Sent, but no answer within the timeout (or the connection broke):
    /// the receiver may have taken it.
    NoAnswer,
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Delivered,
    Retry,
    GiveUp,
}

/// Retry only when the receiver surely did not take the notice: no
/// connection, or an answer that says "not now" (408, 429, 5xx). A timeout
/// after sending is not retried: the receiver may have it, and a second
/// copy would break "at most once". Other answers (4xx, redirects) would
/// be the same next time.
pub fn after_attempt(attempt: Attempt) -> Next {
    match attempt {
        Attempt::Status(s) if (200..300).contains(&s) => Next::Delivered,
        Attempt::Status(408 | 429) | Attempt::Status(500..=599) | Attempt::NotSent => Next::Retry,
        Attempt::Status(_) | Attempt::NoAnswer => Next::GiveUp,
    }
}

/// The waits between attempts: 1s doubling to 30s.
fn backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times()
        .build()
}

/// How the sender runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// The operator's namespace, home of the Secret.
    pub namespace: String,
    pub secret: String,
    /// How often the Secret is read again (a changed URL takes effect
    /// without a restart).
    pub refresh: Duration,
    /// One POST, from connecting to the answer.
    pub timeout: Duration,
    /// How long one notice is retried at most, from its first attempt.
    pub retry_for: Duration,
    /// Base of the run links (`--dashboard-url`).
    pub dashboard_url: String,
}

/// Notices not yet delivered, waiting for the dispatcher.
const QUEUE: usize = 256;
/// Notices waiting for one webhook (a slow one fills only its own).
const PER_WEBHOOK: usize = 64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    /// `delivered`, `failed` (given up) or `dropped` (a queue was full).
    pub result: String,
}

/// The counters the sender keeps (registered in [`crate::metrics`]).
#[derive(Clone, Debug, Default)]
pub struct NotifyMetrics {
    pub results: Family<NotifyLabels, Counter>,
    pub retries: Counter,
}

impl NotifyMetrics {
    fn count(&self, result: &str) {
        self.results
            .get_or_create(&NotifyLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The driver's handle: [`Notifier::send`] queues a notice and returns at
/// once. Disabled (no `--notify-secret`), it does nothing.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Notice>,
    metrics: NotifyMetrics,
    /// Notices (times webhooks) not yet delivered or given up, for
    /// [`Notifier::flush`].
    pending: Arc<AtomicUsize>,
}

impl Notifier {
    /// Sends nothing.
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Start the background sender (needs a Tokio runtime).
    pub fn start(client: kube::Client, options: Options, metrics: NotifyMetrics) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(dispatch(
            client,
            options,
            rx,
            metrics.clone(),
            pending.clone(),
        ));
        Self {
            inner: Some(Arc::new(Inner {
                tx,
                metrics,
                pending,
            })),
        }
    }

    /// Queue `notice`; never waits. A full queue drops it (counted): a run
    /// must not slow down because a receiver is slow.
    pub fn send(&self, notice: Notice) {
        let Some(inner) = &self.inner else { return };
        inner.pending.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = inner.tx.try_send(notice) {
            inner.pending.fetch_sub(1, Ordering::SeqCst);
            inner.metrics.count("dropped");
            warn!(error = %e, "notification queue full; notice dropped");
        }
    }

    /// Wait up to `within` for queued notices to be delivered or given up
    /// (on the way out, after the runs are restored).
    pub async fn flush(&self, within: Duration) {
        let Some(inner) = &self.inner else { return };
        let deadline = Instant::now() + within;
        while inner.pending.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The Secret's webhooks, re-read every `refresh`; each notice goes to
/// the worker of each webhook.
async fn dispatch(
    client: kube::Client,
    opts: Options,
    mut rx: mpsc::Receiver<Notice>,
    metrics: NotifyMetrics,
    pending: Arc<AtomicUsize>,
) {
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, &opts.namespace);
    let http = match http_client(opts.timeout) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot build the notification HTTP client; notifications are off");
            return;
        }
    };
    let opts = Arc::new(opts);
    let mut known: Option<Loaded> = None;
    let mut workers: HashMap<Target, mpsc::Sender<Notice>> = HashMap::new();
    // A zero period would panic; a second is as fresh as anyone needs.
    let mut tick = tokio::time::interval(opts.refresh.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => reload(&secrets, &opts, &mut known).await,
            notice = rx.recv() => {
                let Some(notice) = notice else { return };
                if known.is_none() {
                    reload(&secrets, &opts, &mut known).await;
                }
                let targets = known.as_ref().map(|k| k.targets.clone()).unwrap_or_default();
                // Workers of webhooks no longer listed finish their queue and stop.
                workers.retain(|t, _| targets.contains(t));
                for t in targets {
                    let tx = workers.entry(t.clone()).or_insert_with(|| {
                        let (tx, rx) = mpsc::channel(PER_WEBHOOK);
                        tokio::spawn(deliver_all(
                            http.clone(),
                            opts.clone(),
                            t.clone(),
                            rx,
                            metrics.clone(),
                            pending.clone(),
                        ));
                        tx
                    });
                    pending.fetch_add(1, Ordering::SeqCst);
                    if tx.try_send(notice.clone()).is_err() {
                        pending.fetch_sub(1, Ordering::SeqCst);
                        metrics.count("dropped");
                        warn!(webhook = %t.name, notice = %notice.id(), "the webhook's queue is full; notice dropped");
                    }
                }
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn http_client(timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        // A redirect could lead anywhere the administrator did not list.
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The last good read of the Secret.
struct Loaded {
    targets: Vec<Target>,
    problems: Vec<String>,
}

/// Read the Secret; on failure keep what was read before (a short API
/// outage must not silence notifications). Logs only changes.
async fn reload(secrets: &kube::Api<Secret>, opts: &Options, known: &mut Option<Loaded>) {
    let read = tokio::time::timeout(Duration::from_secs(10), secrets.get_opt(&opts.secret)).await;
    let secret = match read {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!(secret = %opts.secret, namespace = %opts.namespace, error = %e, "cannot read the notification Secret; keeping the webhooks read before");
            return;
        }
        Err(_) => {
            warn!(secret = %opts.secret, namespace = %opts.namespace, "reading the notification Secret timed out; keeping the webhooks read before");
            return;
        }
    };
    let (targets, problems) = match &secret {
        Some(s) => targets(s.data.as_ref().unwrap_or(&BTreeMap::new())),
        None => (Vec::new(), Vec::new()),
    };
    let changed = known
        .as_ref()
        .is_none_or(|k| k.targets != targets || k.problems != problems);
    if changed {
        if secret.is_none() {
            warn!(secret = %opts.secret, namespace = %opts.namespace, "the notification Secret does not exist; no notifications until it does");
        }
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        info!(secret = %opts.secret, webhooks = ?names, "notification webhooks");
        for p in &problems {
            warn!(secret = %opts.secret, problem = %p, "a notification webhook is skipped");
        }
    }
    *known = Some(Loaded { targets, problems });
}

/// One webhook's notices, one at a time, in order.
async fn deliver_all(
    http: reqwest::Client,
    opts: Arc<Options>,
    target: Target,
    mut rx: mpsc::Receiver<Notice>,
    metrics: NotifyMetrics,
    pending: Arc<AtomicUsize>,
) {
    while let Some(notice) = rx.recv().await {
        let result = deliver(&http, &opts, &target, &notice, &metrics).await;
        metrics.count(result);
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

/// POST one notice until it is taken, refused, or `retry_for` is over.
async fn deliver(
    http: &reqwest::Client,
    opts: &Options,
    target: &Target,
    notice: &Notice,
    metrics: &NotifyMetrics,
) -> &'static str {
    let body = payload(target.format, notice, &opts.dashboard_url);
    let id = notice.id();
    let deadline = Instant::now() + opts.retry_for;
    let mut waits = backoff();
    loop {
        let attempt = match http
            .post(&target.url)
            .header("X-Headroom-Event-Id", &id)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => Attempt::Status(r.status().as_u16()),
            Err(e) if e.is_connect() => {
                debug!(webhook = %target.name, error = %e.without_url(), "notification not sent");
                Attempt::NotSent
            }
            Err(e) => {
                debug!(webhook = %target.name, error = %e.without_url(), "notification sent, no answer");
                Attempt::NoAnswer
            }
        };
        match after_attempt(attempt) {
            Next::Delivered => {
                info!(webhook = %target.name, notice = %id, "notification delivered");
                return "delivered";
            }
            Next::GiveUp => {
                warn!(webhook = %target.name, notice = %id, ?attempt, "notification not delivered; not retried (the receiver refused it, or may have it already)");
                return "failed";
            }
            Next::Retry => match waits.next() {
                Some(wait) if Instant::now() + wait < deadline => {
                    warn!(webhook = %target.name, notice = %id, ?attempt, retry_in = ?wait, "notification not delivered; retrying");
                    metrics.retries.inc();
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    warn!(webhook = %target.name, notice = %id, ?attempt, retried_for = ?opts.retry_for, "notification not delivered; giving up");
                    return "failed";
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::run::BudgetRecord;

    fn status(phase: RunPhase) -> ExperimentRunStatus {
        ExperimentRunStatus {
            phase,
            verdict: Some(Verdict::Refuted),
            reason: Some("BurnRateAboveAbort: checkout burned 4.1x".into()),
            budget: Some(BudgetRecord {
                remaining_before: Some(0.9),
                remaining_after: Some(0.85),
                spent: Some(0.05),
                spent_of_cap: None,
            }),
            ..Default::default()
        }
    }

    fn notice(kind: NoticeKind, phase: RunPhase) -> Notice {
        let mut n = Notice::new(
            kind,
            RunRef {
                namespace: "shop",
                experiment: "kill-web",
                run: "kill-web-1",
                hypothesis: "a <b> & c",
            },
            &status(phase),
        );
        n.time = "2026-01-01T00:00:00Z".into();
        n
    }

    #[test]
    fn each_kind_carries_only_the_figures_known_at_that_point() {
        // (kind, verdict, reason, spent, remaining after)
        let cases = [
            (NoticeKind::Started, None, None, None, None),
            (
                NoticeKind::Aborted,
                None,
                Some("BurnRateAboveAbort: checkout burned 4.1x"),
                None,
                None,
            ),
            (
                NoticeKind::Finished,
                Some(Verdict::Refuted),
                Some("BurnRateAboveAbort: checkout burned 4.1x"),
                Some(0.05),
                Some(0.85),
            ),
        ];
        for (kind, verdict, reason, spent, after) in cases {
            let n = notice(kind, RunPhase::Aborted);
            assert_eq!(n.verdict, verdict, "{kind:?}");
            assert_eq!(n.reason.as_deref(), reason, "{kind:?}");
            assert_eq!(n.budget_spent, spent, "{kind:?}");
            assert_eq!(n.budget_remaining_after, after, "{kind:?}");
        }
    }

    #[test]
    fn the_generic_event_has_every_field_and_the_run_link() {
        let v = payload(
            Format::Generic,
            &notice(NoticeKind::Finished, RunPhase::Aborted),
            "https://headroom.example/",
        );
        assert_eq!(
            v,
            json!({
                "event": "Finished",
                "id": "shop/kill-web-1/Finished",
                "namespace": "shop",
                "experiment": "kill-web",
                "run": "kill-web-1",
                "hypothesis": "a <b> & c",
                "phase": "Aborted",
                "verdict": "Refuted",
                "reason": "BurnRateAboveAbort: checkout burned 4.1x",
                "budgetSpent": 0.05,
                "budgetRemainingAfter": 0.85,
                "runUrl": "https://headroom.example/runs/shop/kill-web-1",
                "time": "2026-01-01T00:00:00Z",
            })
        );
        let started = payload(
            Format::Generic,
            &notice(NoticeKind::Started, RunPhase::Observing),
            "http://h",
        );
        // Unknown figures are null, not missing.
        for field in ["verdict", "reason", "budgetSpent", "budgetRemainingAfter"] {
            assert_eq!(started[field], Value::Null, "{field}");
        }
    }

    #[test]
    fn slack_messages_say_what_happened_escape_user_text_and_link_the_run() {
        let cases = [
            (
                NoticeKind::Started,
                RunPhase::Observing,
                "Chaos run *kill-web-1* of experiment shop/kill-web started: the fault is in place. Hypothesis: a &lt;b&gt; &amp; c <http://h/runs/shop/kill-web-1|Run page>",
            ),
            (
                NoticeKind::Aborted,
                RunPhase::Observing,
                "Chaos run *kill-web-1* of experiment shop/kill-web aborted: BurnRateAboveAbort: checkout burned 4.1x. Restoring now. <http://h/runs/shop/kill-web-1|Run page>",
            ),
            (
                NoticeKind::Finished,
                RunPhase::Aborted,
                "Chaos run *kill-web-1* of experiment shop/kill-web finished (Aborted): hypothesis *Refuted*; 5.0% of the error budget spent, 85.0% left. BurnRateAboveAbort: checkout burned 4.1x <http://h/runs/shop/kill-web-1|Run page>",
            ),
        ];
        for (kind, phase, text) in cases {
            let v = payload(Format::Slack, &notice(kind, phase), "http://h");
            assert_eq!(v["text"], text, "{kind:?}");
            assert_eq!(v["blocks"][0]["text"]["text"], text, "{kind:?}");
            assert_eq!(v["blocks"][0]["text"]["type"], "mrkdwn");
        }
    }

    #[test]
    fn the_format_follows_the_key() {
        let cases = [
            ("team-a.slack", Format::Slack),
            ("ops", Format::Generic),
            ("slack", Format::Generic),
            ("slack-ops", Format::Generic),
            ("a.slack.json", Format::Generic),
        ];
        for (key, want) in cases {
            assert_eq!(format_of(key), want, "{key}");
        }
    }

    #[test]
    fn the_secret_lists_webhooks_and_names_the_keys_it_skips() {
        let data: BTreeMap<String, ByteString> = [
            ("ops", "https://hooks.example/x\n"),
            ("team.slack", "https://chat.example/services/T/B/C"),
            ("ftp", "ftp://files.example/"),
            ("words", "not a url"),
            ("file", "file:///etc/passwd"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .chain([("binary".to_owned(), ByteString(vec![0xff, 0xfe]))])
        .collect();
        let (ok, problems) = targets(&data);
        assert_eq!(
            ok,
            [
                Target {
                    name: "ops".into(),
                    url: "https://hooks.example/x".into(),
                    format: Format::Generic
                },
                Target {
                    name: "team.slack".into(),
                    url: "https://chat.example/services/T/B/C".into(),
                    format: Format::Slack
                },
            ]
        );
        assert_eq!(
            problems,
            [
                "binary: not UTF-8 text",
                "file: not an http(s) URL with a host",
                "ftp: not an http(s) URL with a host",
                "words: not a URL",
            ]
        );
        // Values never appear in what is logged.
        assert!(problems.iter().all(|p| !p.contains("example")));
    }

    #[test]
    fn only_what_the_receiver_surely_did_not_take_is_retried() {
        let cases = [
            (Attempt::Status(200), Next::Delivered),
            (Attempt::Status(204), Next::Delivered),
            (Attempt::Status(500), Next::Retry),
            (Attempt::Status(503), Next::Retry),
            (Attempt::Status(429), Next::Retry),
            (Attempt::Status(408), Next::Retry),
            (Attempt::NotSent, Next::Retry),
            (Attempt::NoAnswer, Next::GiveUp),
            (Attempt::Status(400), Next::GiveUp),
            (Attempt::Status(404), Next::GiveUp),
            (Attempt::Status(301), Next::GiveUp),
            (Attempt::Status(100), Next::GiveUp),
        ];
        for (attempt, want) in cases {
            assert_eq!(after_attempt(attempt), want, "{attempt:?}");
        }
    }

    #[test]
    fn backoff_starts_at_a_second_and_doubles_to_thirty() {
        let waits: Vec<u64> = backoff().take(7).map(|d| d.as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    }

    /// A receiver answering by path and counting requests: `/flaky` 503
    /// twice then 200, `/hang` never in time, `/refuse` 400.
    async fn receiver() -> (u16, Arc<std::sync::Mutex<Vec<(String, Value)>>>) {
        use axum::extract::{Path, State};
        use axum::http::StatusCode;
        type Log = Arc<std::sync::Mutex<Vec<(String, Value)>>>;
        async fn answer(
            State(log): State<Log>,
            Path(path): Path<String>,
            axum::Json(body): axum::Json<Value>,
        ) -> StatusCode {
            let before = {
                let mut l = log.lock().expect("log");
                let n = l.iter().filter(|(p, _)| *p == path).count();
                l.push((path.clone(), body));
                n
            };
            match path.as_str() {
                "flaky" if before < 2 => StatusCode::SERVICE_UNAVAILABLE,
                "hang" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK
                }
                "refuse" => StatusCode::BAD_REQUEST,
                _ => StatusCode::OK,
            }
        }
        let log: Log = Arc::default();
        let app = axum::Router::new()
            .route("/{path}", axum::routing::post(answer))
            .with_state(log.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, log)
    }

    #[tokio::test]
    async fn delivery_retries_only_what_the_receiver_did_not_take() {
        let (port, log) = receiver().await;
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let opts = Options {
            namespace: "headroom-system".into(),
            secret: "s".into(),
            refresh: Duration::from_secs(30),
            timeout: Duration::from_millis(500),
            retry_for: Duration::from_secs(2),
            dashboard_url: "http://h".into(),
        };
        let http = http_client(opts.timeout).expect("client");
        // (webhook path or URL, result, attempts the receiver saw, retries)
        let cases = [
            ("ok", "delivered", 1, 0),
            ("flaky", "delivered", 3, 2),
            ("hang", "failed", 1, 0),
            ("refuse", "failed", 1, 0),
            // Connection refused: retried after 1s; the next wait (2s)
            // would end past retry_for.
            ("dead", "failed", 0, 1),
        ];
        let mut opts = opts;
        for (path, want, attempts, retries) in cases {
            let url = if path == "dead" {
                format!("http://127.0.0.1:{dead}/dead")
            } else {
                format!("http://127.0.0.1:{port}/{path}")
            };
            // Enough time for the flaky receiver's two waits (1s + 2s).
            opts.retry_for = if path == "flaky" {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(2)
            };
            let metrics = NotifyMetrics::default();
            let target = Target {
                name: path.into(),
                url,
                format: Format::Generic,
            };
            let n = notice(NoticeKind::Started, RunPhase::Observing);
            let got = deliver(&http, &opts, &target, &n, &metrics).await;
            assert_eq!(got, want, "{path}");
            let seen: Vec<Value> = log
                .lock()
                .expect("log")
                .iter()
                .filter(|(p, _)| p == path)
                .map(|(_, b)| b.clone())
                .collect();
            assert_eq!(seen.len(), attempts, "{path}: {seen:?}");
            assert!(seen.iter().all(|b| b["id"] == "shop/kill-web-1/Started"));
            assert_eq!(metrics.retries.get(), retries, "{path}");
        }
    }

    #[tokio::test]
    async fn a_disabled_notifier_takes_notices_and_does_nothing() {
        let n = Notifier::disabled();
        n.send(notice(NoticeKind::Started, RunPhase::Observing));
        n.flush(Duration::from_secs(1)).await;
    }
}
