//! The command line of pinion-bench: one subcommand per mode, option names in the spirit of
//! kafka-producer-perf-test and iggy-bench.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "pinion-bench",
    version,
    about = "Load generator for Kafka-compatible brokers, and probes of the machine's own limits"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Produce flat out or at a fixed rate; latency is send -> ack of each record.
    Produce(ProduceArgs),
    /// Fetch a topic from its start (or end) and check every partition arrives in order.
    Consume(ConsumeArgs),
    /// Produce and consume at once; latency is send -> consume of each record.
    E2e(E2eArgs),
    /// Create a topic (RF 1) and wait until every partition has a leader.
    CreateTopic(CreateTopicArgs),
    /// Machine limit: O_DIRECT sequential write, then read, bandwidth of a directory's disk.
    Disk(DiskArgs),
    /// Machine limit: latency of durable (O_DSYNC) appends at a fixed rate, spread over several
    /// files, as a broker's partitions make acks=all records durable.
    Durable(DurableArgs),
    /// Machine limit: TCP bandwidth between two threads over 127.0.0.1.
    Loopback(LoopbackArgs),
    /// Machine limit: latency of request/response round trips over 127.0.0.1 at a fixed rate,
    /// to an echo thread that does no work: TCP and thread wake-ups alone.
    RoundTrip(RoundTripArgs),
    /// Machine limit: how often, and for how long, the CPUs are taken away from a running
    /// thread (by the hypervisor on a VM, or by interrupts), with a thread spinning on each.
    Stalls(StallsArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ClusterArgs {
    /// host:port of a broker to bootstrap from.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use.
    #[arg(long, default_value = "pinion-bench")]
    pub topic: String,
    /// Partitions of the topic; it is created with this many (replication factor 1) if missing.
    #[arg(long, default_value_t = 8)]
    pub partitions: i32,
    /// client.id sent with every request.
    #[arg(long, default_value = "pinion-bench")]
    pub client_id: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Total records to send (producers) or read (consume mode), after the warm-up.
    #[arg(long, conflicts_with = "duration")]
    pub records: Option<u64>,
    /// Seconds to run after the warm-up (default 10 unless --records is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of load before measuring starts; their records are excluded from every figure.
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
    /// CPUs for the generator's threads, e.g. `0,1` or `2-5`; threads take them round robin.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Print the final summary as one JSON object on stdout (progress lines go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
}

impl RunArgs {
    pub fn duration(&self) -> Option<Duration> {
        match (self.records, self.duration) {
            (_, Some(secs)) => Some(Duration::from_secs_f64(secs)),
            (Some(_), None) => None,
            (None, None) => Some(Duration::from_secs(10)),
        }
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup.max(0.0))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ProducerArgs {
    /// Bytes of each record's value (keys are null).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Producer connections, each with its own writer and reader thread.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Close a partition's batch once it holds this many bytes (batch.size).
    #[arg(long, default_value_t = 1_000_000)]
    pub batch_bytes: usize,
    /// Wait at most this long for a batch to fill before sending it (linger.ms).
    #[arg(long, default_value_t = 5.0)]
    pub linger_ms: f64,
    /// Largest produce request (max.request.size, 1 MiB as in Kafka's producer); a request
    /// carries at most one batch per partition, as Kafka's clients do. With the default batch
    /// size a request holds one full batch, as librdkafka's do.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_request_bytes: usize,
    /// Memory for batches waiting to be sent (buffer.memory); generation pauses when full.
    #[arg(long, default_value_t = 32 << 20)]
    pub buffer_bytes: usize,
    /// 0 (no response), 1 (leader wrote it) or all (-1: durable on every replica).
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    pub acks: i16,
    /// Produce requests in flight on one connection (max.in.flight.requests.per.connection).
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Records per second over all producers; omitted means as fast as the broker takes them.
    /// Latency is then measured from each record's intended send time.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Compression codec of every batch.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Produce request timeout_ms.
    #[arg(long, default_value_t = 30_000)]
    pub request_timeout_ms: i32,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumerArgs {
    /// Consumer connections; the topic's partitions are split among them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
    /// Fetch max_bytes (fetch.max.bytes).
    #[arg(long, default_value_t = 50 << 20)]
    pub fetch_max_bytes: i32,
    /// Fetch partition_max_bytes (max.partition.fetch.bytes).
    #[arg(long, default_value_t = 1 << 20)]
    pub partition_max_bytes: i32,
    /// Fetch max_wait_ms (fetch.max.wait.ms).
    #[arg(long, default_value_t = 500)]
    pub fetch_max_wait_ms: i32,
    /// Skip the CRC-32C check of every fetched batch (Java's check.crcs=false).
    #[arg(long)]
    pub no_check_crc: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
    /// Where to start: the log start offset (and stop at the end offsets seen at start-up,
    /// unless --records or --duration stop it first) or the end.
    #[arg(long, value_enum, default_value_t = StartAt::Earliest)]
    pub from: StartAt,
}

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub producer: ProducerArgs,
    #[command(flatten)]
    pub consumer: ConsumerArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CreateTopicArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Args, Debug, Clone)]
pub struct DiskArgs {
    /// Directory to write the probe files in (they are deleted afterwards).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Bytes per write and per read.
    #[arg(long, default_value_t = 1 << 20)]
    pub io_bytes: usize,
    /// Bytes to write (and read back) in total, in each pass.
    #[arg(long, default_value_t = 2 << 30)]
    pub total_bytes: u64,
    /// Passes to make, one per count: each writes the total spread over this many files at once,
    /// a thread each, as a broker writes several partitions at once. The best pass is the limit.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub streams: Vec<u16>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DurableArgs {
    /// Directory to write the probe files in (they are deleted afterwards).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Files written at once, each by its own thread (one per partition with a write in flight).
    #[arg(long, default_value_t = 5)]
    pub files: usize,
    /// Bytes per write.
    #[arg(long, default_value_t = 256 << 10)]
    pub io_bytes: usize,
    /// Total rate over all files, in MB/s (10^6 bytes).
    #[arg(long)]
    pub mb_per_s: f64,
    /// Seconds to write.
    #[arg(long, default_value_t = 8.0)]
    pub duration: f64,
    /// Write over blocks already written and synced (zeros, before the clock starts) instead of
    /// appending: the shape of pinion's small durable writes, which land on zeros it keeps
    /// written ahead of each partition (`--zero-ahead-kib`).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct LoopbackArgs {
    /// Seconds to stream, per run.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Runs; the best is the limit (a shared machine only ever slows a run down).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Bytes per write() call.
    #[arg(long, default_value_t = 1 << 20)]
    pub chunk_bytes: usize,
    /// CPUs for the sender and the receiver thread, e.g. `0,1`.
    #[arg(long)]
    pub cpus: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct RoundTripArgs {
    /// Requests per second.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    /// Seconds to run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Bytes of each request (the default is about a produce request carrying one 1 KiB record).
    #[arg(long, default_value_t = 1200)]
    pub request_bytes: usize,
    /// Bytes of each response (about a produce response for one partition).
    #[arg(long, default_value_t = 64)]
    pub response_bytes: usize,
    /// CPU for the echo thread (where the broker would run).
    #[arg(long)]
    pub server_cpu: Option<usize>,
    /// CPUs for the client's writer and reader threads, e.g. `1` (as the generator's `--cpus`).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct StallsArgs {
    /// CPUs to spin on, one thread each, e.g. `0,1` (default: every CPU).
    #[arg(long)]
    pub cpus: Option<String>,
    /// Seconds to spin.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec's value in the low three bits of a batch's attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("acks must be 0, 1 or all, not {s:?}")),
    }
}

/// Parses `1-3,6` into `[1, 2, 3, 6]`.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let number = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("bad CPU list {list:?}"));
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (number(a)?, number(b)?);
                if a > b {
                    return Err(format!("bad CPU list {list:?}: range goes backwards"));
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(number(part)?),
        }
    }
    if cpus.is_empty() {
        return Err(format!("bad CPU list {list:?}: empty"));
    }
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0,2-4").unwrap(), vec![0, 2, 3, 4]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn acks() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
    }
}
