//! Command line -> one validated `ServeConfig`. Every limit and default of the broker lives here
//! or in `metadata::configs` (the Kafka-named broker and topic configs).

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::metadata::configs::{self, BrokerConfig};

#[derive(Parser, Debug)]
#[command(name = "pinion", version, about = "A Kafka-compatible event-streaming broker and its command line")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the broker.
    Serve(ServeArgs),
    /// The client commands: topic, produce, consume, group, config, cluster, dump-log.
    #[command(flatten)]
    Client(crate::cli::Command),
}

/// Receive memory beyond the fetch caches, for requests in flight and the chunks connections
/// are filling (see `buffers`).
const RECV_POOL_SPARE_MIB: usize = 64;

#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to accept Kafka clients on (port 0 picks a free port and prints it).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub listen: String,
    /// host:port that clients are told to connect to (default: the bound listen address).
    #[arg(long)]
    pub advertised_listener: Option<String>,
    /// Directory holding topic metadata and partition logs. Must support O_DIRECT.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// CPU for the router executor (connections, metadata). Default: CPU 0.
    #[arg(long)]
    pub router_core: Option<usize>,
    /// CPUs for shard executors, e.g. `1-3,6`. Default: every CPU but the router's.
    #[arg(long)]
    pub shard_cores: Option<String>,
    /// Number of shards when not given explicit cores (with --no-pin, or to use fewer CPUs).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Do not pin executors to CPUs; the kernel schedules them.
    #[arg(long)]
    pub no_pin: bool,
    /// Memory budget of each shard's cache of recent batches, in MiB.
    #[arg(long, default_value_t = 256)]
    pub fetch_cache_mib: usize,
    /// Memory for receiving requests, in MiB, touched at start-up so that no request waits for
    /// a page fault; produced batches stay in it while a fetch cache keeps them. Default: every
    /// shard's fetch cache plus 64. 0 (or under 4): none; memory comes from the system allocator.
    #[arg(long)]
    pub recv_pool_mib: Option<usize>,
    /// Spin this many microseconds before an idle executor parks: lower cross-core latency for
    /// idle CPU time (see tuning.md).
    #[arg(long, default_value_t = 0)]
    pub spin_before_park_us: u64,
    /// Zeros kept written ahead of each partition taking durable (acks=all) writes, in KiB, so
    /// that those writes overwrite blocks instead of extending the file; 0 turns it off.
    #[arg(long, default_value_t = crate::log::ZERO_AHEAD_BYTES >> 10)]
    pub zero_ahead_kib: u64,
    /// Memory glommio reserves per executor for I/O buffers, in MiB: the writes', the disk
    /// reads being sent (up to half) and the reads made ahead for consumers (up to a quarter).
    #[arg(long, default_value_t = 32)]
    pub io_memory_mib: usize,
    /// Broker config with its Kafka name, e.g. `--override num.partitions=3`. Repeatable.
    #[arg(long = "override", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Node id reported in metadata.
    #[arg(long, default_value_t = 0)]
    pub node_id: i32,
}

/// Where each executor runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Router on `router`, shard i on `shards[i]`.
    Pinned { router: usize, shards: Vec<usize> },
    /// Threads left to the kernel scheduler.
    Unpinned { shards: usize },
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub advertised: Option<(String, i32)>,
    pub data_dir: PathBuf,
    pub placement: Placement,
    pub fetch_cache_bytes: usize,
    pub recv_pool_bytes: usize,
    pub spin_before_park_us: u64,
    pub zero_ahead_bytes: u64,
    pub io_memory_bytes: usize,
    pub broker: BrokerConfig,
    pub node_id: i32,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot resolve listen address {addr:?}: {reason}")]
    Listen { addr: String, reason: String },
    #[error("advertised listener {0:?} is not host:port")]
    Advertised(String),
    #[error("CPU {cpu} does not exist; this machine has CPUs {available}")]
    NoSuchCpu { cpu: usize, available: String },
    #[error("bad CPU list {list:?}: {reason}")]
    CpuList { list: String, reason: String },
    #[error("--shards must be at least 1")]
    NoShards,
    #[error("override {0:?} is not KEY=VALUE")]
    OverrideSyntax(String),
    #[error(transparent)]
    Broker(#[from] configs::ConfigValueError),
}

impl ServeConfig {
    pub fn from_args(args: &ServeArgs, online_cpus: &[usize]) -> Result<ServeConfig, ConfigError> {
        let listen = args
            .listen
            .to_socket_addrs()
            .map_err(|e| ConfigError::Listen { addr: args.listen.clone(), reason: e.to_string() })?
            .next()
            .ok_or_else(|| ConfigError::Listen { addr: args.listen.clone(), reason: "no address".into() })?;
        let advertised = match &args.advertised_listener {
            None => None,
            Some(s) => Some(parse_host_port(s).ok_or_else(|| ConfigError::Advertised(s.clone()))?),
        };
        let mut overrides = BTreeMap::new();
        for kv in &args.overrides {
            let (k, v) = kv.split_once('=').ok_or_else(|| ConfigError::OverrideSyntax(kv.clone()))?;
            overrides.insert(k.trim().to_string(), v.trim().to_string());
        }
        let broker = BrokerConfig::new(overrides)?;
        let placement = placement(args, online_cpus)?;
        let shards = match &placement {
            Placement::Pinned { shards, .. } => shards.len(),
            Placement::Unpinned { shards } => *shards,
        };
        let recv_pool_mib = args
            .recv_pool_mib
            .unwrap_or(args.fetch_cache_mib.saturating_mul(shards).saturating_add(RECV_POOL_SPARE_MIB));
        Ok(ServeConfig {
            listen,
            advertised,
            data_dir: args.data_dir.clone(),
            placement,
            fetch_cache_bytes: args.fetch_cache_mib << 20,
            recv_pool_bytes: recv_pool_mib.saturating_mul(1 << 20),
            spin_before_park_us: args.spin_before_park_us,
            zero_ahead_bytes: args.zero_ahead_kib << 10,
            io_memory_bytes: args.io_memory_mib << 20,
            broker,
            node_id: args.node_id,
        })
    }
}

