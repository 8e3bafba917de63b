//! Commands encoded straight into one reusable buffer in RESP, Redis's wire format
//! (`*argc\r\n` then `$len\r\narg\r\n` per argument), sent as one pipeline with
//! `req_packed_commands`: no per-command allocation once the buffer has grown.
//!
//! Numbers are written by hand (`arg_u64`, `arg_i64`, `arg_price`, `arg_score`, and
//! the headers): `core::fmt` was ~15% of the appliance's CPU in the cache thread
//! alone (`perf record` of `perf/e2e.sh SOURCE=synthetic`: float formatting, the
//! `Display` of each length header). The text is the same as `format!("{}", v)`'s.

use std::io::Write as _;

use crate::model::json::{write_i64, write_price_f64_text, write_score, write_u64};
use crate::model::Price;

/// A pipeline being built.
#[derive(Default)]
pub struct Pipeline {
    buf: Vec<u8>,
    scratch: Vec<u8>,
    commands: usize,
    /// Where each command starts in `buf` (a cluster splits the pipeline by them).
    starts: Vec<usize>,
    /// Arguments the open command still expects: a miscount would desynchronise
    /// the connection, so every command checks it.
    missing: usize,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    /// Starts a command of `argc` arguments (the command name included).
    pub fn command(&mut self, argc: usize) -> &mut Pipeline {
        assert_eq!(self.missing, 0, "the previous command lacks arguments");
        self.missing = argc;
        self.starts.push(self.buf.len());
        self.buf.push(b'*');
        write_u64(&mut self.buf, argc as u64);
        self.buf.extend_from_slice(b"\r\n");
        self.commands += 1;
        self
    }

    /// One argument.
    pub fn arg(&mut self, bytes: &[u8]) -> &mut Pipeline {
        assert!(
            self.missing > 0,
            "more arguments than the command announced"
        );
        self.missing -= 1;
        self.buf.push(b'$');
        write_u64(&mut self.buf, bytes.len() as u64);
        self.buf.extend_from_slice(b"\r\n");
        self.buf.extend_from_slice(bytes);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// One argument, written by `write` into a reused scratch buffer.
    pub fn arg_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> &mut Pipeline {
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        write(&mut scratch);
        self.arg(&scratch);
        self.scratch = scratch;
        self
    }

    /// One argument, formatted (off the per-tick path: the writers below are cheaper).
    pub fn arg_fmt(&mut self, args: std::fmt::Arguments<'_>) -> &mut Pipeline {
        self.arg_with(|out| {
            let _ = out.write_fmt(args);
        })
    }

    /// One argument: an unsigned integer in decimal.
    pub fn arg_u64(&mut self, value: u64) -> &mut Pipeline {
        self.arg_with(|out| write_u64(out, value))
    }

    /// One argument: a signed integer in decimal.
    pub fn arg_i64(&mut self, value: i64) -> &mut Pipeline {
        self.arg_with(|out| write_i64(out, value))
    }

    /// One argument: a price as `format!("{}", price.to_f64())` prints it.
    pub fn arg_price(&mut self, price: Price) -> &mut Pipeline {
        self.arg_with(|out| write_price_f64_text(out, price))
    }

    /// One argument: a quality score as `format!("{}", score)` prints it.
    pub fn arg_score(&mut self, score: f32) -> &mut Pipeline {
        self.arg_with(|out| write_score(out, score))
    }

    /// One argument: Unix ms as ISO-8601 UTC with milliseconds.
    pub fn arg_iso(&mut self, ms: i64) -> &mut Pipeline {
        self.arg_with(|out| crate::model::json::write_iso8601_ms(out, ms))
    }

    /// Commands so far.
    pub fn commands(&self) -> usize {
        self.commands
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        assert_eq!(self.missing, 0, "the last command lacks arguments");
        &self.buf
    }

    /// Where each command starts in [`Pipeline::bytes`].
    pub fn starts(&self) -> &[usize] {
        &self.starts
    }

    /// Empties it, keeping the memory.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.starts.clear();
        self.commands = 0;
        self.missing = 0;
    }
}

/// The key of one encoded command (its second argument), `None` for a command of one
/// argument (PING) or bytes that are not one RESP array of bulk strings.
pub fn command_key(command: &[u8]) -> Option<&[u8]> {
    let (argc, mut rest) = header(command, b'*')?;
    if argc < 2 {
        return None;
    }
    // The command's name, then its key.
    let (len, after) = header(rest, b'$')?;
    rest = after.get(len + 2..)?;
    let (len, after) = header(rest, b'$')?;
    after.get(..len)
}

/// `<marker><decimal>\r\n` at the start of `bytes`: the number and what follows.
fn header(bytes: &[u8], marker: u8) -> Option<(usize, &[u8])> {
    let rest = bytes.strip_prefix(&[marker])?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let n = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    Some((n, rest.get(end + 2..)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_encode_as_resp_arrays_of_bulk_strings() {
        let mut p = Pipeline::new();
        p.command(3)
            .arg(b"SET")
            .arg(b"k")
            .arg_fmt(format_args!("{}", 42));
        p.command(1).arg(b"PING");
        assert_eq!(p.commands(), 2);
        assert_eq!(p.starts(), [0, 28]);
        assert_eq!(command_key(&p.bytes()[..28]), Some(&b"k"[..]));
        assert_eq!(command_key(&p.bytes()[28..]), None);
        assert_eq!(command_key(b"*2\r\n$3\r\nDEL"), None);
        assert_eq!(command_key(b"garbage"), None);
        assert_eq!(
            p.bytes(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n42\r\n*1\r\n$4\r\nPING\r\n"
        );
        p.clear();
        assert!(p.bytes().is_empty());
        assert!(p.starts().is_empty());
    }

    #[test]
    #[should_panic(expected = "more arguments")]
    fn a_miscounted_command_is_caught() {
        Pipeline::new().command(1).arg(b"PING").arg(b"x");
    }
}
