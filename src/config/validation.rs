//! The `[validation]` section: thresholds of the tick checks (`shard::validate` applies
//! them; the flags themselves are `model::quality`).

use crate::shard::parse::{
    FIELD_EXCHANGE_TIME, FIELD_LAST_QUANTITY, FIELD_NAMES, FIELD_TRADINGSYMBOL, FIELD_VOLUME,
};

/// Most instruments a validator tracks: 1 Mi instruments × 2 slots × 48 B = 96 MiB,
/// far above the ~100k instruments Kite lists across all segments.
pub const INSTRUMENTS_MAX_LIMIT: usize = 1 << 20;

/// Thresholds of the checks: the `[validation]` section of the config file, so its
/// keys are these field names (the loader runs [`ValidationConfig::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidationConfig {
    /// How far an exchange time may run ahead of our clock before
    /// [`FLAG_FUTURE_TIMESTAMP`](crate::model::quality::FLAG_FUTURE_TIMESTAMP). Default 2,000 ms: NTP keeps hosts within a few ms,
    /// so 2 s only fires on a wrong clock or a bad stamp.
    pub future_skew_ms: i64,
    /// How far an exchange time may lag our clock before [`FLAG_STALE_TIMESTAMP`](crate::model::quality::FLAG_STALE_TIMESTAMP).
    /// Default 60,000 ms: Kite stamps whole seconds and a healthy feed is sub-second,
    /// so a minute means a stalled feed or a replay.
    pub stale_window_ms: i64,
    /// Move from the instrument's previous `last_price`, in percent, beyond which
    /// [`FLAG_PRICE_JUMP`](crate::model::quality::FLAG_PRICE_JUMP) is set. Default 10: NSE's widest dynamic band per step.
    pub price_jump_band_pct: u32,
    /// Largest believable last or depth quantity before [`FLAG_QUANTITY_INSANE`](crate::model::quality::FLAG_QUANTITY_INSANE).
    /// Default 10,000,000: above any exchange's freeze quantity for one order.
    pub quantity_max: u32,
    /// Instruments with per-instrument state (out-of-order, jump, reference data), per
    /// shard. Reference data takes a slot for every instrument PostgreSQL lists that
    /// routes to the shard, ticking or not, so this must cover the whole `instruments`
    /// table divided by the shards. Default 131,072: Kite lists ~100k instruments across
    /// all segments, so one shard holds them all; 2 × 131,072 slots × 48 B = 12 MiB.
    pub instruments_max: usize,
    /// Optional fields a clean tick carries: when the source format can carry one of
    /// these and a tick lacks it, the tick gets
    /// [`FLAG_MISSING_OPTIONAL`](crate::model::quality::FLAG_MISSING_OPTIONAL). Absent
    /// fields outside this set are information, not failure. Default: the platform's
    /// tick (`tradingsymbol`, `last_quantity`, `volume`) and `exchange_time` (only a
    /// Kite quote or LTP packet lacks it: the receive time then stands in).
    pub expected_fields: FieldSet,
}

/// A set of optional tick fields (`shard::parse::FIELD_*` bits), written in the config
/// as comma-separated names (`"tradingsymbol,volume"`) or a TOML array of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSet(pub u16);

impl FieldSet {
    /// The default [`ValidationConfig::expected_fields`].
    pub const PLATFORM_TICK: FieldSet =
        FieldSet(FIELD_TRADINGSYMBOL | FIELD_LAST_QUANTITY | FIELD_VOLUME | FIELD_EXCHANGE_TIME);

    /// Reads comma-separated field names; an empty text is the empty set.
    pub fn parse(text: &str) -> Result<FieldSet, String> {
        let mut bits = 0;
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            bits |= FieldSet::bit_of(name)?;
        }
        Ok(FieldSet(bits))
    }

    fn bit_of(name: &str) -> Result<u16, String> {
        FIELD_NAMES
            .iter()
            .find(|(_, known)| *known == name)
            .map(|(bit, _)| *bit)
            .ok_or_else(|| {
                let names: Vec<&str> = FIELD_NAMES.iter().map(|(_, n)| *n).collect();
                format!(
                    "unknown tick field `{name}` in validation.expected_fields; use comma-separated names from: {}",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for FieldSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = FIELD_NAMES
            .iter()
            .filter(|(bit, _)| self.0 & bit != 0)
            .map(|(_, name)| *name)
            .collect();
        f.write_str(&names.join(","))
    }
}

impl serde::Serialize for FieldSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FieldSet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Names;
        impl<'de> serde::de::Visitor<'de> for Names {
            type Value = FieldSet;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("comma-separated tick field names like \"tradingsymbol,volume\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<FieldSet, E> {
                FieldSet::parse(text).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<FieldSet, A::Error> {
                let mut bits = 0;
                while let Some(name) = seq.next_element::<String>()? {
                    bits |= FieldSet::bit_of(name.trim()).map_err(serde::de::Error::custom)?;
                }
                Ok(FieldSet(bits))
            }
        }
        deserializer.deserialize_any(Names)
    }
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            future_skew_ms: 2_000,
            stale_window_ms: 60_000,
            price_jump_band_pct: 10,
            quantity_max: 10_000_000,
            instruments_max: 1 << 17,
            expected_fields: FieldSet::PLATFORM_TICK,
        }
    }
}

/// A config value outside its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("validation setting `{key}` is {value}; use a value in {range} ({fix})")]
pub struct ValidationConfigError {
    /// The config key, without its section.
    pub key: &'static str,
    /// The refused value.
    pub value: i64,
    /// The accepted range, as text.
    pub range: &'static str,
    /// What the value means and a sensible one, for the operator.
    pub fix: &'static str,
}

impl ValidationConfig {
    /// Checks every value's range (the config loader calls this).
    pub fn check(&self) -> Result<(), ValidationConfigError> {
        let refuse = |key, value, range, fix| {
            Err(ValidationConfigError {
                key,
                value,
                range,
                fix,
            })
        };
        if self.future_skew_ms < 0 {
            return refuse(
                "future_skew_ms",
                self.future_skew_ms,
                "0..",
                "ms an exchange time may run ahead of our clock; the default is 2000",
            );
        }
        if self.stale_window_ms <= 0 {
            return refuse(
                "stale_window_ms",
                self.stale_window_ms,
                "1..",
                "ms an exchange time may lag our clock; the default is 60000",
            );
        }
        if self.price_jump_band_pct == 0 {
            return refuse(
                "price_jump_band_pct",
                0,
                "1..",
                "0% would flag every price change as a jump; the default is 10",
            );
        }
        if self.quantity_max == 0 {
            return refuse(
                "quantity_max",
                0,
                "1..",
                "0 would flag every traded quantity; the default is 10000000",
            );
        }
        if self.instruments_max == 0 || self.instruments_max > INSTRUMENTS_MAX_LIMIT {
            let value = i64::try_from(self.instruments_max).unwrap_or(i64::MAX);
            return refuse(
                "instruments_max",
                value,
                "1..=1048576",
                "instruments each shard tracks; the default is 131072",
            );
        }
        Ok(())
    }
}
