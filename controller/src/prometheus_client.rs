//! How to reach the Prometheus that users run: behind TLS, basic auth, a
//! bearer token, a tenant header or a path prefix (Thanos, Mimir, Cortex,
//! prom-label-proxy).
//!
//! Secrets come only from files (a mounted Secret), never from flags: a
//! flag shows in `ps`, in the Pod spec and in shell history. The token and
//! basic-auth files are read again whenever they change on disk, so a
//! rotated Secret is picked up without a restart.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

/// The command-line options (shared by `headroom run` and `headroom plan`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ClientArgs {
    /// File holding a bearer token for Prometheus (e.g. a mounted Secret's
    /// key); read again whenever it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROMETHEUS_BEARER_TOKEN_FILE",
        conflicts_with = "prometheus_basic_auth_file"
    )]
    pub prometheus_bearer_token_file: Option<PathBuf>,
    /// Basic auth for Prometheus: a file holding `USER:PASSWORD`, or a
    /// directory holding `username` and `password` files (a mounted
    /// `kubernetes.io/basic-auth` Secret); read again whenever it changes.
    #[arg(long, value_name = "FILE|DIR", env = "PROMETHEUS_BASIC_AUTH_FILE")]
    pub prometheus_basic_auth_file: Option<PathBuf>,
    /// PEM file of the certificate authorities that sign Prometheus's
    /// certificate (replaces the system roots, as Prometheus's `ca_file`).
    #[arg(long, value_name = "FILE", env = "PROMETHEUS_CA_FILE")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// PEM client certificate for Prometheus (mutual TLS); needs
    /// `--prometheus-key-file`.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROMETHEUS_CERT_FILE",
        requires = "prometheus_key_file"
    )]
    pub prometheus_cert_file: Option<PathBuf>,
    /// PEM private key of `--prometheus-cert-file`.
    #[arg(
        long,
        value_name = "FILE",
        env = "PROMETHEUS_KEY_FILE",
        requires = "prometheus_cert_file"
    )]
    pub prometheus_key_file: Option<PathBuf>,
    /// An extra header on every Prometheus request, `NAME: VALUE` (e.g.
    /// `X-Scope-OrgID: team-a`); may be repeated. Not for secrets: use
    /// the token or basic-auth file.
    #[arg(long = "prometheus-header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub prometheus_headers: Vec<Header>,
}

/// One `--prometheus-header`.
#[derive(Clone, Debug, PartialEq)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

/// Parse `NAME: VALUE`. Credentials are refused here: they belong in files.
pub fn parse_header(text: &str) -> Result<Header, String> {
    let (name, value) = text.split_once(':').ok_or_else(|| {
        format!(
            "--prometheus-header {text:?}: expected `NAME: VALUE`, e.g. `X-Scope-OrgID: team-a`"
        )
    })?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        format!(
            "--prometheus-header {text:?}: {:?} is not a valid header name",
            name.trim()
        )
    })?;
    if name == reqwest::header::AUTHORIZATION || name == reqwest::header::PROXY_AUTHORIZATION {
        return Err(format!(
            "--prometheus-header {name}: credentials never go in a flag (they show in `ps` and the Pod spec); \
             use --prometheus-bearer-token-file or --prometheus-basic-auth-file"
        ));
    }
    let value = HeaderValue::from_str(value.trim()).map_err(|_| {
        format!("--prometheus-header {text:?}: the value has characters a header cannot carry")
    })?;
    Ok(Header { name, value })
}

/// Where the `Authorization` header comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum CredentialSource {
    None,
    Bearer(PathBuf),
    Basic(PathBuf),
}

impl CredentialSource {
    /// The flag that configured it, for error messages.
    pub fn flag(&self) -> Option<&'static str> {
        match self {
            Self::None => None,
            Self::Bearer(_) => Some("--prometheus-bearer-token-file"),
            Self::Basic(_) => Some("--prometheus-basic-auth-file"),
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Self::None => None,
            Self::Bearer(p) | Self::Basic(p) => Some(p),
        }
    }
}

/// What identifies one version of a file (a Secret update swaps the
/// symlink, which changes all three).
#[derive(Clone, Debug, PartialEq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

/// The `Authorization` header, re-read when its file changes.
pub struct Credentials {
    source: CredentialSource,
    cached: Mutex<Option<(Vec<Stamp>, HeaderValue)>>,
}

impl Credentials {
    pub fn new(source: CredentialSource) -> Self {
        Self {
            source,
            cached: Mutex::new(None),
        }
    }

