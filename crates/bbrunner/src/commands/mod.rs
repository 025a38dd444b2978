use std::process::ExitCode;

use anyhow::Result;

use crate::cli::{Cli, Command};

mod import;
mod render;
mod simulate;

pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Import {
            file,
            format,
            reveal_secret,
        } => import::run(file.as_deref(), format, reveal_secret),
        Command::Render(args) => render::run(&args),
        Command::Simulate(args) => simulate::run(&args),
    }
}
