//! Headroom: a Kubernetes operator that spends a service's spare error
//! budget on learning.

pub mod budget;
pub mod cli;
pub mod conditions;
pub mod indicator;
pub mod prometheus;
pub mod resources;
