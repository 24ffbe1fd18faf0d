//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// pitcrew keeps GPU training fleets healthy while jobs run: collectors
/// stream telemetry into Kafka, a rule engine correlates it into incidents,
/// and remediation workers act inside safety budgets.
#[derive(Debug, Parser)]
#[command(name = "pitcrew", version, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: Global,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Args)]
pub(crate) struct Global {
    /// Config file (TOML). Settings can be overridden with
    /// PITCREW__SECTION__KEY environment variables.
    #[arg(long, short = 'c', global = true, env = "PITCREW_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Json, env = "PITCREW_LOG_FORMAT")]
    pub(crate) log_format: LogFormat,
    /// Log filter, e.g. `info` or `pitcrew_bus=debug,info`.
    #[arg(long, global = true, default_value = "info", env = "PITCREW_LOG")]
    pub(crate) log: String,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Node agent: stream GPU, PCIe, memory, thermal, network and BMC
    /// telemetry into Kafka.
    Collect(Box<CollectArgs>),
    /// Facility poller: rack PDUs, UPS/BESS and cooling units over SNMP,
    /// Modbus TCP and Redfish into Kafka; or probe one device.
    Facility(FacilityArgs),
    /// Streaming rule engine: events in, incidents and action requests out.
    Rules(RulesArgs),
    /// Remediation workers: governor, Kubernetes, Slurm, IPMI, paging, audit.
    Remediate(RemediateArgs),
    /// Approve an action that waits for a person (admin API).
    Approve(ApproveArgs),
    /// The remediation circuit breaker: status, reset, open (admin API).
    Breaker(BreakerArgs),
    /// A target's remediation timeline from the audit topic.
    Audit(AuditArgs),
    /// The rules and remediation stages in one process, for small
    /// clusters (collectors run on the nodes).
    Run(RunArgs),
    /// Zero-install demo: in-process Kafka, simulated fleet, scripted faults.
    Demo(DemoArgs),
    /// Check rule files and print diagnostics as file:line:col.
    Check(PathsArgs),
    /// Run the [[test]] blocks of rule files.
    Test(PathsArgs),
    /// Backtest rules over recorded events: what would have fired.
    Replay(ReplayArgs),
    /// Fleet simulator: produce realistic telemetry with injected faults.
    Simulate(SimulateArgs),
    /// Create pitcrew's topics from the config and report differences.
    Topics(TopicsArgs),
    /// The wire contract: example messages, validation of your own.
    Schema(SchemaArgs),
    /// Measure decode and Kafka throughput on this machine.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CollectArgs {
    /// Parse this kernel log file instead of following /dev/kmsg.
    #[arg(long)]
    pub(crate) kmsg_file: Option<PathBuf>,
    /// Print events as JSON lines instead of producing to Kafka.
    #[arg(long)]
    pub(crate) stdout: bool,
    /// Sample every source once and exit.
    #[arg(long)]
    pub(crate) once: bool,
    /// This node's inventory name (default: the host name).
    #[arg(long, env = "PITCREW_NODE")]
    pub(crate) node: Option<String>,
    /// Where /proc is (tests and containers with a host mount).
    #[arg(long, default_value = "/proc")]
    pub(crate) proc_root: PathBuf,
    /// Where /sys is.
    #[arg(long, default_value = "/sys")]
    pub(crate) sys_root: PathBuf,
    /// Also scrape this dcgm-exporter endpoint (http://host:9400/metrics).
    #[arg(long)]
    pub(crate) dcgm_url: Option<String>,
    /// Kernel log device to follow.
    #[arg(long, default_value = "/dev/kmsg")]
    pub(crate) kmsg: PathBuf,
    /// Do not follow the kernel log.
    #[arg(long)]
    pub(crate) no_kmsg: bool,
    /// Do not load NVML.
    #[arg(long)]
    pub(crate) no_nvml: bool,
    /// Sample this many simulated GPUs instead of NVML (benchmarks, demos).
    #[arg(long)]
    pub(crate) simulate_gpus: Option<u32>,
    /// Sampling interval of the periodic sources, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub(crate) interval_ms: u64,
    /// Where the spool and the kernel-log position live.
    #[arg(long, default_value = "/var/lib/pitcrew")]
    pub(crate) state_dir: PathBuf,
    /// Upper bound of the on-disk spool, in bytes.
    #[arg(long, default_value_t = 256 * 1024 * 1024)]
    pub(crate) spool_max_bytes: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9465")]
    pub(crate) listen: String,
    /// The node's BMC for IPMI lanplus (host:port; 623 is standard).
    #[arg(long, conflicts_with = "bmc_device")]
    pub(crate) bmc_address: Option<String>,
    /// Read this node's conditions (Ready, node-problem-detector's) from the
    /// Kubernetes API with the pod's service account.
    #[arg(long)]
    pub(crate) k8s_node_conditions: bool,
    /// The node's Kubernetes name, when it differs from --node.
    #[arg(long)]
    pub(crate) k8s_node_name: Option<String>,
    /// Read the node's own BMC through this IPMI device (e.g. /dev/ipmi0).
    #[arg(long)]
    pub(crate) bmc_device: Option<PathBuf>,
    /// The node's BMC over Redfish (https://bmc-host): its System's log
    /// services as bmc.sel and its chassis sensors as bmc.sensor, beside
    /// or instead of IPMI. Same user and password flags.
    #[arg(long)]
    pub(crate) bmc_redfish_url: Option<String>,
    /// The CA (PEM) that signed the BMCs' certificates. Without it the
    /// system's roots are used.
    #[arg(
        long,
        requires = "bmc_redfish_url",
        conflicts_with = "bmc_redfish_insecure"
    )]
    pub(crate) bmc_redfish_ca: Option<PathBuf>,
    /// Do not check the BMC's certificate (self-signed BMCs on an isolated
    /// management network). The password is sent in every request.
    #[arg(long, requires = "bmc_redfish_url")]
    pub(crate) bmc_redfish_insecure: bool,
    /// BMC user.
    #[arg(long, default_value = "admin")]
    pub(crate) bmc_user: String,
    /// File holding the BMC password (a mounted Secret). Without it the
    /// password is read from PITCREW_BMC_PASSWORD. Never on the command line.
    #[arg(long)]
    pub(crate) bmc_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RulesArgs {
    /// Rule files or folders (`@default` is the built-in pack). Reloaded on
    /// SIGHUP and when a file changes; a set with errors keeps the old one.
    #[arg(long = "rules", default_value = "@default")]
    pub(crate) rules: Vec<PathBuf>,
    /// Inventory file (TOML): topology for fan-in, nodes for absence.
    #[arg(long)]
    pub(crate) inventory: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9464")]
    pub(crate) listen: String,
    /// How far out of order events may arrive and still count.
    #[arg(long, default_value = "5s")]
    pub(crate) lateness: String,
    /// How long a partition may be quiet before its event time moves on
    /// with the wall clock (so absences fire in a silent partition).
    #[arg(long, default_value = "30s")]
    pub(crate) idle_grace: String,
    /// An event dated more than this past the wall clock (a node's clock
    /// or a log line's time gone wrong) is taken at the wall clock's time:
    /// one bad clock must not move event time on and fire every absence.
    #[arg(long, default_value = "30s")]
    pub(crate) max_future_skew: String,
    /// The most a partition's state rebuild re-reads.
    #[arg(long, default_value = "1h")]
    pub(crate) lookback_cap: String,
    /// Consumer group prefix (`-node` and `-group` are appended).
    #[arg(long, default_value = "pitcrew-rules")]
    pub(crate) group_id: String,
    /// This instance's name, for its transactional ids (default: host name).
    #[arg(long, env = "PITCREW_INSTANCE")]
    pub(crate) instance: Option<String>,
    /// The topic of events re-keyed by topology group.
    #[arg(long, default_value = "pitcrew.events.by-group")]
    pub(crate) group_topic: String,
    /// Mark every action request dry-run.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Most events one transaction carries: larger batches cost less CPU
    /// per event, smaller ones answer sooner under load.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) max_batch: usize,
}

