//! The hand-off from the reference-data slow path to the validators: one instrument's
//! tick size and circuit limits, sent over each shard's reference queue.

use super::Price;

/// Reference data of one instrument (from PostgreSQL `instruments`). A zero field
/// means "unknown" and disables its check.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reference {
    /// Minimum price increment.
    pub tick_size: Price,
    /// Lower circuit limit.
    pub circuit_lower: Price,
    /// Upper circuit limit.
    pub circuit_upper: Price,
}

/// New reference data for one instrument; an all-zero `reference` clears it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReferenceUpdate {
    /// The instrument.
    pub token: u32,
    /// Its tick size and circuit limits.
    pub reference: Reference,
}
