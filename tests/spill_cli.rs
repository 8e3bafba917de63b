//! `spill verify` and `spill inspect` through the binary: a journal written with the
//! library is clean, then one flipped payload byte makes `verify` exit 1 naming the
//! record, while `inspect` (text and JSON) still lists the good records, and neither
//! command changes a byte of the journal.

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use alphapt_storage::spill::{
    writer_dir, Journal, JournalConfig, RecordHeader, RecordPos, RecordTable,
};

/// A directory under the system temp dir with a random suffix, removed on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn temp_dir() -> TempDir {
    let suffix: u64 = rand::random();
    let path = std::env::temp_dir().join(format!("alphapt-spill-cli-{suffix:016x}"));
    fs::create_dir_all(&path).unwrap();
    TempDir(path)
}

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_alphapt-storage"))
        .arg("--set")
        .arg(format!("spill.dir={}", root.display()))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn header(i: u64) -> RecordHeader {
    RecordHeader {
        table: RecordTable::MarketTicks,
        lz4: true,
        shard: 1,
        rows: 50,
        seq_first: i * 50 + 1,
        seq_last: i * 50 + 50,
        durable_through: 0,
        schema_hash: 7,
        received_min_ms: 1_700_000_000_000,
    }
}

/// Writes three 1000-byte records into `<root>/writer-0` and returns their positions.
fn write_journal(root: &Path) -> Vec<RecordPos> {
    let config = JournalConfig {
        dir: writer_dir(root, 0),
        segment_bytes: 1 << 20,
        bytes_max: 8 << 20,
    };
    let (mut journal, _) = Journal::open(&config).unwrap();
    let positions = (0..3)
        .map(|i| journal.append(&header(i), &[i as u8 + 1; 1000]).unwrap())
        .collect();
    journal.sync().unwrap();
    positions
}

#[test]
fn verify_names_a_corrupt_record_and_inspect_still_lists_the_good_ones() {
    let tmp = temp_dir();
    let positions = write_journal(&tmp.0);
    let out = run(&tmp.0, &["spill", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("clean"), "{}", stdout(&out));

    // Flip one byte in the middle record's payload.
    let segment = writer_dir(&tmp.0, 0).join("segment-00000000000000000001.spill");
    let at = positions[1].offset + 72 + 10;
    let mut file = fs::OpenOptions::new().write(true).open(&segment).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[0xff]).unwrap();
    drop(file);
    let before = fs::read(&segment).unwrap();

    let out = run(&tmp.0, &["spill", "verify"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("corrupt record"), "{text}");
    assert!(
        text.contains("segment-00000000000000000001.spill"),
        "{text}"
    );
    assert!(
        text.contains(&format!("at offset {}", positions[1].offset)),
        "{text}"
    );
    assert!(text.contains("payload CRC mismatch"), "{text}");

    let out = run(&tmp.0, &["spill", "inspect", "--records"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&positions[0].to_string()), "{text}");
    assert!(text.contains(&positions[2].to_string()), "{text}");
    assert!(!text.contains(&positions[1].to_string()), "{text}");
    assert!(
        text.contains("2 record(s), 2 pending, 1 corrupt record(s)"),
        "{text}"
    );

    let out = run(&tmp.0, &["spill", "inspect", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let segment_json = &json["journals"][0]["segments"][0];
    assert_eq!(segment_json["records"], 2);
    assert_eq!(segment_json["pending"], 2);
    assert_eq!(segment_json["corrupt"], 1);
    assert_eq!(segment_json["stream_seq_first"], 1);
    assert_eq!(segment_json["stream_seq_last"], 150);

    assert_eq!(
        fs::read(&segment).unwrap(),
        before,
        "the commands are read-only"
    );
}

#[test]
fn an_empty_spill_dir_is_clean() {
    let tmp = temp_dir();
    let out = run(&tmp.0.join("never-created"), &["spill", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = run(&tmp.0, &["spill", "inspect"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("no spill journals"),
        "{}",
        stdout(&out)
    );
}
