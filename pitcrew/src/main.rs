//! The `pitcrew` binary: parses the command line, sets up logging and hands
//! over to the services (`pitcrew::service`) and the stage crates. No
//! pipeline logic of its own lives here.

mod cli;
mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let mut cli = cli::Cli::parse();
    // The demo's terminal is its live view: only warnings go to stderr,
    // unless a log filter was asked for.
    if matches!(cli.command, cli::Command::Demo(_))
        && std::env::var_os("PITCREW_LOG").is_none()
        && !std::env::args().any(|a| a.starts_with("--log"))
    {
        cli.global.log = "warn".to_owned();
        cli.global.log_format = cli::LogFormat::Text;
    }
    cli::init_logging(&cli.global);
    cmd::dispatch(cli)
}
