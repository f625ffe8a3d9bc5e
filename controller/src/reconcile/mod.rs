//! Reconcilers: one for SLOs, one for experiments.

pub mod decision;
pub mod experiment;
pub mod slo;

/// Reconciles of one controller in flight at once. Unbounded, ten thousand
/// SLOs evaluated in the same second each held an API connection for their
/// status write: hyper opened a connection per request in flight and kept
/// them idle afterwards, tens of kilobytes each, the largest part of the
/// operator's memory. A cycle's evaluations are short (the reads are
/// shared), so this bounds memory without slowing a cycle.
pub const RECONCILES_IN_FLIGHT: u16 = 64;

/// The one error type of the reconcilers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("serialising status: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{0}")]
    Invalid(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}
