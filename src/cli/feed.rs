//! `alphapt-storage feed`: publish synthetic ticks to NATS (load generator).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use alphapt_storage::config::Config;
use alphapt_storage::feed::{self, FeedOptions};
use alphapt_storage::receive::nats::{JetStream, NatsConn};

/// Wire format of the published ticks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// The platform's JSON ticks.
    Json,
    /// Kite binary frames, one full-mode packet (184 bytes) each.
    Kite,
}

/// Flags of `feed`.
#[derive(clap::Args, Debug)]
pub struct FeedArgs {
    /// Messages a second, open loop (scheduled from the start); 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Messages to publish, good and bad.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Instruments to cycle through.
    #[arg(long, default_value_t = 100)]
    instruments: usize,
    /// Wire format.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Fraction of deliberately bad messages, in [0, 1].
    #[arg(long, default_value_t = 0.0)]
    bad_ratio: f64,
    /// Publish with core NATS (no PubAcks) instead of JetStream.
    #[arg(long)]
    core: bool,
    /// JetStream publishes awaiting their PubAck at most.
    #[arg(long, default_value_t = 4096)]
    window: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Delete the stream (and its consumers) first, for a benchmark from empty.
    #[arg(long)]
    fresh_stream: bool,
}

/// Ensures the ticks stream, publishes, prints the summary; exit 1 when any PubAck failed.
pub fn run(config: &Config, args: &FeedArgs) -> anyhow::Result<ExitCode> {
    let nats = &config.nats;
    let prefix = nats.subject_ticks.strip_suffix(".>").with_context(|| {
        format!(
            "nats.subject_ticks {:?} must end in .> for feed to publish below it",
            nats.subject_ticks
        )
    })?;
    let options = FeedOptions {
        rate: args.rate,
        count: args.count,
        instruments: args.instruments,
        bad_ratio: args.bad_ratio,
        core: args.core,
        kite: args.format == Format::Kite,
        window: args.window,
        subject_prefix: prefix.to_owned(),
        seed: args.seed,
        ack_timeout: Duration::from_secs(10),
    };
    options.validate()?;
    let timeout = Duration::from_secs(5);
    let tls = nats.tls_client().context("nats.tls")?;
    let mut conn =
        NatsConn::connect_with(&nats.url, timeout, tls.as_ref()).context("connecting to NATS")?;
    if args.fresh_stream {
        let deleted = JetStream::new(timeout)
            .delete_stream(&mut conn, &nats.stream_ticks)
            .with_context(|| format!("deleting stream {}", nats.stream_ticks))?;
        tracing::info!(stream = %nats.stream_ticks, deleted, "Starting from an empty stream");
    }
    let (info, created) = JetStream::new(timeout)
        .ensure_stream(
            &mut conn,
            &nats.stream_ticks,
            &[nats.subject_ticks.as_str()],
            nats.stream_max_bytes,
        )
        .with_context(|| format!("ensuring stream {}", nats.stream_ticks))?;
    tracing::info!(
        stream = %info.name,
        created,
        messages = info.messages,
        last_seq = info.last_seq,
        "Stream ready"
    );
    let report = feed::run(&mut conn, &options).context("publishing ticks")?;
    say!("{}", report.summary_line());
    Ok(if report.errors == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
