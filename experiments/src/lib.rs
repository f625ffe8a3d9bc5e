//! Headroom's fault library: one module per experiment action.
//!
//! Each module owns its spec (the part of a `ChaosExperiment` that chooses the
//! fault), and — as the engine grows — its injection, observation, restore
//! and expectations. Specs live here rather than in the controller so that a
//! fault's shape and its behaviour change together.

pub mod checks;
pub mod connection_exhaustion;
pub mod evidence;
pub mod manifest;
pub mod node_drain;
pub mod pod_kill;
pub mod scale_down;
pub mod schema;
pub mod zone_outage;

pub use connection_exhaustion::ConnectionExhaustionSpec;
pub use manifest::ManifestSpec;
pub use node_drain::NodeDrainSpec;
pub use pod_kill::PodKillSpec;
pub use scale_down::ScaleDownSpec;
pub use zone_outage::ZoneOutageSpec;
