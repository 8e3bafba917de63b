//! The next segment's file, zero-filled ahead of need by a journal-first inserter, so
//! the writer's group commits never write into unwritten extents.
//!
//! ```text
//!   inserter (between INSERTs):  Journal::spare_job ──► SpareJob::run (no lock held):
//!        spare.segment.tmp: set_len, posix_fallocate, zeros 1 MiB at a time, each synced
//!        ──► rename to spare.segment, sync the directory ──► Journal::spare_prepared
//!   writer (roll, lock held):    spare.segment ready? rename to segment-<seq>.spill,
//!        header, sync it and the directory; else create the segment as before
//! ```
//!
//! Why: on ext4 a `posix_fallocate`d block is an *unwritten* extent. The first write
//! into it changes the extent's state, so the `fdatasync` of every group commit has to
//! commit the file system's journal too, and that commit may wait for other files'
//! data (ClickHouse's parts, the NATS stream on the same disk). Five pairs at 100k
//! ticks/s (`perf/README.md`, 2026-12-05 midday): the syncs' p99 was lower with
//! zero-filled segments every time (median 8.5 against 14.3 ms). Zero-filling on the
//! writer's thread stalled it for the whole 64 MiB; here it is done elsewhere, in
//! synced steps of 1 MiB with a pause between them, so it never puts 64 MiB in the
//! disk's queue ahead of a group commit.
//!
//! The spare is not a segment: [`super::list_segments`] ignores its names, a crash
//! leaves at most a `.tmp` (deleted at the next open) or a whole spare (used, when its
//! length is the configured segment length). It is one segment of disk beyond
//! `spill.spill_bytes_max`. A failure to make one is logged once and turns spares off
//! for the journal's life: segments are then created as before.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A ready spare.
pub(super) const SPARE_NAME: &str = "spare.segment";
/// A spare being written.
pub(super) const SPARE_TEMP_NAME: &str = "spare.segment.tmp";
/// Zeros written (and synced) per step.
const STEP_BYTES: usize = 1 << 20;
/// Pause after each step: leaves the disk to the group commits.
const STEP_PAUSE: Duration = Duration::from_millis(2);

/// Where the journal's spare stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SpareState {
    /// None ready, none being made: the next [`super::Journal::spare_job`] hands one out.
    Missing,
    /// An inserter is making it.
    Preparing,
    /// `spare.segment` is whole: the next roll takes it.
    Ready,
    /// Making one failed; segments are created as before.
    Off,
}

/// One spare to make, outside the journal's lock.
#[derive(Clone, Debug)]
pub struct SpareJob {
    pub(super) dir: PathBuf,
    pub(super) bytes: u64,
}

impl SpareJob {
    /// Writes `spare.segment`: the whole length allocated and zero-filled, synced, then
    /// renamed into place and the directory synced. `go_on` is asked before each step:
    /// false (a drain began) stops and removes the half-made file, `Ok(false)`.
    pub fn run(&self, go_on: impl Fn() -> bool) -> std::io::Result<bool> {
        let temp = self.dir.join(SPARE_TEMP_NAME);
        let _ = fs::remove_file(&temp);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&temp)?;
        let made = fill(&file, self.bytes, go_on).and_then(|whole| {
            if whole {
                fs::rename(&temp, self.dir.join(SPARE_NAME))?;
                super::sync_dir(&self.dir)?;
            }
            Ok(whole)
        });
        if made.as_ref().map_or(true, |whole| !whole) {
            let _ = fs::remove_file(&temp);
        }
        made
    }
}

fn fill(file: &File, bytes: u64, go_on: impl Fn() -> bool) -> std::io::Result<bool> {
    file.set_len(bytes)?;
    // Reserved first: a full disk fails here, before any zero is written.
    super::preallocate(file, bytes)?;
    let zeros = vec![0u8; STEP_BYTES];
    let mut at = 0u64;
    while at < bytes {
        if !go_on() {
            return Ok(false);
        }
        let n = (bytes - at).min(STEP_BYTES as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        file.sync_data()?;
        at += n as u64;
        std::thread::sleep(STEP_PAUSE);
    }
    file.sync_all()?;
    Ok(true)
}

/// At open: a half-made spare goes; a whole one of the configured length is kept.
pub(super) fn state_at_open(dir: &Path, segment_bytes: u64) -> SpareState {
    let _ = fs::remove_file(dir.join(SPARE_TEMP_NAME));
    let spare = dir.join(SPARE_NAME);
    match fs::metadata(&spare) {
        Ok(meta) if meta.is_file() && meta.len() == segment_bytes => SpareState::Ready,
        Ok(_) => {
            // Another segment length (the setting changed) or not a file: not ours to use.
            let _ = fs::remove_file(&spare);
            SpareState::Missing
        }
        Err(_) => SpareState::Missing,
    }
}

/// Moves the ready spare to `path` (the new segment's name) and opens it; `None`
/// when it is gone or not the right length (the caller creates the segment as before).
pub(super) fn take(dir: &Path, path: &Path, segment_bytes: u64) -> Option<File> {
    let spare = dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&spare)
        .ok()?;
    if file.metadata().ok()?.len() != segment_bytes {
        let _ = fs::remove_file(&spare);
        return None;
    }
    fs::rename(&spare, path).ok()?;
    Some(file)
}
