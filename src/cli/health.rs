//! `alphapt-storage health [--json]`.

use std::process::ExitCode;

use alphapt_storage::config::Config;
use alphapt_storage::health::{self, Status};

/// Probes every component, prints a table or JSON, and returns 0/1/2.
pub fn run(config: &Config, json: bool) -> anyhow::Result<ExitCode> {
    let report = health::check(config, &super::clickhouse_options(config, false));
    if json {
        say!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        say!(
            "{:<11} {:<9} {:>10}  {:<14} detail",
            "component",
            "status",
            "latency",
            "version"
        );
        for c in &report.components {
            let status = match c.status {
                Status::Up => "up",
                Status::Degraded => "degraded",
                Status::Down => "down",
            };
            say!(
                "{:<11} {:<9} {:>7.1} ms  {:<14} {}",
                c.name,
                status,
                c.latency_ms,
                c.version.as_deref().unwrap_or("-"),
                c.detail
            );
            for lag in &c.consumers {
                let state = if !lag.exists {
                    "missing".to_owned()
                } else {
                    format!(
                        "{} pending, {} unacked, ack floor {}{}",
                        lag.pending,
                        lag.unacked,
                        lag.ack_floor,
                        if lag.waiting > 0 { ", served" } else { "" }
                    )
                };
                say!("  consumer {} on {}: {state}", lag.durable, lag.stream);
            }
            for shard in &c.shards {
                let status = match shard.status {
                    Status::Up => "up",
                    Status::Degraded => "degraded",
                    Status::Down => "down",
                };
                say!(
                    "  shard {} {}: {status}, {:.1} ms, {} ({})",
                    shard.shard,
                    shard.server,
                    shard.latency_ms,
                    shard.version.as_deref().unwrap_or("-"),
                    shard.detail
                );
            }
        }
    }
    Ok(ExitCode::from(report.exit_code()))
}