    pub fn source(&self) -> &CredentialSource {
        &self.source
    }

    /// The header to send now; an error (naming the flag) when the file
    /// cannot be read or holds nothing usable.
    pub fn header(&self) -> Result<Option<HeaderValue>, String> {
        let (Some(flag), Some(path)) = (self.source.flag(), self.source.path()) else {
            return Ok(None);
        };
        let files = files_of(&self.source);
        let stamps = files
            .iter()
            .map(|f| stamp(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))?;
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| "credential cache poisoned".to_owned())?;
        if let Some((seen, value)) = cached.as_ref()
            && *seen == stamps
        {
            return Ok(Some(value.clone()));
        }
        let contents = files
            .iter()
            .map(std::fs::read_to_string)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))?;
        let value = authorization(&self.source, &contents)
            .map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        *cached = Some((stamps, value.clone()));
        Ok(Some(value))
    }
}

fn files_of(source: &CredentialSource) -> Vec<PathBuf> {
    match source {
        CredentialSource::None => Vec::new(),
        CredentialSource::Basic(dir) if dir.is_dir() => {
            vec![dir.join("username"), dir.join("password")]
        }
        CredentialSource::Bearer(p) | CredentialSource::Basic(p) => vec![p.clone()],
    }
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// The header value from the files' contents (one file, or `username`
/// and `password` of a basic-auth Secret). Pure.
pub fn authorization(
    source: &CredentialSource,
    contents: &[String],
) -> Result<HeaderValue, String> {
    let mut value = match (source, contents) {
        (CredentialSource::Bearer(_), [token]) => {
            let token = token.trim();
            if token.is_empty() {
                return Err("the file is empty".into());
            }
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the token has characters a header cannot carry".to_owned())?
        }
        (CredentialSource::Basic(_), [pair]) => {
            let pair = pair.trim_end_matches(['\n', '\r']);
            let Some((user, password)) = pair.split_once(':') else {
                return Err("expected `USER:PASSWORD` on one line".into());
            };
            basic(user, password)?
        }
        (CredentialSource::Basic(_), [user, password]) => basic(
            user.trim_end_matches(['\n', '\r']),
            password.trim_end_matches(['\n', '\r']),
        )?,
        _ => return Err("no credentials".into()),
    };
    value.set_sensitive(true);
    Ok(value)
}

fn basic(user: &str, password: &str) -> Result<HeaderValue, String> {
    if user.is_empty() {
        return Err("the user name is empty".into());
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "cannot encode the credentials".to_owned())
}

/// Everything needed to build the HTTP client, checked.
pub struct ClientOptions {
    pub url: String,
    pub timeout: Duration,
    pub args: ClientArgs,
}

impl ClientOptions {
    /// The URL without a trailing slash (a path prefix such as
    /// `/prometheus` is kept: every API path is appended to it).
    pub fn base_url(&self) -> Result<String, String> {
        let url = self.url.trim().trim_end_matches('/');
        match url.split_once("://") {
            Some(("http" | "https", rest)) if !rest.is_empty() => Ok(url.to_owned()),
            _ => Err(format!(
                "--prometheus-url {:?}: expected http:// or https:// and a host, e.g. https://thanos.example:10902/prometheus",
                self.url
            )),
        }
    }

    pub fn credential_source(&self) -> CredentialSource {
        match (
            &self.args.prometheus_bearer_token_file,
            &self.args.prometheus_basic_auth_file,
        ) {
            (Some(p), _) => CredentialSource::Bearer(p.clone()),
            (None, Some(p)) => CredentialSource::Basic(p.clone()),
            (None, None) => CredentialSource::None,
        }
    }

    /// The reqwest client: timeouts, TLS and the extra headers. Every
    /// error names the flag to fix.
    pub fn http_client(&self) -> Result<reqwest::Client, String> {
        let mut headers = HeaderMap::new();
        for h in &self.args.prometheus_headers {
            headers.append(h.name.clone(), h.value.clone());
        }
        let mut builder = reqwest::Client::builder()
            .timeout(self.timeout)
            .connect_timeout(self.timeout)
            .default_headers(headers);
        if let Some(ca) = &self.args.prometheus_ca_file {
            let pem = read(ca, "--prometheus-ca-file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                format!(
                    "--prometheus-ca-file {}: not PEM certificates: {e}",
                    ca.display()
                )
            })?;
            if certs.is_empty() {
                return Err(format!(
                    "--prometheus-ca-file {}: no certificate in the file",
                    ca.display()
                ));
            }
            builder = builder.tls_certs_only(certs);
        }
        if let (Some(cert), Some(key)) = (
            &self.args.prometheus_cert_file,
            &self.args.prometheus_key_file,
        ) {
            let mut pem = read(cert, "--prometheus-cert-file")?;
            pem.push(b'\n');
            pem.extend(read(key, "--prometheus-key-file")?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "--prometheus-cert-file {} / --prometheus-key-file {}: not a PEM certificate and key: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        builder
            .build()
            .map_err(|e| format!("building the Prometheus client: {e}"))
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: cannot read: {e}", path.display()))
}

/// What to tell the user when Prometheus (or a proxy before it) refused a
/// request or the connection failed: which flag to look at. Pure.
pub fn hint(
    status: Option<u16>,
    error_text: &str,
    credentials: &CredentialSource,
) -> Option<String> {
    let flag = credentials.flag();
    match (status, flag) {
        (Some(401), Some(flag)) => Some(format!(
            "the credentials in {flag} were refused (HTTP 401): check the file's contents"
        )),
        (Some(401), None) => Some(
            "Prometheus asks for credentials (HTTP 401): give --prometheus-bearer-token-file or --prometheus-basic-auth-file"
                .into(),
        ),
        (Some(403), Some(flag)) => Some(format!(
            "access denied (HTTP 403): the credentials in {flag} are not allowed to query, or the tenant in --prometheus-header is not theirs"
        )),
        (Some(403), None) => Some(
            "access denied (HTTP 403): give credentials (--prometheus-bearer-token-file or --prometheus-basic-auth-file) or the tenant header (--prometheus-header)"
                .into(),
        ),
        (Some(404), _) => Some(
            "no query API at this address (HTTP 404): check the path prefix of --prometheus-url (e.g. /prometheus)".into(),
        ),
        _ => {
            let text = error_text.to_ascii_lowercase();
            if text.contains("missing http header") {
                Some("a header the proxy requires is missing (a tenant header?): give it with --prometheus-header".into())
            } else if text.contains("certificate required") || text.contains("certificaterequired") {
                Some("the server wants a client certificate: give --prometheus-cert-file and --prometheus-key-file".into())
            } else if text.contains("certificate") || text.contains("unknownissuer") {
                Some("the server's TLS certificate was not accepted: give the CA that signed it with --prometheus-ca-file".into())
            } else if text.contains("http2") || text.contains("invalid http version") || text.contains("wrong version number") {
                Some("TLS and plain HTTP mixed up: check http:// or https:// in --prometheus-url".into())
            } else {
                None
            }
        }
    }
}

/// An error and its causes on one line: reqwest's top-level message alone
/// ("error sending request") hides the reason (a refused certificate).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let s = e.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = e.source();
    }
    text
}

