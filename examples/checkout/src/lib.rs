//! `checkout`, the example service of Headroom's local cluster, and its load
//! generator. Two binaries share these modules: `checkout` (the service,
//! `main.rs`) and `checkout-load` (`bin/checkout-load.rs`, a client that
//! sends its traffic through a Service and counts what it got back).

pub mod capacity;
pub mod db_pool;
pub mod injection;
pub mod load;
pub mod metrics;
pub mod pods;
pub mod server;
