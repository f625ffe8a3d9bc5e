//! Reading Prometheus, failing closed.
//!
//! Every answer that is not a clean number — an error, a timeout, an empty
//! result, NaN or infinity — comes back as "no figure", never as zero: a
//! zero error ratio would open the budget gate.

use std::collections::HashMap;
use std::time::Duration;

use prometheus_http_query::response::Data;
use thiserror::Error;

/// Why Prometheus gave no answer.
#[derive(Clone, Debug, Error)]
pub enum PrometheusError {
    #[error("Prometheus at {url} is unavailable: {message}")]
    Unavailable { url: String, message: String },
    #[error("Prometheus refused the query {query:?}: {message}")]
    BadQuery { query: String, message: String },
}

/// One series of an instant query: its labels and its value, where the
/// value is finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: HashMap<String, String>,
    pub value: Option<f64>,
}

/// A Prometheus client with a hard timeout and a query counter (the
/// benchmark reports queries per evaluation cycle).
pub struct Prometheus {
    client: prometheus_http_query::Client,
    /// The same HTTP client, for reads parsed without the library's
    /// per-series label maps (see [`Prometheus::instant_per_slo`]).
    http: reqwest::Client,
    url: String,
    queries: prometheus_client::metrics::counter::Counter,
}

impl Prometheus {
    /// `timeout` bounds every request: a slow Prometheus is an unavailable one.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, PrometheusError> {
        let unavailable = |message: String| PrometheusError::Unavailable {
            url: url.to_owned(),
            message,
        };
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| unavailable(e.to_string()))?;
        let client = prometheus_http_query::Client::from(http.clone(), url)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            client,
            http,
            url: url.to_owned(),
            queries: Default::default(),
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Count queries in `counter` (the operator's exported metric).
    pub fn with_query_counter(
        mut self,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        self.queries = counter;
        self
    }

    /// Queries sent since start.
    pub fn queries_sent(&self) -> u64 {
        self.queries.get()
    }

    /// Run an instant query; every series is returned, with non-finite
    /// values as `None`.
    pub async fn instant(&self, query: &str) -> Result<Vec<Series>, PrometheusError> {
        self.queries.inc();
        let result = self
            .client
            .query(query)
            .post()
            .await
            .map_err(|e| self.classify(query, e))?;
        let (data, _) = result.into_inner();
        Ok(match data {
            Data::Vector(v) => v
                .into_iter()
                .map(|s| {
                    let (labels, sample) = s.into_inner();
                    Series {
                        labels,
                        value: finite(sample.value()),
                    }
                })
                .collect(),
            Data::Scalar(sample) => vec![Series {
                labels: HashMap::new(),
                value: finite(sample.value()),
            }],
            Data::Matrix(_) => Vec::new(),
        })
    }

    /// A range query's first series as (unix seconds, value) points;
    /// non-finite values are left out.
    pub async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step: f64,
    ) -> Result<Vec<(f64, f64)>, PrometheusError> {
        self.queries.inc();
        let result = self
            .client
            .query_range(query, start, end, step)
            .get()
            .await
            .map_err(|e| self.classify(query, e))?;
        let (data, _) = result.into_inner();
        Ok(match data {
            Data::Matrix(m) => m
                .into_iter()
                .next()
                .map(|s| {
                    let (_, samples) = s.into_inner();
                    samples
                        .into_iter()
                        .filter(|x| x.value().is_finite())
                        .map(|x| (x.timestamp(), x.value()))
                        .collect()
                })
                .unwrap_or_default(),
            _ => Vec::new(),
        })
    }

    /// The value of a query expected to return one series; `None` when it
    /// returned none, several, or a non-finite value.
    pub async fn scalar(&self, query: &str) -> Result<Option<f64>, PrometheusError> {
        let series = self.instant(query).await?;
        Ok(match series.as_slice() {
            [one] => one.value,
            _ => None,
        })
    }

    /// Run an instant query whose series carry `namespace` and `slo`
    /// labels (the recorded series) and hand each one's value to `each`.
    /// Parsed in place from the response: at ten thousand series, a label
    /// map per series (what [`Prometheus::instant`] returns) cost megabytes
    /// per window read, ten windows at once.
    pub async fn instant_per_slo(
        &self,
        query: &str,
        mut each: impl FnMut(&str, &str, Option<f64>),
    ) -> Result<(), PrometheusError> {
        self.queries.inc();
        let unavailable = |message: String| PrometheusError::Unavailable {
            url: self.url.clone(),
            message,
        };
        let response = self
            .http
            .post(format!("{}/api/v1/query", self.url.trim_end_matches('/')))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!(
                "query={}",
                percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
            ))
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let http_status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let answer: wire::Answer<'_> = serde_json::from_slice(&body)
            .map_err(|e| unavailable(format!("HTTP {http_status}, unreadable answer: {e}")))?;
        if answer.status != "success" {
            let message = answer.error.unwrap_or_default().into_owned();
            return Err(match answer.error_type.as_deref() {
                Some("bad_data" | "execution") => PrometheusError::BadQuery {
                    query: query.to_owned(),
                    message,
                },
                _ => unavailable(format!("HTTP {http_status}: {message}")),
            });
        }
        let data = answer
            .data
            .ok_or_else(|| unavailable("a successful answer without data".into()))?;
        for sample in data.result {
            if let (Some(ns), Some(slo)) = (sample.metric.namespace, sample.metric.slo) {
                let value = sample.value.1.parse::<f64>().ok().and_then(finite);
                each(&ns, &slo, value);
            }
        }
        Ok(())
    }

    fn classify(&self, query: &str, err: prometheus_http_query::Error) -> PrometheusError {
        match err {
            prometheus_http_query::Error::Prometheus(e) if is_query_error(&e) => {
                PrometheusError::BadQuery {
                    query: query.to_owned(),
                    message: e.to_string(),
                }
            }
            other => PrometheusError::Unavailable {
                url: self.url.clone(),
                message: other.to_string(),
            },
        }
    }
}

