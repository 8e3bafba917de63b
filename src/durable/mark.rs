//! The local durable mark of an AckNone consumer: what an ack floor is to AckAll, kept
//! in a small file beside the spill instead of on the server.
//!
//! ```text
//!   receiver (AckNone) ── watermark w moved, ≥ MARK_INTERVAL since the last write ──►
//!        <spill.dir>/mark-<database>-<stream>-<durable>  "… through=w …" (temp + rename)
//!   next start ── read: same database, stream, durable, creation time, CRC good ──► floor w
//!              └─ anything else (absent, torn, another stream) ──► floor 0 (whole store)
//! ```
//!
//! Why it may stand in for an ack floor: it is written only with the receiver's durable
//! watermark, so every sequence at or below it is stored or journaled, and the start
//! replays the journal into the store before it reads the resume point. The store is
//! read above it as above an ack floor, so nothing is skipped that is not stored. The
//! database is part of its identity: pointed at another database, the appliance reads
//! that one whole (an ack floor on the server could not tell the two apart).
//!
//! Why no fsync: a mark that is lost or older than the truth only makes the next
//! start read more of the store (slower, never wrong), and a torn or empty file fails
//! its CRC and counts as absent. The rename keeps a crash from leaving half a file
//! under the name. So a write is three syscalls once a second, off the message path.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Least time between two writes of the mark.
pub const MARK_INTERVAL: Duration = Duration::from_secs(1);

/// The mark file of one stream and durable under the spill directory.
#[derive(Clone, Debug)]
pub struct LocalMark {
    path: PathBuf,
    database: String,
    stream: String,
    durable: String,
}

impl LocalMark {
    /// The mark of `stream` read by `durable` into `database`, in `dir` (the spill
    /// directory).
    pub fn new(dir: &Path, database: &str, stream: &str, durable: &str) -> LocalMark {
        let name = format!(
            "mark-{}-{}-{}",
            file_safe(database),
            file_safe(stream),
            file_safe(durable)
        );
        LocalMark {
            path: dir.join(name),
            database: database.to_owned(),
            stream: stream.to_owned(),
            durable: durable.to_owned(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence the mark holds for the stream created at `created_ms`; 0 when the
    /// file is absent, unreadable, torn, or written for another stream or creation
    /// (a stream deleted and created again restarts its sequences).
    pub fn read(&self, created_ms: i64) -> u64 {
        let Ok(text) = fs::read_to_string(&self.path) else {
            return 0;
        };
        match self.parse(&text) {
            Some((created, through)) if created == created_ms => through,
            Some(_) => {
                tracing::info!(path = %self.path.display(),
                    "Local durable mark is of an earlier stream of this name; reading the whole store");
                0
            }
            None => {
                tracing::warn!(path = %self.path.display(),
                    "Local durable mark is damaged; reading the whole store (it is rewritten as delivery goes on)");
                0
            }
        }
    }

    /// Writes `through` as the mark of the stream created at `created_ms`.
    ///
    /// # Errors
    ///
    /// The file could not be written or renamed (the caller logs it: a missing mark
    /// only makes the next start slower).
    pub fn write(&self, created_ms: i64, through: u64) -> std::io::Result<()> {
        let line = self.body(created_ms, through);
        let crc = crc32c::crc32c(line.as_bytes());
        let temp = self.path.with_extension("tmp");
        let mut file = fs::File::create(&temp)?;
        writeln!(file, "{line} crc={crc:08x}")?;
        drop(file);
        fs::rename(&temp, &self.path)
    }

    fn body(&self, created_ms: i64, through: u64) -> String {
        format!(
            "alphapt-mark v1 database={} stream={} durable={} created_ms={created_ms} through={through}",
            self.database, self.stream, self.durable
        )
    }

    /// `(created_ms, through)` of a whole, checked line of this stream and durable.
    fn parse(&self, text: &str) -> Option<(i64, u64)> {
        let line = text.strip_suffix('\n')?;
        let (body, crc) = line.rsplit_once(" crc=")?;
        if u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut created = None;
        let mut through = None;
        let mut fields = body.split(' ');
        if fields.next()? != "alphapt-mark" || fields.next()? != "v1" {
            return None;
        }
        for field in fields {
            let (key, value) = field.split_once('=')?;
            match key {
                "database" if value == self.database => {}
                "stream" if value == self.stream => {}
                "durable" if value == self.durable => {}
                "created_ms" => created = Some(value.parse().ok()?),
                "through" => through = Some(value.parse().ok()?),
                _ => return None,
            }
        }
        Some((created?, through?))
    }
}

/// Stream and durable names as file-name parts: NATS already forbids separators and
/// wildcards in them; anything else unusual becomes `_`.
fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let suffix: u64 = rand::random();
        let dir = std::env::temp_dir().join(format!("alphapt-mark-{tag}-{suffix:016x}"));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_written_mark_reads_back_for_its_stream_only() {
        let dir = temp_dir("rt");
        let mark = LocalMark::new(&dir, "alphapt", "MARKET_TICKS", "alphapt-storage");
        assert_eq!(mark.read(1_700), 0, "absent: whole store");
        mark.write(1_700, 123_456).unwrap();
        assert_eq!(mark.read(1_700), 123_456);
        mark.write(1_700, 200_000).unwrap();
        assert_eq!(mark.read(1_700), 200_000, "rewritten in place");
        assert_eq!(mark.read(1_701), 0, "a stream created again starts over");
        // Another durable, stream or database has a file of its own.
        for other in [
            LocalMark::new(&dir, "alphapt", "MARKET_TICKS", "other"),
            LocalMark::new(&dir, "alphapt", "OTHER", "alphapt-storage"),
            LocalMark::new(&dir, "fresh", "MARKET_TICKS", "alphapt-storage"),
        ] {
            assert_eq!(other.read(1_700), 0);
            assert_ne!(other.path(), mark.path());
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_damaged_or_foreign_mark_counts_as_absent() {
        let dir = temp_dir("bad");
        let mark = LocalMark::new(&dir, "db", "S", "d");
        mark.write(5, 42).unwrap();
        let good = fs::read_to_string(mark.path()).unwrap();
        let mut cases: Vec<String> = vec![
            String::new(),
            "garbage".into(),
            good.trim_end().to_owned(),
            good.replace("through=42", "through=43"),
            good.replace("stream=S", "stream=T"),
            good.replace("durable=d", "durable=e"),
            good.replace("database=db", "database=dc"),
        ];
        // Every truncation of the line.
        cases.extend((0..good.len()).map(|n| good[..n].to_owned()));
        for text in cases {
            fs::write(mark.path(), &text).unwrap();
            assert_eq!(mark.read(5), 0, "{text:?}");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn odd_names_make_plain_file_names() {
        let mark = LocalMark::new(Path::new("/x"), "db", "A.B/C", "d e");
        assert_eq!(mark.path(), Path::new("/x/mark-db-A_B_C-d_e"));
    }
}
