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
    /// The `Authorization` header, from a file read again when it changes.
    credentials: crate::prometheus_client::Credentials,
    /// The same HTTP client, for reads parsed without the library's
    /// per-series label maps (see [`Prometheus::instant_per_slo`]).
    http: reqwest::Client,
    url: String,
    queries: prometheus_client::metrics::counter::Counter,
}

impl Prometheus {
    /// `timeout` bounds every request: a slow Prometheus is an unavailable one.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, PrometheusError> {
        Self::with_options(&crate::prometheus_client::ClientOptions {
            url: url.to_owned(),
            timeout,
            args: Default::default(),
        })
    }

    /// A client with TLS, credentials and extra headers (see
    /// [`crate::prometheus_client`]); errors name the flag to fix.
    pub fn with_options(
        options: &crate::prometheus_client::ClientOptions,
    ) -> Result<Self, PrometheusError> {
        let unavailable = |message: String| PrometheusError::Unavailable {
            url: options.url.clone(),
            message,
        };
        let url = options.base_url().map_err(unavailable)?;
        let http = options.http_client().map_err(unavailable)?;
        let client = prometheus_http_query::Client::from(http.clone(), &url)
            .map_err(|e| unavailable(e.to_string()))?;
        let credentials = crate::prometheus_client::Credentials::new(options.credential_source());
        // A credential file that cannot be read is a start-up error, not
        // a quiet "Prometheus unavailable" on every SLO later.
        credentials.header().map_err(unavailable)?;
        Ok(Self {
            client,
            credentials,
            http,
            url,
            queries: Default::default(),
        })
    }

    /// The `Authorization` header to send now, if any.
    fn authorization(&self) -> Result<Option<reqwest::header::HeaderValue>, PrometheusError> {
        self.credentials
            .header()
            .map_err(|message| PrometheusError::Unavailable {
                url: self.url.clone(),
                message,
            })
    }

    /// `POST /-/reload` (after writing a rule file), with the same TLS,
    /// credentials and headers as the queries.
    pub async fn reload(&self) -> Result<(), PrometheusError> {
        let mut request = self.http.post(format!("{}/-/reload", self.url));
        if let Some(auth) = self.authorization()? {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(None, &e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        Err(self.refused(status, &response.text().await.unwrap_or_default()))
    }

    /// Unavailable, with the flag to look at when the cause says which.
    fn unavailable(
        &self,
        status: Option<u16>,
        err: &(dyn std::error::Error + 'static),
    ) -> PrometheusError {
        let text = crate::prometheus_client::error_chain(err);
        let status = status.or_else(|| crate::prometheus_client::status_in(err));
        let message = match crate::prometheus_client::hint(status, &text, self.credentials.source())
        {
            Some(hint) => format!("{hint} ({text})"),
            None => text,
        };
        PrometheusError::Unavailable {
            url: self.url.clone(),
            message,
        }
    }

    /// An HTTP answer that is not the query API's: an auth layer or a
    /// proxy refused the request.
    fn refused(&self, status: reqwest::StatusCode, body: &str) -> PrometheusError {
        let body: String = body.trim().chars().take(200).collect();
        let text = format!("HTTP {status}: {body}");
        let message = match crate::prometheus_client::hint(
            Some(status.as_u16()),
            &text,
            self.credentials.source(),
        ) {
            Some(hint) => format!("{hint} ({text})"),
            None => text,
        };
        PrometheusError::Unavailable {
            url: self.url.clone(),
            message,
        }
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
        let mut request = self.client.query(query);
        if let Some(auth) = self.authorization()? {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .post_raw()
            .await
            .map_err(|e| self.unavailable(None, &e))?;
        let result = self.answer(query, response).await?;
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
        let mut request = self.client.query_range(query, start, end, step);
        if let Some(auth) = self.authorization()? {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .get_raw()
            .await
            .map_err(|e| self.unavailable(None, &e))?;
        let result = self.answer(query, response).await?;
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
        let mut request = self
            .http
            .post(format!("{}/api/v1/query", self.url))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(format!(
                "query={}",
                percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
            ));
        if let Some(auth) = self.authorization()? {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.unavailable(None, &e))?;
        let http_status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unavailable(Some(http_status.as_u16()), &e))?;
        let Ok(answer) = serde_json::from_slice::<wire::Answer<'_>>(&body) else {
            // Not the query API talking: an auth layer or a proxy.
            return Err(self.refused(http_status, &String::from_utf8_lossy(&body)));
        };
        if answer.status != "success" {
            let message = answer.error.unwrap_or_default().into_owned();
            return Err(self.error_answer(
                query,
                http_status,
                answer.error_type.as_deref(),
                message,
            ));
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

    /// The query API's answer, or why there is none: a refused query
    /// (`bad_data`, `execution`) apart from everything else.
    async fn answer(
        &self,
        query: &str,
        response: reqwest::Response,
    ) -> Result<prometheus_http_query::response::PromqlResult, PrometheusError> {
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.unavailable(Some(status.as_u16()), &e))?;
        let Ok(answer) = serde_json::from_slice::<wire::Full>(&body) else {
            // Not the query API talking: an auth layer or a proxy.
            return Err(self.refused(status, &String::from_utf8_lossy(&body)));
        };
        match (answer.status.as_str(), answer.data) {
            ("success", Some(data)) => Ok(data),
            ("success", None) => Err(self.refused(status, "a successful answer without data")),
            _ => Err(self.error_answer(
                query,
                status,
                answer.error_type.as_deref(),
                answer.error.unwrap_or_default(),
            )),
        }
    }

    /// An answer with `"status": "error"`: Prometheus's own (a refused
    /// query) or a proxy's in the same shape (prom-label-proxy's missing
    /// tenant header, `errorType: prom-label-proxy`).
    fn error_answer(
        &self,
        query: &str,
        status: reqwest::StatusCode,
        error_type: Option<&str>,
        message: String,
    ) -> PrometheusError {
        match error_type {
            Some("bad_data" | "execution") => PrometheusError::BadQuery {
                query: query.to_owned(),
                message,
            },
            _ => self.refused(status, &message),
        }
    }
}

/// Prometheus's query API answer, borrowing from the response body; only
/// what `instant_per_slo` reads.
mod wire {
    use std::borrow::Cow;

    use serde::Deserialize;

    /// The whole answer, parsed by the library's types.
    #[derive(Deserialize)]
    pub struct Full {
        pub status: String,
        #[serde(default)]
        pub data: Option<prometheus_http_query::response::PromqlResult>,
        #[serde(default, rename = "errorType")]
        pub error_type: Option<String>,
        #[serde(default)]
        pub error: Option<String>,
    }

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

    /// A stand-in behind basic auth and a tenant header, under a path
    /// prefix, as Mimir's or a proxy's: 401 in plain text without them.
    async fn guarded() -> String {
        use axum::response::IntoResponse as _;
        let app = axum::Router::new().route(
            "/prefix/api/v1/query",
            axum::routing::post(|headers: axum::http::HeaderMap| async move {
                let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
                let tenant = headers.get("x-scope-orgid").and_then(|v| v.to_str().ok());
                // "u:p" in base64.
                if auth != Some("Basic dTpw") || tenant != Some("team-a") {
                    return (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized\n").into_response();
                }
                axum::Json(serde_json::json!({ "status": "success", "data": { "resultType": "vector", "result": [
                    { "metric": { "namespace": "shop", "slo": "a" }, "value": [1.0, "0.5"] }
                ]}}))
                .into_response()
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/prefix/", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    #[tokio::test]
    async fn credentials_from_a_file_and_headers_reach_prometheus_under_its_path_prefix() {
        let url = guarded().await;
        let dir = std::env::temp_dir().join(format!("headroom-prom-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("basic-auth");
        std::fs::write(&file, "u:p\n").expect("write");
        let options =
            |file: &std::path::Path, tenant: &str| crate::prometheus_client::ClientOptions {
                url: url.clone(),
                timeout: Duration::from_secs(2),
                args: crate::prometheus_client::ClientArgs {
                    prometheus_basic_auth_file: Some(file.to_owned()),
                    prometheus_headers: vec![
                        crate::prometheus_client::parse_header(&format!("X-Scope-OrgID: {tenant}"))
                            .expect("header"),
                    ],
                    ..Default::default()
                },
            };
        let prom = Prometheus::with_options(&options(&file, "team-a")).expect("client");
        assert_eq!(prom.scalar("m").await.expect("answer"), Some(0.5));
        let mut seen = Vec::new();
        prom.instant_per_slo("m", |_, _, v| seen.push(v))
            .await
            .expect("answer");
        assert_eq!(seen, vec![Some(0.5)]);

        // The password changes on disk: read again, and refused naming the flag.
        std::fs::write(&file, "u:wrong\n").expect("write");
        for err in [
            prom.scalar("m").await.expect_err("refused"),
            prom.instant_per_slo("m", |_, _, _| {})
                .await
                .expect_err("refused"),
        ] {
            let text = err.to_string();
            assert!(matches!(err, PrometheusError::Unavailable { .. }), "{text}");
            assert!(text.contains("--prometheus-basic-auth-file"), "{text}");
            assert!(text.contains("401"), "{text}");
        }
        let missing = dir.join("missing");
        let err = Prometheus::with_options(&options(&missing, "team-a"))
            .err()
            .expect("a missing credential file is refused at start");
        assert!(
            err.to_string().contains("--prometheus-basic-auth-file"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn non_finite_values_are_no_figure() {
        assert_eq!(finite(f64::NAN), None);
        assert_eq!(finite(f64::INFINITY), None);
        assert_eq!(finite(0.0), Some(0.0));
    }
}
