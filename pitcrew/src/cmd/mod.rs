//! One module per implemented subcommand; the rest say they are not built.

mod bench;
mod bench_pipeline;
mod bench_rules;
mod check;
mod collect;
mod replay;
mod rulefiles;
mod rules;
mod schema;
mod topics;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Exit code of a subcommand that is not built yet.
const NOT_BUILT: u8 = 2;

pub(crate) fn dispatch(cli: Cli) -> ExitCode {
    let config = cli.global.config.clone();
    let result = match cli.command {
        Command::Collect(args) if !args.stdout && args.kmsg_file.is_none() && !args.once => {
            runtime().and_then(|rt| rt.block_on(collect::agent(config.as_deref(), &args)))
        }
        Command::Collect(args) => collect::run(&args),
        Command::Rules(args) => {
            runtime().and_then(|rt| rt.block_on(rules::run(config.as_deref(), &args)))
        }
        Command::Check(args) => check::check(&args),
        Command::Test(args) => check::test(&args),
        Command::Replay(args) => replay::run(config.as_deref(), &args),
        Command::Remediate(_) => return not_built("remediate", "remediation workers", 5),
        Command::Run(_) => return not_built("run", "the all-in-one service", 6),
        Command::Demo(_) => return not_built("demo", "the demo", 6),
        Command::Simulate(_) => return not_built("simulate", "the fleet simulator", 6),
        Command::Topics(args) => {
            runtime().and_then(|rt| rt.block_on(topics::run(config.as_deref(), args)))
        }
        Command::Schema(args) => schema::run(args),
        Command::Bench(args) => {
            runtime().and_then(|rt| rt.block_on(bench::run(config.as_deref(), args)))
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "pitcrew failed");
            eprintln!("pitcrew: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn not_built(command: &str, what: &str, issue: u32) -> ExitCode {
    eprintln!("pitcrew {command}: not built yet ({what} is tracked in issue #{issue})");
    ExitCode::from(NOT_BUILT)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
