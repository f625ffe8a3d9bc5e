//! `ServiceLevelObjective`: what "good" means for a service, and how much
//! failure the team accepts over a rolling window.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An objective for one service: `objective` percent of events are good over
/// the rolling `window`, measured by `indicator`.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "headroom.dev",
    version = "v1alpha1",
    kind = "ServiceLevelObjective",
    doc = "A Service Level Objective: the share of good events a service promises over a rolling window, read from Prometheus; its error budget and burn rates gate the experiments that name it.",
    plural = "servicelevelobjectives",
    shortname = "slo",
    namespaced,
    status = "ServiceLevelObjectiveStatus",
    category = "headroom",
    printcolumn = r#"{"name":"Objective","type":"number","jsonPath":".spec.objective"}"#,
    printcolumn = r#"{"name":"Window","type":"string","jsonPath":".spec.window"}"#,
    printcolumn = r#"{"name":"Budget","type":"number","description":"Error budget remaining (1 = untouched, negative = overspent)","jsonPath":".status.budgetRemaining"}"#,
    printcolumn = r#"{"name":"Burn (page)","type":"number","description":"Burn rate over the fastest page tier's long window (1h for 30d)","jsonPath":".status.pageBurnRate"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLevelObjectiveSpec {
    /// The service this objective is about, e.g. `checkout`. Used in alert
    /// labels and on the dashboard.
    #[schemars(length(min = 1, max = 253))]
    pub service: String,

    /// What the objective promises, in words, e.g. "checkout answers without
    /// a server error".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Target percentage of good events, strictly between 0 and 100, e.g. 99.9.
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 100, "exclusiveMaximum" = true))]
    pub objective: f64,

    /// Rolling period the objective and its error budget cover, e.g. `30d`,
    /// `28d` or `7d`. Defaults to 30d.
    #[serde(default = "default_window")]
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub window: String,

    /// How good and bad events are measured. Set exactly one of ratio,
    /// latency, sloth or pyrra.
    pub indicator: Indicator,

    /// Burn-rate alerts for this objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerting: Option<Box<Alerting>>,

    /// Below this many requests per second (over the shortest alert window)
    /// the budget is reported as unknown, never as fine, and no experiment
    /// may start. Defaults to 0 (any traffic counts, no traffic is unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub min_traffic_per_second: Option<f64>,
}

fn default_window() -> String {
    "30d".to_owned()
}

/// The service level indicator. Exactly one field is set. Each is boxed,
/// like `alerting`: the watch cache holds every SLO, and inline the four
/// would make each one 160 bytes larger for the three that are unset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.ratio) ? 1 : 0) + (has(self.latency) ? 1 : 0) + (has(self.sloth) ? 1 : 0) + (has(self.pyrra) ? 1 : 0) == 1").message("spec.indicator must set exactly one of ratio, latency, sloth or pyrra"))]
pub struct Indicator {
    /// Bad events over all events, as two PromQL queries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<Box<RatioIndicator>>,
    /// Good events are requests faster than a threshold, read from a
    /// Prometheus histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Box<LatencyIndicator>>,
    /// Read the recording rules Sloth already generates for an SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sloth: Option<Box<SlothIndicator>>,
    /// Read the recording rules Pyrra already generates for an SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pyrra: Option<Box<PyrraIndicator>>,
}

/// Error ratio = errors / total. Each query is PromQL with `$window` where
/// the range goes, e.g.
/// `sum(rate(http_requests_total{job="checkout",code=~"5.."}[$window]))`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RatioIndicator {
    /// PromQL for the rate of bad events, with `$window` as the range.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.contains('$window')").message("spec.indicator.ratio.errors must contain $window where the range goes, e.g. rate(http_requests_total{code=~\"5..\"}[$window])"))]
    pub errors: String,
    /// PromQL for the rate of all events, with `$window` as the range.
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.contains('$window')").message("spec.indicator.ratio.total must contain $window where the range goes, e.g. rate(http_requests_total[$window])"))]
    pub total: String,
}

/// Latency SLI from a Prometheus histogram: good events are observations in
/// buckets with `le` at or below the threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencyIndicator {
    /// Base name of the histogram, without `_bucket`/`_count`, e.g.
    /// `http_request_duration_seconds`.
    #[schemars(regex(pattern = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"), length(max = 253))]
    pub histogram: String,
    /// Label matchers that select the service's series, without braces, e.g.
    /// `job="checkout",handler="checkout"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub selector: Option<String>,
    /// Requests at or below this latency are good, e.g. `100ms` or `250ms`.
    /// Must equal one of the histogram's bucket boundaries.
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub threshold: String,
}

/// Reads Sloth's `slo:sli_error:ratio_rate<window>{sloth_id="<id>"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SlothIndicator {
    /// The `sloth_id` label of the SLO in Sloth's rules, e.g. `checkout-requests-availability`.
    #[schemars(length(min = 1, max = 253))]
    pub id: String,
}

/// Reads Pyrra's `<metric>:burnrate<window>{slo="<name>"}`, which holds an
/// error ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PyrraIndicator {
    /// The `slo` label of Pyrra's recording rules (the Pyrra SLO's name).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Base metric of Pyrra's rules, e.g. `http_requests` for
    /// `http_requests:burnrate5m`. When unset, any `*:burnrate<window>`
    /// series with the `slo` label is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub metric: Option<String>,
}

