//! Headroom: a Kubernetes operator that spends a service's spare error
//! budget on learning.

pub mod allow_list;
pub mod budget;
pub mod caches;
pub mod cli;
pub mod cli_support;
pub mod conditions;
pub mod context;
pub mod dashboard;
pub mod duration;
pub mod engine;
pub mod gate;
pub mod import;
pub mod indicator;
pub mod leader;
pub mod long_windows;
pub mod metrics;
pub mod operator;
pub mod pause;
pub mod plan;
pub mod prometheus;
pub mod prometheus_client;
pub mod prometheus_rules;
pub mod reasons;
pub mod reconcile;
pub mod recorded;
pub mod registry;
pub mod resources;
pub mod rule_metadata;
pub mod rules;
pub mod rules_writer;
pub mod run_owner;
pub mod slo_eval;
pub mod slo_reader;
pub mod status;
pub mod verdict;
