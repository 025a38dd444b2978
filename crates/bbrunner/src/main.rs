#![forbid(unsafe_code)]
//! The `bbrunner` binary: argument parsing and IO only; decisions live in `bbrunner-core`.

mod cli;
mod commands;
mod input;
mod install;
mod operator;
mod output;
#[cfg(feature = "plot")]
mod plot;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
