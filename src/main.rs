//! `alphapt-storage`: flags → config → command. `anyhow` lives here and in `src/cli/`;
//! the library returns typed errors.

mod cli;

use std::process::ExitCode;

/// Exit status after a panic in any thread (`EX_SOFTWARE`).
const EXIT_PANIC: i32 = 70;

fn main() -> ExitCode {
    let args = cli::Args::parse_all();
    // A panic anywhere is a bug that leaves the pipeline half-wired (a shard with no
    // writer spins on its pool): stop the whole process, naming the thread, instead of
    // leaving orphans. Nothing unstored was ever acknowledged, so JetStream redelivers it.
    // The message goes through the secret scrubber (config::scrub): a bug that formats
    // a password into a panic must still not print it.
    std::panic::set_hook(Box::new(|info| {
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(a panic without a message)");
        let location = info
            .location()
            .map_or_else(|| "an unknown place".to_owned(), ToString::to_string);
        let report = format!("thread '{name}' panicked at {location}:\n{message}");
        eprintln!("{}", alphapt_storage::config::scrub(&report));
        let backtrace = std::backtrace::Backtrace::capture();
        if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
            eprintln!("{}", alphapt_storage::config::scrub(&backtrace.to_string()));
        }
        eprintln!("alphapt-storage: thread '{name}' panicked; stopping the process (what was not stored was not acknowledged, JetStream redelivers it)");
        std::process::exit(EXIT_PANIC);
    }));
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            let text = error_text(&error);
            eprintln!(
                "alphapt-storage: error: {}",
                alphapt_storage::config::scrub(&text)
            );
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, joined by `: `, each once: many of the crate's errors
/// already print their cause in their own message, and `{:#}` would repeat it.
fn error_text(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_text;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start {what}: {source}")]
    struct Start {
        what: &'static str,
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_its_error_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::OutOfMemory, "rings too large");
        let error = anyhow::Error::new(Start {
            what: "the rings",
            source: io,
        });
        assert_eq!(
            error_text(&error),
            "cannot start the rings: rings too large"
        );
        let wrapped = anyhow::anyhow!("disk full").context("cannot write the journal");
        assert_eq!(error_text(&wrapped), "cannot write the journal: disk full");
    }
}
