//! `pitcrew schema examples|validate`

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::ExitCode;

use pitcrew_contract::{
    decode, encode, examples, ActionRequest, AuditRecord, Event, Incident, RemediationState,
};

use crate::cli::{MessageType, SchemaAction, SchemaArgs};

pub(crate) fn run(args: SchemaArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        SchemaAction::Examples => {
            for ev in examples::all_events() {
                println!(
                    "### `{}`\n\n```json\n{}\n```\n",
                    ev.kind(),
                    text(&encode(&ev))
                );
            }
            for (name, json) in [
                ("incident", encode(&examples::incident())),
                ("action", encode(&examples::action())),
                ("audit", encode(&examples::audit())),
                ("state", encode(&examples::state())),
            ] {
                println!("### {name}\n\n```json\n{}\n```\n", text(&json));
            }
            Ok(ExitCode::SUCCESS)
        }
        SchemaAction::Validate { file, r#type } => {
            let reader: Box<dyn BufRead> = match file {
                Some(p) => Box::new(BufReader::new(std::fs::File::open(&p)?)),
                None => Box::new(std::io::stdin().lock()),
            };
            let mut bad = 0usize;
            let mut good = 0usize;
            for (n, line) in reader.split(b'\n').enumerate() {
                let line = line?;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match check(&line, r#type) {
                    Ok(what) => {
                        good += 1;
                        println!("line {}: ok {what}", n + 1);
                    }
                    Err(e) => {
                        bad += 1;
                        println!("line {}: error: {e}", n + 1);
                    }
                }
            }
            println!("{good} valid, {bad} invalid");
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn check(line: &[u8], t: MessageType) -> Result<String, pitcrew_contract::DecodeError> {
    Ok(match t {
        MessageType::Event => decode::<Event>(line)?.kind().to_string(),
        MessageType::Incident => decode::<Incident>(line)?.id,
        MessageType::Action => decode::<ActionRequest>(line)?.id,
        MessageType::Audit => decode::<AuditRecord>(line)?.id,
        MessageType::State => decode::<RemediationState>(line)?.target.to_string(),
    })
}