#[derive(Debug, Args)]
pub(crate) struct RemediateArgs {
    /// Remediation config (TOML): governor, executors, pagers, plans.
    #[arg(long)]
    pub(crate) remediation: Option<PathBuf>,
    /// Inventory file (TOML): topology for budgets, BMC addresses, names.
    #[arg(long)]
    pub(crate) inventory: Option<PathBuf>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:9465")]
    pub(crate) listen: String,
    /// Address of the admin API (bearer token required).
    #[arg(long, default_value = "127.0.0.1:9466")]
    pub(crate) admin_listen: String,
    /// Consumer group.
    #[arg(long, default_value = "pitcrew-remediate")]
    pub(crate) group_id: String,
    /// This instance's name, in audit records (default: host name).
    #[arg(long, env = "PITCREW_INSTANCE")]
    pub(crate) instance: Option<String>,
    /// Describe every destructive step instead of running it.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The admin API of `pitcrew remediate`.
    #[arg(
        long,
        global = true,
        default_value = "http://127.0.0.1:9466",
        env = "PITCREW_ADMIN"
    )]
    pub(crate) admin: String,
    /// File with the admin bearer token (else PITCREW_ADMIN_TOKEN).
    #[arg(long, global = true)]
    pub(crate) token_file: Option<PathBuf>,
    /// Who is acting, for the audit trail (default: $USER).
    #[arg(long, global = true, env = "USER", default_value = "unknown")]
    pub(crate) by: String,
}

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The action id (act-...) waiting for approval.
    pub(crate) action: String,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
}

