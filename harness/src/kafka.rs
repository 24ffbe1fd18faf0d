//! Apache Kafka for tests: jars from Maven Central, a single KRaft node
//! (broker and controller in one process) on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{run, wait_ready, Supervised};
use crate::{cache_dir, free_port, run_dir, HarnessError};

/// The Kafka release the tests run against (`org.apache.kafka:kafka_2.13`).
pub const KAFKA_VERSION: &str = "4.3.1";
const LOG4J_VERSION: &str = "2.25.4";

/// Resolves the broker's jars and their runtime dependencies into the
/// cache (once) and returns the folder holding them.
pub fn ensure_jars() -> Result<PathBuf, HarnessError> {
    let _building = crate::build_lock();
    let root = cache_dir().join(format!("kafka-{KAFKA_VERSION}"));
    let jars = root.join("jars");
    if jars.join(".complete").exists() {
        return Ok(jars);
    }
    std::fs::create_dir_all(&root).map_err(|e| HarnessError::io("create kafka cache", e))?;
    let pom = root.join("pom.xml");
    std::fs::write(&pom, pom_xml()).map_err(|e| HarnessError::io("write pom.xml", e))?;
    // Resolve into a private folder, then rename: concurrent provisioners
    // never see a half-filled jar folder.
    let staging = root.join(format!("jars.staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    run(Command::new("mvn")
        .arg("-B")
        .arg("-q")
        .arg("-f")
        .arg(&pom)
        .arg(format!(
            "-Dmaven.repo.local={}",
            cache_dir().join("m2").display()
        ))
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", staging.display()))
        .arg("-DincludeScope=runtime"))?;
    std::fs::write(staging.join(".complete"), KAFKA_VERSION)
        .map_err(|e| HarnessError::io("mark jars complete", e))?;
    if std::fs::rename(&staging, &jars).is_err() {
        // Another process won the race; its folder is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(jars)
}

fn pom_xml() -> String {
    format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.pitcrew.harness</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>{LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
"#
    )
}

/// The SASL/PLAIN user the broker's second listener accepts. Test
/// credentials only: the broker is on loopback and lives for one run.
pub const SASL_USER: &str = "pitcrew";
/// Password of [`SASL_USER`].
pub const SASL_PASSWORD: &str = "pitcrew-test-secret";

/// A running single-node Kafka. Stopped on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    bootstrap: String,
    sasl_bootstrap: String,
    dir: PathBuf,
    log: PathBuf,
    port: u16,
    args: Vec<String>,
    process: Option<Supervised>,
}

impl KafkaBroker {
    /// Provisions (if needed) and starts a broker, and returns once it
    /// answers Kafka requests.
    pub fn start() -> Result<KafkaBroker, HarnessError> {
        let jars = ensure_jars()?;
        let dir = run_dir("kafka")?;
        let port = free_port()?;
        let sasl_port = free_port()?;
        let controller_port = free_port()?;
        let data = dir.join("data");
        let props = dir.join("server.properties");
        let log4j = dir.join("log4j2.properties");
        std::fs::write(
            &props,
            server_properties(port, sasl_port, controller_port, &data),
        )
        .map_err(|e| HarnessError::io("write server.properties", e))?;
        std::fs::write(&log4j, LOG4J2)
            .map_err(|e| HarnessError::io("write log4j2.properties", e))?;
        let log = dir.join("broker.log");
        let classpath = format!("{}/*", jars.display());

        let mut format = Command::new("java");
        format
            .arg("-cp")
            .arg(&classpath)
            .arg(format!("-Dlog4j2.configurationFile={}", log4j.display()))
            .arg("kafka.tools.StorageTool")
            .arg("format")
            .arg("-t")
            .arg(cluster_id())
            .arg("-c")
            .arg(&props);
        run(&mut format)?;

        let args: Vec<String> = vec![
            "-Xms256m".into(),
            "-Xmx768m".into(),
            "-XX:+UseSerialGC".into(),
            "-XX:TieredStopAtLevel=1".into(),
            "-Djava.awt.headless=true".into(),
            format!("-Dlog4j2.configurationFile={}", log4j.display()),
            format!("-Dkafka.logs.dir={}", dir.display()),
            "-cp".into(),
            classpath,
            "kafka.Kafka".into(),
            props.display().to_string(),
        ];
        let process = Supervised::spawn("kafka", "java", &args, &log, Duration::from_secs(15))?;
        let mut broker = KafkaBroker {
            bootstrap: format!("127.0.0.1:{port}"),
            sasl_bootstrap: format!("127.0.0.1:{sasl_port}"),
            dir,
            log,
            port,
            args,
            process: Some(process),
        };
        broker.wait_ready(port, Duration::from_secs(90))?;
        Ok(broker)
    }

    /// `host:port` for `bootstrap.servers`.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// `host:port` of the SASL_PLAINTEXT listener (mechanism PLAIN,
    /// [`SASL_USER`] / [`SASL_PASSWORD`]).
    pub fn sasl_bootstrap(&self) -> &str {
        &self.sasl_bootstrap
    }

    /// The broker's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    fn wait_ready(&mut self, port: u16, limit: Duration) -> Result<(), HarnessError> {
        let mut process = self.process.take();
        let result = wait_ready("kafka", process.as_mut(), &self.log, limit, || {
            api_versions_ok(port)
        });
        self.process = process;
        result
    }

    /// Stops the broker process but keeps its data, ports and config, for
    /// outage tests; [`KafkaBroker::resume`] starts it again.
    pub fn pause(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(20));
        }
    }

    /// Starts a paused broker again on the same ports with the same data.
    pub fn resume(&mut self) -> Result<(), HarnessError> {
        if self.process.is_some() {
            return Ok(());
        }
        self.process = Some(Supervised::spawn(
            "kafka",
            "java",
            &self.args,
            &self.log,
            Duration::from_secs(15),
        )?);
        self.wait_ready(self.port, Duration::from_secs(90))
    }

    /// Stops the broker (also done on drop).
    pub fn stop(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.stop(Duration::from_secs(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn cluster_id() -> String {
    // Any 16 bytes, base64url without padding (22 characters).
    "cGl0Y3Jldy10ZXN0LWtyYQ".to_owned()
}

fn server_properties(port: u16, sasl_port: u16, controller_port: u16, data: &Path) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"{SASL_USER}\" password=\"{SASL_PASSWORD}\" user_{SASL_USER}=\"{SASL_PASSWORD}\";
log.dirs={}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
auto.create.topics.enable=false
log.segment.bytes=67108864
log.retention.check.interval.ms=60000
",
        data.display()
    )
}

const LOG4J2: &str = "status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.server.name = org.apache.kafka
logger.server.level = WARN
";

/// Sends ApiVersions v0 and checks for error code 0: the broker is
/// answering Kafka requests, not just accepting connections.
fn api_versions_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let client_id = b"pitcrew-harness";
    let mut body = Vec::new();
    body.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    body.extend_from_slice(&0i16.to_be_bytes()); // version 0
    body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&i16::try_from(client_id.len()).unwrap_or(0).to_be_bytes());
    body.extend_from_slice(client_id);
    let mut req = Vec::new();
    req.extend_from_slice(&i32::try_from(body.len()).unwrap_or(0).to_be_bytes());
    req.extend_from_slice(&body);
    if s.write_all(&req).is_err() {
        return false;
    }
    let mut head = [0u8; 10];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    let correlation = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
    let error = i16::from_be_bytes([head[8], head[9]]);
    correlation == 7 && error == 0
}
