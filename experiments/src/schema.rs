//! Schema helpers shared by the action specs.
//!
//! Durations are strings in the Prometheus style (`30s`, `5m`, `1h`, `30d`);
//! the API server checks their shape with this pattern so that a typo is
//! refused at `kubectl apply` instead of surfacing mid-run.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Accepted duration shape: one or more `<digits><unit>` groups, units
/// `ms`, `s`, `m`, `h`, `d`, `w` (e.g. `250ms`, `5m`, `1h30m`, `30d`).
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d|w))+$";

/// Schema for a duration string field.
pub fn duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
        "maxLength": 32,
    })
}

/// Schema for an optional duration string field.
pub fn optional_duration(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": DURATION_PATTERN,
        "maxLength": 32,
    })
}
