//! `alphapt-storage`: flags → config → command. `anyhow` lives here and in `src/cli/`;
//! the library returns typed errors.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = cli::Args::parse_all();
    cli::init_logging();
    match cli::dispatch(args) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("alphapt-storage: error: {error:#}");
            ExitCode::from(2)
        }
    }
}
