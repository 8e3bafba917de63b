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
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let name = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_string();
        eprintln!("alphapt-storage: thread '{name}' panicked; stopping the process (what was not stored was not acknowledged, JetStream redelivers it)");
        std::process::exit(EXIT_PANIC);
    }));
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("alphapt-storage: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
