//! The partition function against a real nats-server: a private server runs the
//! `mappings` block that `alphapt-storage partitions 12` prints, 2,000 instruments are
//! published under `market.ticks.<exchange>.<token>`, and every message arrives under
//! `market.ticks.<p>.<exchange>.<token>` with the `p` the appliance computes
//! (`receive::partition::partition_of`), in the order it was published.

mod common;

use std::time::{Duration, Instant};

use alphapt_storage::receive::nats::wire::ServerOp;
use alphapt_storage::receive::partition::{partition_of, Mapping};
use common::e2e::*;

const PARTITIONS: u32 = 12;

#[test]
fn nats_server_puts_each_instrument_in_the_partition_the_appliance_computes() {
    let printed = binary(&["partitions".into(), PARTITIONS.to_string()])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let config = String::from_utf8(printed.stdout).unwrap();
    assert!(config.contains("mappings = {"), "{config}");
    let server = PrivateNats::start_with_config(&config);

    let mut sub = server.connect().unwrap();
    sub.subscribe("market.ticks.>", None).unwrap();
    sub.subscribe("strategy.signals.>", None).unwrap();
    sub.round_trip(Duration::from_secs(5)).unwrap();

    // Tokens as a feed has them (steps of 7 from a real NSE token), plus the edges.
    let mut tokens: Vec<u32> = (0..2_000u32).map(|i| 256_265 + 7 * i).collect();
    tokens.extend([0, 1, 9, 10, 99_999, u32::MAX]);
    let mut publisher = server.connect().unwrap();
    for token in &tokens {
        let exchange = if token % 2 == 0 { "NSE" } else { "BSE" };
        publisher
            .publish(
                format!("market.ticks.{exchange}.{token}").as_bytes(),
                None,
                b"{}",
            )
            .unwrap();
    }
    publisher
        .publish(b"strategy.signals.momentum.408065", None, b"{}")
        .unwrap();
    publisher.flush().unwrap();

    let mut subjects = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while subjects.len() < tokens.len() + 1 && Instant::now() < deadline {
        sub.poll(Duration::from_millis(50), |op| {
            if let ServerOp::Msg(msg) = op {
                subjects.push(String::from_utf8_lossy(msg.subject).into_owned());
            }
        })
        .unwrap();
    }
    assert_eq!(subjects.len(), tokens.len() + 1, "messages arrived");

    let ticks = Mapping::new("market.ticks.>", PARTITIONS).unwrap();
    let mut used = vec![0u32; PARTITIONS as usize];
    for (subject, token) in subjects.iter().zip(&tokens) {
        let exchange = if token % 2 == 0 { "NSE" } else { "BSE" };
        assert_eq!(
            subject,
            &ticks.mapped_subject(exchange, *token),
            "token {token}"
        );
        used[partition_of(*token, PARTITIONS) as usize] += 1;
    }
    assert!(
        used.iter().all(|&n| n > 0),
        "every partition used: {used:?}"
    );
    let signals = Mapping::new("strategy.signals.>", PARTITIONS).unwrap();
    assert_eq!(
        subjects.last().unwrap(),
        &signals.mapped_subject("momentum", 408_065)
    );
}

#[test]
fn a_bad_partition_count_is_refused_with_one_line() {
    for (count, says) in [("0", "1 to 1024"), ("5000", "1 to 1024"), ("x", "invalid")] {
        let out = binary(&["partitions".into(), count.into()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{count}: {stderr}");
        assert!(stderr.contains(says), "{count}: {stderr}");
    }
}
