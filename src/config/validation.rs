//! The `[validation]` section: thresholds of the tick checks (`shard::validate` applies
//! them; the flags themselves are `model::quality`).

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
}

impl Default for ValidationConfig {
    fn default() -> Self {
        ValidationConfig {
            future_skew_ms: 2_000,
            stale_window_ms: 60_000,
            price_jump_band_pct: 10,
            quantity_max: 10_000_000,
            instruments_max: 1 << 17,
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