/// Prometheus's query API answer, borrowing from the response body; only
/// what `instant_per_slo` reads.
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Answer<'a> {
        #[serde(borrow)]
        pub status: Cow<'a, str>,
        #[serde(borrow, default)]
        pub data: Option<Data<'a>>,
        #[serde(borrow, default, rename = "errorType")]
        pub error_type: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub error: Option<Cow<'a, str>>,
    }

    #[derive(Deserialize)]
    pub struct Data<'a> {
        #[serde(borrow)]
        pub result: Vec<Sample<'a>>,
    }

    #[derive(Deserialize)]
    pub struct Sample<'a> {
        #[serde(borrow)]
        pub metric: Labels<'a>,
        #[serde(borrow)]
        pub value: (f64, Cow<'a, str>),
    }

    #[derive(Deserialize)]
    pub struct Labels<'a> {
        #[serde(borrow, default)]
        pub namespace: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        pub slo: Option<Cow<'a, str>>,
    }
}

fn is_query_error(e: &prometheus_http_query::error::PrometheusError) -> bool {
    use prometheus_http_query::error::PrometheusErrorType as T;
    matches!(e.error_type(), T::BadData | T::Execution)
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreachable_prometheus_is_unavailable_not_zero() {
        // Port 9 (discard) on loopback is closed here: connection refused.
        let prom =
            Prometheus::new("http://127.0.0.1:9", Duration::from_millis(500)).expect("client");
        let err = prom.scalar("up").await.expect_err("must fail closed");
        assert!(
            matches!(err, PrometheusError::Unavailable { .. }),
            "{err:?}"
        );
        assert_eq!(prom.queries_sent(), 1);
    }

    /// A stand-in for the query API that answers every query with `body`.
    async fn answering(status: u16, body: serde_json::Value) -> String {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(move || async move {
                (
                    axum::http::StatusCode::from_u16(status).expect("status"),
                    axum::Json(body),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn per_slo_reads_keep_only_labelled_series_and_no_figure_for_nan() {
        let url = answering(
            200,
            serde_json::json!({ "status": "success", "data": { "resultType": "vector", "result": [
                { "metric": { "__name__": "m", "namespace": "shop", "slo": "a" }, "value": [1.0, "0.25"] },
                { "metric": { "namespace": "shop", "slo": "b" }, "value": [1.0, "+Inf"] },
                { "metric": { "namespace": "shop" }, "value": [1.0, "1"] }
            ]}}),
        )
        .await;
        let prom = Prometheus::new(&url, Duration::from_secs(2)).expect("client");
        let mut seen = Vec::new();
        prom.instant_per_slo("m", |ns, slo, v| {
            seen.push((ns.to_owned(), slo.to_owned(), v))
        })
        .await
        .expect("answer");
        assert_eq!(
            seen,
            vec![
                ("shop".to_owned(), "a".to_owned(), Some(0.25)),
                ("shop".to_owned(), "b".to_owned(), None),
            ]
        );
    }

    #[tokio::test]
    async fn per_slo_reads_tell_a_refused_query_from_an_unavailable_prometheus() {
        let refused = answering(
            400,
            serde_json::json!({ "status": "error", "errorType": "bad_data", "error": "parse error" }),
        )
        .await;
        let prom = Prometheus::new(&refused, Duration::from_secs(2)).expect("client");
        let err = prom
            .instant_per_slo("m{", |_, _, _| {})
            .await
            .expect_err("refused");
        assert!(matches!(err, PrometheusError::BadQuery { .. }), "{err:?}");

        let overloaded = answering(
            503,
            serde_json::json!({ "status": "error", "errorType": "unavailable", "error": "too many queries" }),
        )
        .await;
        let prom = Prometheus::new(&overloaded, Duration::from_secs(2)).expect("client");
        let err = prom
            .instant_per_slo("m", |_, _, _| {})
            .await
            .expect_err("unavailable");
        assert!(
            matches!(err, PrometheusError::Unavailable { .. }),
            "{err:?}"
        );

        let prom =
            Prometheus::new("http://127.0.0.1:9", Duration::from_millis(500)).expect("client");
        let err = prom
            .instant_per_slo("m", |_, _, _| {})
            .await
            .expect_err("refused connection");
        assert!(
            matches!(err, PrometheusError::Unavailable { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn non_finite_values_are_no_figure() {
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(finite(f64::INFINITY), None);
        assert_eq!(finite(0.0), Some(0.0));
    }
}