#[derive(Debug, Args)]
pub(crate) struct BreakerArgs {
    #[command(subcommand)]
    pub(crate) op: BreakerOp,
    #[command(flatten)]
    pub(crate) admin: AdminArgs,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BreakerOp {
    /// Show the breaker and the fleet budget.
    Status,
    /// Reset a latched breaker: destructive remediation resumes.
    Reset,
    /// Latch the breaker: stop every destructive step now.
    Open {
        #[arg(long, default_value = "opened by hand")]
        reason: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// The target: `n17` (a node) or `node/n17`, `leaf_switch/leaf-1a`.
    #[arg(long)]
    pub(crate) target: String,
    /// One JSON record per line.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Every `pitcrew rules` option; --listen, --inventory, --instance and
    /// --dry-run apply to both stages.
    #[command(flatten)]
    pub(crate) rules: RulesArgs,
    /// Remediation config (TOML): plans, governor, executors, pagers.
    #[arg(long)]
    pub(crate) remediation: Option<PathBuf>,
    /// Address of the remediation admin API (bearer token).
    #[arg(long, default_value = "127.0.0.1:9466")]
    pub(crate) admin_listen: String,
    /// Consumer group of the remediation stage.
    #[arg(long, default_value = "pitcrew-remediate")]
    pub(crate) remediate_group_id: String,
}

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// How long to run, e.g. 30s or 5m.
    #[arg(long, default_value = "60s")]
    pub(crate) duration: String,
    /// Nodes in the simulated fleet (8 GPUs each).
    #[arg(long, default_value_t = 64)]
    pub(crate) nodes: u32,
    /// Fault script to play instead of the built-in one.
    #[arg(long)]
    pub(crate) scenario: Option<PathBuf>,
    /// Remediation config: real executors and pagers where configured,
    /// simulated ones for the rest.
    #[arg(long)]
    pub(crate) remediation: Option<PathBuf>,
    /// Address of /metrics.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub(crate) listen: String,
}

#[derive(Debug, Args)]
pub(crate) struct PathsArgs {
    /// Rule files or folders (`@default` is the built-in pack).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// Rule files or folders (`@default` is the built-in pack).
    #[arg(required = true)]
    pub(crate) rules: Vec<PathBuf>,
    /// Inventory file (TOML): topology for fan-in, nodes for absence.
    #[arg(long)]
    pub(crate) inventory: Option<PathBuf>,
    /// How far out of order events may arrive and still count.
    #[arg(long, default_value = "5m")]
    pub(crate) lateness: String,
    /// Print every output as JSON lines instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Events as JSON lines.
    #[arg(long, conflicts_with = "topic")]
    pub(crate) events: Option<PathBuf>,
    /// Read events from this Kafka topic.
    #[arg(long)]
    pub(crate) topic: Option<String>,
    /// Start of the time range (RFC 3339).
    #[arg(long)]
    pub(crate) from: Option<String>,
    /// End of the time range (RFC 3339).
    #[arg(long)]
    pub(crate) to: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Events per second to produce.
    #[arg(long, default_value_t = 10_000)]
    pub(crate) rate: u64,
    /// Nodes in the simulated fleet.
    #[arg(long, default_value_t = 64)]
    pub(crate) nodes: u32,
    /// Fault script (the `[[event]]` format of rule tests).
    #[arg(long)]
    pub(crate) scenario: Option<PathBuf>,
    /// Stop after this long (e.g. 60s); default: until interrupted.
    #[arg(long)]
    pub(crate) duration: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    #[command(subcommand)]
    pub(crate) action: TopicsAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TopicsAction {
    /// Create missing topics (partitions, retention, compaction of the
    /// state topic); report existing topics that differ from the config.
    Bootstrap,
}

#[derive(Debug, Args)]
pub(crate) struct SchemaArgs {
    #[command(subcommand)]
    pub(crate) action: SchemaAction,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SchemaAction {
    /// Print one example message per event kind and message type.
    Examples,
    /// Validate messages, one JSON document per line, from a file or stdin.
    Validate {
        /// File of JSON lines (stdin when absent).
        file: Option<PathBuf>,
        /// What the lines are.
        #[arg(long, value_enum, default_value_t = MessageType::Event)]
        r#type: MessageType,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum MessageType {
    Event,
    Incident,
    Action,
    Audit,
    State,
}

#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    pub(crate) what: BenchWhat,
}

#[derive(Debug, Subcommand)]
pub(crate) enum BenchWhat {
    /// Decode throughput of the event contract on one core.
    Decode {
        /// Seconds to measure for.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// Kernel-log parser throughput on one core, over a realistic mix.
    Kmsg {
        /// Seconds to measure for.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
    /// The rule evaluator with the default pack over a simulated fleet's
    /// event mix, on one core: events/s and bytes of state per GPU.
    Rules {
        /// Seconds to measure for (after a 60 fleet-second warm-up).
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
        /// Nodes in the simulated fleet.
        #[arg(long, default_value_t = 12_500)]
        nodes: u32,
        /// GPUs per node.
        #[arg(long, default_value_t = 8)]
        gpus: u32,
    },
    /// `pitcrew rules` end to end against a Kafka (--config or
    /// PITCREW__KAFKA__BROKERS): backlog throughput per core, and the time
    /// from an event entering Kafka to its action request being readable
    /// under background load. Uses throwaway topics.
    Pipeline {
        /// Events produced before the stage starts (throughput phase).
        #[arg(long, default_value_t = 1_000_000)]
        backlog: u64,
        /// Background events per second during the latency phase.
        #[arg(long, default_value_t = 200_000)]
        rate: u64,
        /// Seconds of the latency phase.
        #[arg(long, default_value_t = 20.0)]
        seconds: f64,
        /// Milliseconds between probe events.
        #[arg(long, default_value_t = 50)]
        probe_ms: u64,
        /// Partitions of the events topic.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// Passed to the stage as --max-batch.
        #[arg(long, default_value_t = 10_000)]
        max_batch: usize,
    },
    /// Decisions per second through the remediation governor on one core,
    /// with a steady number of nodes out of service.
    Governor {
        /// Seconds to measure for.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Nodes in the inventory.
        #[arg(long, default_value_t = 12_500)]
        nodes: u32,
        /// Nodes held out of service while asks come in.
        #[arg(long, default_value_t = 600)]
        out: usize,
    },
    /// The remediation service against a Kafka (--config or
    /// PITCREW__KAFKA__BROKERS) on throwaway topics: time from an action
    /// request on Kafka to the cordon call, and to cordon many nodes at
    /// once. Cordons go to --kubeconfig's API server, or to a simulated
    /// fleet.
    Remediate {
        /// Nodes asked for at once in the scale phase.
        #[arg(long, default_value_t = 150)]
        nodes: u32,
        /// Requests in the latency phase, one node each.
        #[arg(long, default_value_t = 200)]
        probes: u32,
        /// Milliseconds between latency requests.
        #[arg(long, default_value_t = 20)]
        probe_ms: u64,
        /// A kubeconfig whose API server gets the cordons (the bench
        /// creates and deletes its Node objects there).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
    },
    /// Produce and consume throughput against a Kafka (--config or
    /// PITCREW__KAFKA__BROKERS); creates and uses a throwaway topic.
    Kafka {
        /// Events to produce and consume.
        #[arg(long, default_value_t = 500_000)]
        events: u64,
        /// Partitions of the throwaway topic.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
}

pub(crate) fn init_logging(g: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_new(&g.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

#[derive(Debug, Args)]
pub(crate) struct FacilityArgs {
    #[command(subcommand)]
    pub(crate) op: FacilityOp,
}

#[derive(Debug, Subcommand)]
pub(crate) enum FacilityOp {
    /// Poll the devices of a facility file forever, events to Kafka (the
    /// global --config names the Kafka settings).
    Run {
        /// The devices: `[poller]` and `[[facility]]` entries (the
        /// inventory file works too); PITCREW__POLLER__KEY overrides.
        #[arg(long, env = "PITCREW_FACILITY_DEVICES")]
        devices: PathBuf,
        /// Where /metrics and /healthz listen.
        #[arg(long, default_value = "0.0.0.0:9105")]
        listen: String,
    },
    /// Poll one device once and print its events as JSON lines.
    /// Credentials come from --credentials or PITCREW_FACILITY_COMMUNITY,
    /// _AUTH_KEY, _PRIV_KEY, _USERNAME, _PASSWORD; never from argv.
    Probe {
        /// snmp://[COMMUNITY@]host[:161], snmpv3://user@host[?auth=sha256&priv=aes],
        /// modbus://host[:502]?unit=1&map=NAME, redfish://host or redfish+http://host:port.
        url: String,
        /// The SNMP profile (detected from sysObjectID when not given).
        #[arg(long)]
        profile: Option<String>,
        /// What the device is, when no profile says it (Modbus, Redfish).
        #[arg(long, value_parser = ["pdu", "ups", "cooling", "leak"])]
        kind: Option<String>,
        /// Racks it serves, for the events.
        #[arg(long, value_delimiter = ',')]
        racks: Vec<String>,
        /// Its name in the events.
        #[arg(long, default_value = "probe")]
        name: String,
        /// A credentials file (community, auth_key, priv_key, username, password).
        #[arg(long)]
        credentials: Option<PathBuf>,
        /// Folders of extra profiles and register maps.
        #[arg(long)]
        profiles: Vec<PathBuf>,
        #[arg(long, default_value = "2s")]
        timeout: String,
    },
}
