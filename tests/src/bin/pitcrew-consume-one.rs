//! Helper process for the redelivery test: consumes one message through
//! pitcrew's consumer, says so on stdout, then either waits to be killed
//! (`hang-after-processed`: offset stored, never committed) or commits and
//! exits (`commit`).

use std::io::Write;
use std::time::Duration;

use pitcrew_bus::rdkafka::Message;
use pitcrew_bus::{BusMetrics, Consumer, KafkaConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, group, mode] = &args[..] else {
        anyhow::bail!("usage: pitcrew-consume-one BROKERS TOPIC GROUP hang-after-processed|commit");
    };
    let mut cfg = KafkaConfig {
        brokers: brokers.clone(),
        ..KafkaConfig::default()
    };
    cfg.consumer.session_timeout_ms = 6_000;
    // Long enough that nothing is committed behind our back before the kill.
    cfg.consumer.commit_interval_ms = 600_000;
    let consumer = Consumer::new(&cfg, group, &[topic], BusMetrics::default())?;
    let msg = consumer.recv().await?;
    let payload = String::from_utf8_lossy(msg.payload().unwrap_or_default()).into_owned();
    consumer.processed(&msg)?;
    let mut out = std::io::stdout();
    writeln!(out, "processed offset={} payload={payload}", msg.offset())?;
    out.flush()?;
    if mode == "commit" {
        consumer.commit()?;
        writeln!(out, "committed")?;
        out.flush()?;
        return Ok(());
    }
    tokio::time::sleep(Duration::from_secs(300)).await;
    Ok(())
}
