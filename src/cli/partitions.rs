//! `alphapt-storage partitions N`: the nats-server subject mapping that spreads the
//! instruments of `nats.subject_ticks` and `nats.subject_signals` over N partitions
//! (DESIGN §8, [`alphapt_storage::receive::partition`]), for the server's config file;
//! with `--token`, the partition each given instrument falls in.
//!
//! Stdout: the `mappings` block, then one `token <T> partition <P>` line per token.

use std::process::ExitCode;

use clap::Args;

use alphapt_storage::config::Config;
use alphapt_storage::quality::parse_tokens;
use alphapt_storage::receive::partition::{server_config, Mapping, PARTITIONS_MAX};

/// Flags of `partitions`.
#[derive(Args, Debug)]
pub struct PartitionsArgs {
    /// How many partitions (1 to 1024).
    count: u32,
    /// Instrument tokens, comma-separated: print the partition of each.
    #[arg(long, value_name = "A,B")]
    tokens: Option<String>,
}

/// Prints the mapping block and the partitions of the given tokens.
pub fn run(config: &Config, args: &PartitionsArgs) -> anyhow::Result<ExitCode> {
    if !(1..=PARTITIONS_MAX).contains(&args.count) {
        anyhow::bail!(
            "partitions {}: give a count from 1 to {PARTITIONS_MAX}",
            args.count
        );
    }
    let mut mappings = Vec::new();
    for (key, subject) in [
        ("nats.subject_ticks", &config.nats.subject_ticks),
        ("nats.subject_signals", &config.nats.subject_signals),
    ] {
        mappings
            .push(Mapping::new(subject, args.count).map_err(|e| anyhow::anyhow!("{key}: {e}"))?);
    }
    say!(
        "# nats-server config: instruments over {} partitions by token (DESIGN §8).",
        args.count
    );
    say!(
        "# The consumer of partition P filters {}.",
        mappings[0].filter_subject(0).replacen(".0.", ".P.", 1)
    );
    say!(raw server_config(&mappings));
    if let Some(tokens) = &args.tokens {
        let tokens = parse_tokens(tokens).map_err(|e| anyhow::anyhow!("--tokens: {e}"))?;
        for token in tokens {
            say!(
                "token {token} partition {}",
                alphapt_storage::receive::partition::partition_of(token, args.count)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
