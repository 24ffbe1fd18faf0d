//! The `pitcrew` binary: parses the command line, sets up logging and hands
//! over to the stage crates. No logic of its own lives here.

mod admin;
mod cli;
mod cmd;
mod http;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    cli::init_logging(&cli.global);
    cmd::dispatch(cli)
}
