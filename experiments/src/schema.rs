//! Schema helpers shared by the action specs.
//!
//! Durations are strings in the Prometheus style (`30s`, `5m`, `1h`, `30d`);
//! the API server checks their shape with this pattern so that a typo is
//! refused at `kubectl apply` instead of surfacing mid-run.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Accepted duration shape, as Prometheus's `model.ParseDuration`: one or
/// more `<digits><unit>` groups with units `y`, `w`, `d`, `h`, `m`, `s`, `ms`
/// largest first, each at most once (e.g. `250ms`, `5m`, `1h30m`, `30d`).
/// The leading group picks the branch, so the empty string does not match.
/// Exactly what `headroom::duration::parse_duration` accepts, bar its
/// 292-year limit; a test there checks the two agree.
pub const DURATION_PATTERN: &str = concat!(
    r"^[0-9]+(",
    r"y([0-9]+w)?([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?",
    r"|w([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?",
    r"|d([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?",
    r"|h([0-9]+m)?([0-9]+s)?([0-9]+ms)?",
    r"|m([0-9]+s)?([0-9]+ms)?",
    r"|s([0-9]+ms)?",
    r"|ms",
    r")$"
);

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