/// Multiwindow, multi-burn-rate alerting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alerting {
    /// Runbook linked from every alert of this objective. Defaults to the
    /// dashboard's runbook page for it, which shows the latest findings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub runbook_url: Option<String>,
    /// Extra labels on every alert, e.g. `team: payments`. They win over
    /// Headroom's own `service`, `tier` and `severity` labels (a tier's
    /// `labels` win over these); `namespace` and `slo` always stay
    /// Headroom's, since they name the SLO the alert belongs to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on every alert. They win over Headroom's
    /// `summary`, `description` and `runbook_url` (a tier's `annotations`
    /// win over these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Name of the burn-rate alerts, e.g. `CheckoutHighErrorRate`. Defaults
    /// to `HeadroomErrorBudgetBurn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$"), length(max = 253))]
    pub alert_name: Option<String>,
    /// Burn-rate tiers. Defaults to the SRE Workbook table scaled to the
    /// window: page 2% in 1h/5m, page 5% in 6h/30m, ticket 10% in 1d/2h,
    /// ticket 10% in 3d/6h (for 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub tiers: Option<Vec<BurnRateTierSpec>>,
    /// Alerts that fire while a series the indicator reads is missing, as
    /// Pyrra's `SLOMetricAbsent` alerts do.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub absent: Vec<AbsentAlertSpec>,
    /// Labels and annotations of the `PrometheusRule` object that holds
    /// this SLO's rules, e.g. `labels: { release: kube-prometheus-stack }`
    /// for a Prometheus whose `ruleSelector` selects by label. They win over
    /// the operator's `--prometheus-rule-label` / `--prometheus-rule-annotation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_rule: Option<RuleObjectMetadata>,
}

/// Metadata for a generated `PrometheusRule` object. Headroom's own
/// `app.kubernetes.io/managed-by` and `headroom.dev/*` keys cannot be set.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleObjectMetadata {
    /// Labels, e.g. `release: kube-prometheus-stack`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub annotations: BTreeMap<String, String>,
}

/// Fire while `selector` matches no series: `absent(<selector>) == 1`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbsentAlertSpec {
    /// The alert's name, e.g. `SLOMetricAbsent`.
    #[schemars(regex(pattern = r"^[a-zA-Z_][a-zA-Z0-9_]*$"), length(max = 253))]
    pub alert_name: String,
    /// A series selector, e.g. `http_requests_total{job="checkout"}`.
    #[schemars(length(min = 1, max = 4096))]
    pub selector: String,
    /// How long the series must be missing before the alert fires, e.g. `10m`.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "headroom_experiments::schema::optional_duration")]
    pub for_duration: Option<String>,
    /// Labels of this alert; they win over `alerting.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// One burn-rate alert: fire when both windows burn faster than the rate
/// that spends `budgetPercent` of the budget within `longWindow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BurnRateTierSpec {
    /// Name of the tier, used in the alert name, e.g. `page-fast`.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"), length(max = 63))]
    pub name: String,
    /// `page` or `ticket`: the alert's severity label.
    pub severity: Severity,
    /// Share of the whole budget, in percent, that this tier guards, e.g. 2.
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true, "maximum" = 100))]
    pub budget_percent: f64,
    /// Long window, e.g. `1h`.
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub long_window: String,
    /// Short window, e.g. `5m`; guards against alerting after the burn stopped.
    #[schemars(schema_with = "headroom_experiments::schema::duration")]
    pub short_window: String,
    /// Keep the tier for evaluation but emit no alert for it.
    #[serde(default)]
    pub disabled: bool,
    /// The burn-rate threshold itself, e.g. 14: when set, the alert fires
    /// above it instead of above the rate derived from `budgetPercent`
    /// (which then only describes the tier). Tools such as Pyrra state
    /// their tiers this way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("minimum" = 0, "exclusiveMinimum" = true))]
    pub burn_rate: Option<f64>,
    /// How long both windows must burn before the alert fires (the alert
    /// rule's `for:`), e.g. `2m`. Default: at once.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "headroom_experiments::schema::optional_duration")]
    pub for_duration: Option<String>,
    /// Extra labels on this tier's alert; they win over `alerting.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on this tier's alert; they win over
    /// `alerting.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Alert severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Page,
    Ticket,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLevelObjectiveStatus {
    /// Share of the error budget left over the window: 1 untouched, 0 spent,
    /// negative overspent. Absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_remaining: Option<f64>,
    /// Error ratio over the whole window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Burn rate per evaluated window.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub burn_rates: Vec<WindowBurnRate>,
    /// Burn rate over the long window of the fastest page tier (1h for a 30d
    /// SLO with the default tiers), whatever the period: the `Burn (page)`
    /// column of `kubectl get slo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_burn_rate: Option<f64>,
    /// Requests per second over the shortest window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_per_second: Option<f64>,
    /// Whether Prometheus returned data for every window.
    #[serde(default)]
    pub data_present: bool,
    /// Where the figures came from: `RecordingRules` or `DirectQuery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When the figures were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated: Option<Time>,
    /// The spec generation these figures were computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `BudgetAvailable` and `Burning`, each with a reason and message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Error ratio and burn rate over one window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowBurnRate {
    /// The window, e.g. `5m`.
    pub window: String,
    /// Bad events / all events over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Error ratio divided by the error budget (1 − objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<f64>,
}
