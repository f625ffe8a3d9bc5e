//! `connectionExhaustion`: open and hold connections to a target until it
//! refuses or the count is reached, and record where refusals began.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::scale_down::ScaleTarget;

/// Ramp connections to a target and hold them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'Hold' || has(self.target)").message("spec.action.connectionExhaustion.target is required when mode is Hold"))]
#[x_kube(validation = Rule::new("self.mode != 'ScaleClients' || has(self.clients)").message("spec.action.connectionExhaustion.clients is required when mode is ScaleClients"))]
#[x_kube(validation = Rule::new("self.protocol != 'Postgres' || self.mode != 'Hold' || has(self.credentialsSecret)").message("spec.action.connectionExhaustion.credentialsSecret is required for protocol Postgres"))]
pub struct ConnectionExhaustionSpec {
    /// `Hold` opens connections from the operator; `ScaleClients` scales a
    /// client workload up step by step. Defaults to Hold.
    #[serde(default)]
    pub mode: ConnectionMode,

    /// Where to connect (mode Hold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ConnectionTarget>,

    /// The client workload to scale (mode ScaleClients).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<ScaleTarget>,

    /// Wire protocol: `Tcp` (plain sockets) or `Postgres` (authenticated
    /// sessions). Defaults to Tcp.
    #[serde(default)]
    pub protocol: ConnectionProtocol,

    /// Connections (or client replicas) to reach at most (1 to 10000).
    #[schemars(range(min = 1, max = 10000))]
    pub connections: i32,

    /// Connections added per step (1 to 10000). Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub ramp_step: Option<i32>,

    /// Time between ramp steps, e.g. `1s`. Defaults to 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::optional_duration")]
    pub ramp_interval: Option<String>,

    /// How long to hold the connections once the ramp ends, e.g. `30s`.
    #[schemars(schema_with = "crate::schema::duration")]
    pub hold_for: String,

    /// Secret with the PostgreSQL credentials (protocol Postgres).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecret>,
}

/// How connections are driven.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionMode {
    #[default]
    Hold,
    ScaleClients,
}

/// Protocol spoken on each connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConnectionProtocol {
    #[default]
    Tcp,
    Postgres,
}

/// A connection target: a Service in the cluster or a host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.service) != has(self.host)").message("spec.action.connectionExhaustion.target: set exactly one of service or host"))]
pub struct ConnectionTarget {
    /// Name of a Service (in `namespace`, default the experiment's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub service: Option<String>,
    /// Namespace of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Host name or IP address, for targets outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,
    /// TCP port (1 to 65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// Where the PostgreSQL credentials are.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecret {
    /// Name of the Secret, in the experiment's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the user name. Defaults to `username`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_key: Option<String>,
    /// Key holding the password. Defaults to `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_key: Option<String>,
    /// Key holding the database name. Defaults to `database`; when absent
    /// from the Secret, the user name is used, as libpq does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_key: Option<String>,
}
