//! `pitcrew topics bootstrap`

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::ExitCode;

use pitcrew_bus::{ensure_topics, BusConfig};

use crate::cli::{TopicsAction, TopicsArgs};

pub(crate) async fn run(config: Option<&Path>, args: TopicsArgs) -> anyhow::Result<ExitCode> {
    let TopicsAction::Bootstrap = args.action;
    let cfg = BusConfig::load(config)?;
    let reports = ensure_topics(&cfg.kafka, &cfg.topics).await?;
    let mut differs = false;
    for r in reports {
        let what = if r.created { "created" } else { "exists" };
        println!("{:<24} {what}", r.name);
        for w in r.warnings {
            differs = true;
            println!("{:<24}   warning: {w}", "");
        }
    }
    Ok(if differs {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
