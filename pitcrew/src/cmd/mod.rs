//! One module per subcommand.

mod bench;
mod bench_governor;
mod bench_pipeline;
mod bench_remediate;
mod bench_rules;
mod check;
mod collect;
mod demo;
mod facility;
mod remediate;
mod replay;
mod rules;
mod run;
mod schema;
mod simulate;
mod topics;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub(crate) fn dispatch(cli: Cli) -> ExitCode {
    let config = cli.global.config.clone();
    let result = match cli.command {
        Command::Collect(args) if !args.stdout && args.kmsg_file.is_none() && !args.once => {
            runtime().and_then(|rt| rt.block_on(collect::agent(config.as_deref(), &args)))
        }
        Command::Collect(args) => collect::run(&args),
        Command::Facility(args) => {
            runtime().and_then(|rt| rt.block_on(facility::run(config.as_deref(), &args)))
        }
        Command::Rules(args) => {
            runtime().and_then(|rt| rt.block_on(rules::run(config.as_deref(), &args)))
        }
        Command::Check(args) => check::check(&args),
        Command::Test(args) => check::test(&args),
        Command::Replay(args) => replay::run(config.as_deref(), &args),
        Command::Remediate(args) => {
            runtime().and_then(|rt| rt.block_on(remediate::run(config.as_deref(), &args)))
        }
        Command::Approve(args) => admin_command(
            &args.admin,
            "POST",
            &format!("/v1/approve/{}", args.action),
            serde_json::json!({ "by": args.admin.by }),
        ),
        Command::Breaker(args) => {
            let (method, path, body) = match &args.op {
                crate::cli::BreakerOp::Status => ("GET", "/v1/breaker", serde_json::json!({})),
                crate::cli::BreakerOp::Reset => (
                    "POST",
                    "/v1/breaker/reset",
                    serde_json::json!({ "by": args.admin.by }),
                ),
                crate::cli::BreakerOp::Open { reason } => (
                    "POST",
                    "/v1/breaker/open",
                    serde_json::json!({ "by": args.admin.by, "reason": reason }),
                ),
            };
            admin_command(&args.admin, method, path, body)
        }
        Command::Audit(args) => remediate::audit(config.as_deref(), &args),
        Command::Run(args) => {
            runtime().and_then(|rt| rt.block_on(run::run(config.as_deref(), &args)))
        }
        Command::Demo(args) => {
            runtime().and_then(|rt| rt.block_on(demo::run(config.as_deref(), &args)))
        }
        Command::Simulate(args) => {
            runtime().and_then(|rt| rt.block_on(simulate::run(config.as_deref(), &args)))
        }
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

/// One admin API call; prints the answer, fails on an error status.
fn admin_command(
    admin: &crate::cli::AdminArgs,
    method: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<ExitCode> {
    let token = pitcrew::admin::cli_token(admin.token_file.as_deref())?;
    let (status, answer) =
        pitcrew::admin::call(&admin.admin, &token, method, path, &body.to_string())?;
    use std::io::Write as _;
    writeln!(std::io::stdout(), "{answer}")?;
    if (200..300).contains(&status) {
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!("admin API answered {status}")
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
