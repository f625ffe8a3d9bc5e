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
        let client = prometheus_http_query::Client::from(http, url)
            .map_err(|e| unavailable(e.to_string()))?;
        Ok(Self {
            client,
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

    #[test]
    fn non_finite_values_are_no_figure() {
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(finite(f64::INFINITY), None);
        assert_eq!(finite(0.0), Some(0.0));
    }
}
