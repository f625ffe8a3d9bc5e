//! connectionExhaustion in mode Hold: connections opened and held by this
//! process. Releasing is dropping them, which also happens if the process
//! dies: the kernel closes the sockets, so a crash never leaves them held.

use std::net::SocketAddr;
use std::time::Duration;

use headroom_experiments::connection_exhaustion::{
    ConnectionExhaustionSpec, ConnectionProtocol, CredentialsSecret,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::allow_list::{AllowList, HOST_FIELD, allowed_addresses};
use crate::reasons::{Refusal, RefuseReason};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Where to connect and how to log in.
#[derive(Clone)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub protocol: ConnectionProtocol,
    pub login: Option<Login>,
    /// For a `host` target, the addresses the allow-list approved: the
    /// only ones connected to, so the name resolving elsewhere later
    /// changes nothing. Empty for a Service (reached by its cluster name).
    pub addrs: Vec<SocketAddr>,
}

#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
    pub database: String,
}

impl Target {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// One held connection.
pub enum Held {
    Tcp(TcpStream),
    Postgres(tokio_postgres::Client, JoinHandle<()>),
}

impl Held {
    /// Whether the target still holds this connection. A PostgreSQL
    /// session whose server ended it (restart, failover, terminated
    /// backend) has its connection task finished; a TCP socket the peer
    /// closed reads end-of-file. Neither blocks.
    pub fn is_alive(&self) -> bool {
        match self {
            Held::Tcp(stream) => {
                let mut byte = [0u8; 1];
                match stream.try_read(&mut byte) {
                    Ok(0) => false,
                    Ok(_) => true,
                    Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                }
            }
            Held::Postgres(client, task) => !client.is_closed() && !task.is_finished(),
        }
    }
}

/// Forget the connections the target no longer holds; returns how many.
/// What is counted as held is then what the target really holds.
pub fn prune(held: &mut Vec<Held>) -> usize {
    let before = held.len();
    held.retain(Held::is_alive);
    before - held.len()
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Held::Postgres(_, task) = self {
            task.abort();
        }
    }
}

/// Resolve the target and read the credentials, before anything is opened.
/// A `host` target must be covered by `allow` (see [`crate::allow_list`]).
/// Every refusal names the field to fix.
pub async fn resolve(
    client: &kube::Client,
    ns: &str,
    spec: &ConnectionExhaustionSpec,
    allow: &AllowList,
) -> Result<Target, Refusal> {
    let invalid = |m: String| Refusal::new(RefuseReason::InvalidTarget, m);
    let t = spec.target.as_ref().ok_or_else(|| {
        invalid("spec.action.connectionExhaustion.target is required in mode Hold".to_owned())
    })?;
    let port = u16::try_from(t.port).map_err(|_| {
        invalid("spec.action.connectionExhaustion.target.port must be 1 to 65535".to_owned())
    })?;
    let mut addrs = Vec::new();
    let host = match (&t.host, &t.service) {
        (Some(h), _) => {
            addrs = allowed_addresses(allow, HOST_FIELD, h, port).await?;
            h.clone()
        }
        (None, Some(svc)) => {
            let svc_ns = t.namespace.as_deref().unwrap_or(ns);
            // The Service must exist; its cluster DNS name is what pods use.
            let api: Api<k8s_openapi::api::core::v1::Service> =
                Api::namespaced(client.clone(), svc_ns);
            api.get_opt(svc)
                .await
                .map_err(|e| invalid(format!("reading Service {svc_ns}/{svc}: {e}")))?
                .ok_or_else(|| {
                    invalid(format!(
                        "spec.action.connectionExhaustion.target.service: Service {svc_ns}/{svc} does not exist"
                    ))
                })?;
            format!("{svc}.{svc_ns}.svc")
        }
        (None, None) => {
            return Err(invalid(
                "spec.action.connectionExhaustion.target: set service or host".to_owned(),
            ));
        }
    };
    let login = match spec.protocol {
        ConnectionProtocol::Tcp => None,
        ConnectionProtocol::Postgres => {
            let secret = spec.credentials_secret.as_ref().ok_or_else(|| {
                invalid(
                    "spec.action.connectionExhaustion.credentialsSecret is required for protocol Postgres"
                        .to_owned(),
                )
            })?;
            Some(read_login(client, ns, secret).await.map_err(invalid)?)
        }
    };
    Ok(Target {
        host,
        port,
        protocol: spec.protocol,
        login,
        addrs,
    })
}

async fn read_login(
    client: &kube::Client,
    ns: &str,
    s: &CredentialsSecret,
) -> Result<Login, String> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = api
        .get_opt(&s.name)
        .await
        .map_err(|e| format!("reading Secret {ns}/{}: {e}", s.name))?
        .ok_or_else(|| {
            format!(
                "spec.action.connectionExhaustion.credentialsSecret.name: Secret {ns}/{} does not exist; create it with the keys username and password",
                s.name
            )
        })?;
    let data = secret.data.unwrap_or_default();
    let get = |key: &str| -> Option<String> {
        data.get(key)
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    let user_key = s.user_key.as_deref().unwrap_or("username");
    let password_key = s.password_key.as_deref().unwrap_or("password");
    let database_key = s.database_key.as_deref().unwrap_or("database");
    let user = get(user_key).ok_or_else(|| {
        format!(
            "Secret {ns}/{} has no key {user_key} (spec.action.connectionExhaustion.credentialsSecret.userKey)",
            s.name
        )
    })?;
    let password = get(password_key).ok_or_else(|| {
        format!(
            "Secret {ns}/{} has no key {password_key} (spec.action.connectionExhaustion.credentialsSecret.passwordKey)",
            s.name
        )
    })?;
    let database = get(database_key).unwrap_or_else(|| user.clone());
    Ok(Login {
        user,
        password,
        database,
    })
}

/// Open one connection, or say why the target refused it.
pub async fn open(target: &Target) -> Result<Held, String> {
    match (&target.protocol, &target.login) {
        (ConnectionProtocol::Postgres, Some(login)) => {
            let mut config = tokio_postgres::Config::new();
            config
                .host(&target.host)
                .port(target.port)
                .user(&login.user)
                .password(&login.password)
                .dbname(&login.database)
                .application_name("headroom-connection-exhaustion")
                .connect_timeout(CONNECT_TIMEOUT);
            if let Some(a) = target.addrs.first() {
                config.hostaddr(a.ip());
            }
            let (client, connection) =
                config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| match e.as_db_error() {
                        Some(db) => format!("{}: {}", db.severity(), db.message()),
                        None => e.to_string(),
                    })?;
            let task = tokio::spawn(async move {
                let _ = connection.await;
            });
            Ok(Held::Postgres(client, task))
        }
        _ => {
            let connect = async {
                if target.addrs.is_empty() {
                    TcpStream::connect(target.address()).await
                } else {
                    TcpStream::connect(&target.addrs[..]).await
                }
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(|_| format!("connecting to {} timed out", target.address()))?
                .map_err(|e| format!("connecting to {}: {e}", target.address()))?;
            Ok(Held::Tcp(stream))
        }
    }
}