fn parse_host_port(s: &str) -> Option<(String, i32)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| (host.trim_matches(['[', ']']).to_string(), i32::from(port)))
}

/// Decides where the router and shards run. Defaults: router on CPU 0, a shard on every other
/// CPU; a 1-CPU machine runs both on CPU 0.
pub fn placement(args: &ServeArgs, online: &[usize]) -> Result<Placement, ConfigError> {
    if args.shards == Some(0) {
        return Err(ConfigError::NoShards);
    }
    if args.no_pin {
        let default = online.len().saturating_sub(1).max(1);
        return Ok(Placement::Unpinned { shards: args.shards.unwrap_or(default) });
    }
    let check = |cpu: usize| {
        if online.contains(&cpu) {
            Ok(cpu)
        } else {
            Err(ConfigError::NoSuchCpu { cpu, available: format_cpu_list(online) })
        }
    };
    let router = check(args.router_core.unwrap_or(online[0]))?;
    let shards = match &args.shard_cores {
        Some(list) => parse_cpu_list(list)?.into_iter().map(check).collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut pool: Vec<usize> = online.iter().copied().filter(|&c| c != router).collect();
            let wanted = args.shards.unwrap_or(pool.len().max(1));
            // More shards than spare CPUs: the router's CPU takes one too, then they wrap around.
            if wanted > pool.len() {
                pool.push(router);
            }
            (0..wanted).map(|i| pool[i % pool.len()]).collect()
        }
    };
    if shards.is_empty() {
        return Err(ConfigError::NoShards);
    }
    Ok(Placement::Pinned { router, shards })
}

/// Parses `1-3,6` into `[1, 2, 3, 6]`.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, ConfigError> {
    let bad = |reason: &str| ConfigError::CpuList { list: list.to_string(), reason: reason.into() };
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad("not a number"))?;
                let b: usize = b.trim().parse().map_err(|_| bad("not a number"))?;
                if a > b {
                    return Err(bad("range goes backwards"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad("not a number"))?),
        }
    }
    if cpus.is_empty() {
        return Err(bad("empty"));
    }
    Ok(cpus)
}

/// Formats `[0, 1, 2, 5]` as `0-2,5`.
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        while i + 1 < cpus.len() && cpus[i + 1] == cpus[i] + 1 {
            i += 1;
        }
        out.push(if cpus[i] == start { start.to_string() } else { format!("{start}-{}", cpus[i]) });
        i += 1;
    }
    out.join(",")
}

/// The CPUs this process may run on.
pub fn online_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> =
        core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
    cpus.sort_unstable();
    if cpus.is_empty() {
        cpus.push(0);
    }
    cpus
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut v = vec!["pinion", "serve"];
        v.extend_from_slice(extra);
        match Cli::parse_from(v).command {
            Command::Serve(a) => a,
            Command::Client(c) => panic!("parsed a client command: {c:?}"),
        }
    }

    #[test]
    fn cpu_lists_parse_and_format() {
        assert_eq!(parse_cpu_list("1-3,6").unwrap(), vec![1, 2, 3, 6]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert_eq!(format_cpu_list(&[0, 1, 2, 5]), "0-2,5");
    }

    #[test]
    fn default_placement_uses_other_cpus_for_shards() {
        let p = placement(&args(&[]), &[0, 1, 2, 3]).unwrap();
        assert_eq!(p, Placement::Pinned { router: 0, shards: vec![1, 2, 3] });
        let p = placement(&args(&[]), &[0]).unwrap();
        assert_eq!(p, Placement::Pinned { router: 0, shards: vec![0] });
    }

    #[test]
    fn missing_cpu_is_named() {
        let err = placement(&args(&["--shard-cores", "1-4"]), &[0, 1]).unwrap_err();
        assert_eq!(err.to_string(), "CPU 2 does not exist; this machine has CPUs 0-1");
    }

    #[test]
    fn explicit_shard_count_wraps_over_cpus() {
        let p = placement(&args(&["--shards", "2"]), &[0, 1]).unwrap();
        assert_eq!(p, Placement::Pinned { router: 0, shards: vec![1, 0] });
        let p = placement(&args(&["--shards", "3"]), &[0, 1]).unwrap();
        assert_eq!(p, Placement::Pinned { router: 0, shards: vec![1, 0, 1] });
        let p = placement(&args(&["--shards", "2", "--no-pin"]), &[0, 1]).unwrap();
        assert_eq!(p, Placement::Unpinned { shards: 2 });
    }
}
