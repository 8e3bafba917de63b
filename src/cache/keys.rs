//! Key names: `{prefix}tick:{token}`, `…:history`, `ohlc:{token}:{tf}`,
//! `signal:{strategy}:{token}`, `instrument:{token}`. With `redis.hash_tags` the token
//! is written in braces (`tick:{256265}`), so Redis Cluster puts every key of one
//! instrument in one slot and a reader can fetch them in one pipeline.

use std::io::Write as _;

/// The key scheme of one appliance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    /// Put before every key.
    pub prefix: String,
    /// Braces around the token.
    pub hash_tags: bool,
}

impl Keys {
    /// From `[redis]`.
    pub fn from_config(config: &crate::config::RedisConfig) -> Keys {
        Keys {
            prefix: config.key_prefix.clone(),
            hash_tags: config.hash_tags,
        }
    }

    fn write(&self, out: &mut Vec<u8>, kind: &str, middle: Option<&[u8]>, token: u32, tail: &str) {
        out.clear();
        out.extend_from_slice(self.prefix.as_bytes());
        out.extend_from_slice(kind.as_bytes());
        out.push(b':');
        if let Some(middle) = middle {
            out.extend_from_slice(middle);
            out.push(b':');
        }
        // Writing into a Vec cannot fail.
        let _ = if self.hash_tags {
            write!(out, "{{{token}}}")
        } else {
            write!(out, "{token}")
        };
        out.extend_from_slice(tail.as_bytes());
    }

    /// `tick:{token}` into `out` (cleared first).
    pub fn tick_into(&self, out: &mut Vec<u8>, token: u32) {
        self.write(out, "tick", None, token, "");
    }

    /// `tick:{token}:history` into `out`.
    pub fn history_into(&self, out: &mut Vec<u8>, token: u32) {
        self.write(out, "tick", None, token, ":history");
    }

    /// `ohlc:{token}:{label}` into `out`.
    pub fn ohlc_into(&self, out: &mut Vec<u8>, token: u32, label: &str) {
        self.write(out, "ohlc", None, token, "");
        out.push(b':');
        out.extend_from_slice(label.as_bytes());
    }

    /// `signal:{strategy}:{token}` into `out`.
    pub fn signal_into(&self, out: &mut Vec<u8>, strategy: &[u8], token: u32) {
        self.write(out, "signal", Some(strategy), token, "");
    }

    /// `instrument:{token}` into `out`.
    pub fn instrument_into(&self, out: &mut Vec<u8>, token: u32) {
        self.write(out, "instrument", None, token, "");
    }

    /// A key as text, for readers and tests.
    pub fn text(&self, fill: impl FnOnce(&Keys, &mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        fill(self, &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// `tick:{token}`.
    pub fn tick(&self, token: u32) -> String {
        self.text(|k, o| k.tick_into(o, token))
    }

    /// `tick:{token}:history`.
    pub fn history(&self, token: u32) -> String {
        self.text(|k, o| k.history_into(o, token))
    }

    /// `ohlc:{token}:{label}`.
    pub fn ohlc(&self, token: u32, label: &str) -> String {
        self.text(|k, o| k.ohlc_into(o, token, label))
    }

    /// `signal:{strategy}:{token}`.
    pub fn signal(&self, strategy: &str, token: u32) -> String {
        self.text(|k, o| k.signal_into(o, strategy.as_bytes(), token))
    }

    /// `instrument:{token}`.
    pub fn instrument(&self, token: u32) -> String {
        self.text(|k, o| k.instrument_into(o, token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_take_the_prefix_and_optional_hash_tags() {
        let plain = Keys {
            prefix: "t1:".into(),
            hash_tags: false,
        };
        assert_eq!(plain.tick(256265), "t1:tick:256265");
        assert_eq!(plain.history(5), "t1:tick:5:history");
        assert_eq!(plain.ohlc(5, "15m"), "t1:ohlc:5:15m");
        assert_eq!(plain.signal("mom", 5), "t1:signal:mom:5");
        assert_eq!(plain.instrument(5), "t1:instrument:5");
        let tagged = Keys {
            prefix: String::new(),
            hash_tags: true,
        };
        assert_eq!(tagged.tick(5), "tick:{5}");
        assert_eq!(tagged.history(5), "tick:{5}:history");
        assert_eq!(tagged.ohlc(5, "1m"), "ohlc:{5}:1m");
        assert_eq!(tagged.signal("mom", 5), "signal:mom:{5}");
    }
}
