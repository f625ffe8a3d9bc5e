//! End-to-end tests against the local control plane (`make cluster-up`).
//! One binary so the workspace links it once.

mod actions;
mod bench;
mod bench_rules;
mod bench_table;
mod browser;
mod checks;
mod cluster;
mod crd_validation;
mod dashboard;
mod disruptive;
mod experiment;
mod helm;
mod hostile;
mod in_cluster;
mod instances;
mod manifest;
mod node_faults;
mod notify;
mod prometheus_auth;
mod prometheus_outage;
mod prometheus_rules;
mod queries;
mod real_actions;
mod real_node;
mod reliability;
mod safety;
mod slo;