/// The HTTP status inside an error chain, if a response was received.
pub fn status_in(err: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<reqwest::Error>()
            && let Some(s) = r.status()
        {
            return Some(s.as_u16());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header's expected name and value, or a part of the error.
    type Want = Result<(&'static str, &'static str), &'static str>;

    #[test]
    fn headers_parse_or_say_how_to_write_them() {
        let cases: &[(&str, Want)] = &[
            ("X-Scope-OrgID: team-a", Ok(("x-scope-orgid", "team-a"))),
            ("X-Scope-OrgID:team-a", Ok(("x-scope-orgid", "team-a"))),
            (" X-Tenant :  a b ", Ok(("x-tenant", "a b"))),
            ("X-Scope-OrgID", Err("expected `NAME: VALUE`")),
            ("Bad Name: x", Err("not a valid header name")),
            (
                "Authorization: Bearer x",
                Err("--prometheus-bearer-token-file"),
            ),
            (
                "proxy-authorization: x",
                Err("credentials never go in a flag"),
            ),
            ("X-A: a\u{7f}", Err("characters a header cannot carry")),
        ];
        for (text, want) in cases {
            match (parse_header(text), want) {
                (Ok(h), Ok((name, value))) => {
                    assert_eq!(h.name.as_str(), *name, "{text}");
                    assert_eq!(h.value.to_str().ok(), Some(*value), "{text}");
                }
                (Err(e), Err(part)) => {
                    assert!(e.contains(part), "{text}: {e}");
                    assert!(e.contains("--prometheus-header"), "{text}: {e}");
                }
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn authorization_values_from_file_contents() {
        let bearer = CredentialSource::Bearer("t".into());
        let basic = CredentialSource::Basic("b".into());
        let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let cases: Vec<(&CredentialSource, Vec<String>, Result<&str, &str>)> = vec![
            (&bearer, s(&["abc\n"]), Ok("Bearer abc")),
            (&bearer, s(&["  \n"]), Err("empty")),
            // "user:pass" and a trailing newline, as `echo` writes it.
            (&basic, s(&["user:pa:ss\n"]), Ok("Basic dXNlcjpwYTpzcw==")),
            (&basic, s(&["userpass"]), Err("USER:PASSWORD")),
            (&basic, s(&[":x"]), Err("user name is empty")),
            // A kubernetes.io/basic-auth Secret's two keys.
            (
                &basic,
                s(&["user\n", "pa:ss"]),
                Ok("Basic dXNlcjpwYTpzcw=="),
            ),
        ];
        for (source, contents, want) in cases {
            let got = authorization(source, &contents);
            match (&got, want) {
                (Ok(v), Ok(w)) => {
                    assert_eq!(v.to_str().ok(), Some(w), "{contents:?}");
                    assert!(v.is_sensitive());
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{contents:?}: {e}"),
                _ => panic!("{contents:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_read_again_when_the_file_changes() {
        let dir = std::env::temp_dir().join(format!("headroom-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let token = dir.join("token");
        std::fs::write(&token, "first").expect("write");
        let creds = Credentials::new(CredentialSource::Bearer(token.clone()));
        let first = creds.header().expect("read").expect("some");
        assert_eq!(first.to_str().ok(), Some("Bearer first"));
        // A Secret update replaces the file (a new inode), as here.
        let next = dir.join("token.new");
        std::fs::write(&next, "second-token").expect("write");
        std::fs::rename(&next, &token).expect("rename");
        let second = creds.header().expect("read").expect("some");
        assert_eq!(second.to_str().ok(), Some("Bearer second-token"));
        std::fs::remove_file(&token).expect("remove");
        let err = creds.header().expect_err("file gone");
        assert!(err.contains("--prometheus-bearer-token-file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn urls_keep_their_path_prefix_and_bad_ones_name_the_flag() {
        let opts = |url: &str| ClientOptions {
            url: url.into(),
            timeout: Duration::from_secs(1),
            args: ClientArgs::default(),
        };
        let cases: &[(&str, Result<&str, ()>)] = &[
            ("http://p:9090", Ok("http://p:9090")),
            ("https://mimir/prometheus/", Ok("https://mimir/prometheus")),
            ("p:9090", Err(())),
            ("ftp://p", Err(())),
            ("https://", Err(())),
        ];
        for (url, want) in cases {
            match (opts(url).base_url(), want) {
                (Ok(got), Ok(w)) => assert_eq!(got, *w),
                (Err(e), Err(())) => assert!(e.contains("--prometheus-url"), "{e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn hints_name_the_flag_to_fix() {
        let bearer = CredentialSource::Bearer("t".into());
        let basic = CredentialSource::Basic("b".into());
        let none = CredentialSource::None;
        let cases: &[(Option<u16>, &str, &CredentialSource, Option<&str>)] = &[
            (
                Some(401),
                "",
                &basic,
                Some("--prometheus-basic-auth-file were refused"),
            ),
            (
                Some(401),
                "",
                &bearer,
                Some("--prometheus-bearer-token-file were refused"),
            ),
            (
                Some(401),
                "",
                &none,
                Some("give --prometheus-bearer-token-file"),
            ),
            (Some(403), "", &basic, Some("--prometheus-header")),
            (
                Some(404),
                "",
                &none,
                Some("path prefix of --prometheus-url"),
            ),
            (
                None,
                "invalid peer certificate: UnknownIssuer",
                &none,
                Some("--prometheus-ca-file"),
            ),
            (
                None,
                "received fatal alert: CertificateRequired",
                &none,
                Some("--prometheus-cert-file"),
            ),
            (None, "connection refused", &none, None),
            (
                Some(400),
                "HTTP 400: Missing HTTP header \"X-Scope-OrgID\".",
                &basic,
                Some("--prometheus-header"),
            ),
            (Some(500), "", &basic, None),
        ];
        for (status, text, creds, want) in cases {
            let got = hint(*status, text, creds);
            match (got.as_deref(), want) {
                (Some(g), Some(w)) => assert!(g.contains(w), "{status:?} {text}: {g}"),
                (None, None) => {}
                (g, w) => panic!("{status:?} {text}: got {g:?}, want {w:?}"),
            }
        }
    }
}
