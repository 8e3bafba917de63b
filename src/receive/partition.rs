//! Subject partitions (DESIGN §8): nats-server's own subject mapping spreads the
//! instruments over N partitions, so several appliances can share one stream with no
//! coordination of their own. This module is the appliance's copy of the server's
//! partition function and writes the mapping an operator puts in the server config.
//!
//! ```text
//!   publisher ── market.ticks.NSE.408065 ──► nats-server, mappings:
//!       market.ticks.*.*  →  market.ticks.{{partition(12,2)}}.{{wildcard(1)}}.{{wildcard(2)}}
//!   stream (subjects market.ticks.>) ◄── market.ticks.7.NSE.408065
//!   the consumer of partition 7 filters market.ticks.7.*.*
//! ```
//!
//! The server hashes the chosen source tokens with 32-bit FNV-1a and takes the rest
//! modulo N (nats-server's subject transform, 2.8 and later). Here the one token hashed
//! is the instrument token as it is written in the subject, its decimal digits, so
//! [`partition_of`] answers from the `u32` alone and agrees with the server for every
//! token a publisher writes without leading zeros (`tests/partitions.rs` checks this
//! against a real server). Routing is unchanged: the token is still the subject's
//! last token, and the mapped subject keeps per-instrument order, because one
//! instrument always lands in one partition.

/// Most partitions a mapping may have: the partition is one subject token, and a
/// consumer per partition is a server object; more would be a misconfiguration.
pub const PARTITIONS_MAX: u32 = 1024;

/// 32-bit FNV-1a, as nats-server hashes a partition key.
#[must_use]
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u32::from(b)).wrapping_mul(PRIME))
}

/// The partition nats-server's `partition(partitions, …)` gives an instrument whose
/// subject token is `token` written in decimal. `partitions` must be at least 1.
#[must_use]
pub fn partition_of(token: u32, partitions: u32) -> u32 {
    debug_assert!(partitions >= 1);
    let mut digits = [0u8; 10];
    let mut at = digits.len();
    let mut rest = token;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    fnv1a32(&digits[at..]) % partitions.max(1)
}

/// The partition mapping of one subject family, such as `market.ticks.>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// The subject without its trailing `.>`: `market.ticks`.
    prefix: String,
    /// How many partitions: 1 to [`PARTITIONS_MAX`].
    partitions: u32,
}

impl Mapping {
    /// The mapping of `subject` (a family ending in `.>`, as `nats.subject_ticks` is)
    /// over `partitions` partitions. An error names what is wrong.
    pub fn new(subject: &str, partitions: u32) -> Result<Mapping, String> {
        let Some(prefix) = subject.strip_suffix(".>") else {
            return Err(format!(
                "subject {subject:?} must end in \".>\" (as market.ticks.> does): the mapping takes <prefix>.<exchange>.<token>"
            ));
        };
        if prefix.is_empty()
            || prefix
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t']))
        {
            return Err(format!(
                "subject {subject:?}: the part before \".>\" must be literal tokens (no wildcards, spaces or empty tokens)"
            ));
        }
        if !(1..=PARTITIONS_MAX).contains(&partitions) {
            return Err(format!(
                "{partitions} partitions: give 1 to {PARTITIONS_MAX}"
            ));
        }
        Ok(Mapping {
            prefix: prefix.to_owned(),
            partitions,
        })
    }

    /// How many partitions.
    #[must_use]
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The subjects publishers use: `market.ticks.*.*`.
    #[must_use]
    pub fn source(&self) -> String {
        format!("{}.*.*", self.prefix)
    }

    /// What the server maps them to: the partition inserted after the prefix, the
    /// exchange and the token kept.
    #[must_use]
    pub fn destination(&self) -> String {
        format!(
            "{}.{{{{partition({},2)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
            self.prefix, self.partitions
        )
    }

    /// The filter subject of partition `id`'s consumer: `market.ticks.7.*.*`.
    #[must_use]
    pub fn filter_subject(&self, id: u32) -> String {
        format!("{}.{id}.*.*", self.prefix)
    }

    /// The subject an instrument's messages are stored under after the mapping.
    #[must_use]
    pub fn mapped_subject(&self, exchange: &str, token: u32) -> String {
        format!(
            "{}.{}.{exchange}.{token}",
            self.prefix,
            partition_of(token, self.partitions)
        )
    }

    /// The `mappings` entry for the nats-server config file (its own syntax).
    #[must_use]
    pub fn server_entry(&self) -> String {
        format!("  \"{}\": \"{}\"", self.source(), self.destination())
    }
}

/// The nats-server config block for `mappings`, one entry per family.
#[must_use]
pub fn server_config(mappings: &[Mapping]) -> String {
    let mut out = String::from("mappings = {\n");
    for mapping in mappings {
        out.push_str(&mapping.server_entry());
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn the_partition_is_the_hash_of_the_decimal_token() {
        for token in [0, 7, 408_065, 256_265, u32::MAX] {
            let text = token.to_string();
            assert_eq!(partition_of(token, 12), fnv1a32(text.as_bytes()) % 12);
            assert_eq!(partition_of(token, 1), 0);
        }
        // Spread: 2,000 tokens over 12 partitions, none empty or more than twice its share.
        let mut counts = [0u32; 12];
        for token in (0..2_000u32).map(|i| 256_265 + 7 * i) {
            counts[partition_of(token, 12) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| c > 0 && c < 2 * 2_000 / 12),
            "{counts:?}"
        );
    }

    #[test]
    fn a_mapping_writes_the_server_entry_and_the_filters() {
        let m = Mapping::new("market.ticks.>", 12).unwrap();
        assert_eq!(m.source(), "market.ticks.*.*");
        assert_eq!(
            m.destination(),
            "market.ticks.{{partition(12,2)}}.{{wildcard(1)}}.{{wildcard(2)}}"
        );
        assert_eq!(m.filter_subject(7), "market.ticks.7.*.*");
        let p = partition_of(408_065, 12);
        assert_eq!(
            m.mapped_subject("NSE", 408_065),
            format!("market.ticks.{p}.NSE.408065")
        );
        assert_eq!(
            server_config(&[m]),
            "mappings = {\n  \"market.ticks.*.*\": \"market.ticks.{{partition(12,2)}}.{{wildcard(1)}}.{{wildcard(2)}}\"\n}\n"
        );
    }

    #[test]
    fn bad_mappings_are_refused_saying_why() {
        for (subject, partitions, says) in [
            ("market.ticks", 12, "must end in"),
            ("market.*.>", 12, "literal tokens"),
            (".>", 12, "literal tokens"),
            ("market..ticks.>", 12, "literal tokens"),
            ("market.ticks.>", 0, "1 to 1024"),
            ("market.ticks.>", 1025, "1 to 1024"),
        ] {
            let error = Mapping::new(subject, partitions).unwrap_err();
            assert!(error.contains(says), "{subject} {partitions}: {error}");
        }
    }
}
