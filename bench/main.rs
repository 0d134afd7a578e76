//! pinion-bench: a load generator for Kafka-compatible brokers (it speaks only the Kafka wire
//! protocol, so it measures pinion and any other broker alike), and probes of the machine's own
//! limits (disk, loopback TCP) to set the figures against.

mod args;
mod batch;
mod check;
mod conn;
mod consume;
mod probe;
mod produce;
mod report;
mod stats;
mod wire;

use std::process::ExitCode;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;
use serde_json::{json, Value};

use args::{Cli, ClusterArgs, ConsumerArgs, Mode, ProducerArgs, RunArgs, StartAt};
use conn::{Connection, TopicInfo};
use consume::ConsumerPlan;
use produce::{AckedEnds, ProducerPlan};
use report::{Outcome, Plan};
use stats::Stats;

/// Producers start their schedules this long after they are spawned, together.
const START_DELAY: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.mode) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("pinion-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one mode; false if the run found errors (lost, duplicated or rejected records).
fn run(mode: Mode) -> Result<bool> {
    match mode {
        Mode::Produce(a) => load(&a.cluster, &a.run, Some(&a.producer), None, StartAt::Latest),
        Mode::Consume(a) => load(&a.cluster, &a.run, None, Some(&a.consumer), a.from),
        Mode::E2e(a) => load(&a.cluster, &a.run, Some(&a.producer), Some(&a.consumer), StartAt::Latest),
        Mode::CreateTopic(a) => {
            let mut conn = Connection::connect(&a.cluster.bootstrap, &a.cluster.client_id)?;
            let topic = conn::ensure_topic(&mut conn, &a.cluster.topic, a.cluster.partitions)?;
            println!(
                "topic {} has {} partitions, led by {}",
                topic.name,
                topic.partitions.len(),
                topic.leader
            );
            Ok(true)
        }
        Mode::Disk(a) => {
            show(&probe::disk(&a)?, a.json, probe::print_disk);
            Ok(true)
        }
        Mode::Durable(a) => {
            show(&probe::durable(&a)?, a.json, probe::print_durable);
            Ok(true)
        }
        Mode::Loopback(a) => {
            show(&probe::loopback(&a)?, a.json, probe::print_loopback);
            Ok(true)
        }
        Mode::RoundTrip(a) => {
            show(&probe::round_trip(&a)?, a.json, probe::print_round_trip);
            Ok(true)
        }
        Mode::Stalls(a) => {
            show(&probe::stalls(&a)?, a.json, probe::print_stalls);
            Ok(true)
        }
    }
}

/// Prints a probe's result as JSON, or in words.
fn show(result: &serde_json::Value, json: bool, in_words: fn(&serde_json::Value)) {
    if json {
        println!("{result}");
    } else {
        in_words(result);
    }
}

/// Hands out the generator's CPUs round robin, one per thread, in spawn order.
struct CpuRing {
    cpus: Vec<usize>,
    next: usize,
}

impl CpuRing {
    fn new(list: &Option<String>) -> Result<CpuRing> {
        let cpus = match list {
            Some(l) => args::parse_cpu_list(l).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        Ok(CpuRing { cpus, next: 0 })
    }

    fn take(&mut self) -> Option<usize> {
        let cpu = self.cpus.get(self.next % self.cpus.len().max(1)).copied();
        self.next += 1;
        cpu
    }
}

fn load(
    cluster: &ClusterArgs,
    run: &RunArgs,
    producer: Option<&ProducerArgs>,
    consumer: Option<&ConsumerArgs>,
    start_at: StartAt,
) -> Result<bool> {
    let stats = Stats::new();
    let mut admin = Connection::connect(&cluster.bootstrap, &cluster.client_id)?;
    let topic = match producer {
        Some(_) => conn::ensure_topic(&mut admin, &cluster.topic, cluster.partitions)?,
        None => match conn::describe_topic(&mut admin, &cluster.topic)? {
            Some(t) => t,
            None => bail!("topic {} does not exist: produce to it first", cluster.topic),
        },
    };
    if topic.partitions.iter().enumerate().any(|(i, &p)| p != i as i32) {
        bail!("topic {} does not number its partitions 0..{}", topic.name, topic.partitions.len());
    }
    let mut cpus = CpuRing::new(&run.cpus)?;
    let acked_ends: AckedEnds = Arc::new(topic.partitions.iter().map(|_| AtomicI64::new(0)).collect());

    // A consume-only run with no limit reads up to the end offsets seen at start-up.
    let consume_to_end = producer.is_none() && run.records.is_none() && run.duration.is_none();
    let mut consumers = Vec::new();
    if let Some(c) = consumer {
        let start =
            conn::list_offsets(&mut admin, &topic, if start_at == StartAt::Earliest { -2 } else { -1 })?;
        let end = if consume_to_end { Some(conn::list_offsets(&mut admin, &topic, -1)?) } else { None };
        for (p, &offset) in &start {
            acked_ends[*p as usize].store(offset, std::sync::atomic::Ordering::SeqCst);
        }
        let count = c.consumers.max(1).min(topic.partitions.len());
        for id in 0..count {
            let partitions = topic
                .partitions
                .iter()
                .skip(id)
                .step_by(count)
                .map(|p| (*p, start[p], end.as_ref().map(|e| e[p])))
                .collect();
            let plan = ConsumerPlan {
                id,
                topic: topic.clone(),
                client_id: cluster.client_id.clone(),
                args: c.clone(),
                partitions,
                e2e: producer.map(|p| (acked_ends.clone(), p.producers.max(1) as u32)),
                cpu: cpus.take(),
            };
            consumers.push(consume::spawn(plan, stats.clone())?);
        }
    }
    // The broker's own count of what the run stored, to check the generator's count against.
    let ends_before = match producer {
        Some(_) => Some(conn::list_offsets(&mut admin, &topic, -1)?),
        None => None,
    };
    let mut producers = Vec::new();
    if let Some(p) = producer {
        let count = p.producers.max(1);
        let start_ns = stats.clock.now_ns() + START_DELAY.as_nanos() as u64;
        for id in 0..count {
            let rate = p.rate.map(|r| r / count as f64);
            // Producers' schedules interleave rather than fire together.
            let offset_ns = rate.map_or(0, |r| (1e9 / r * id as f64 / count as f64) as u64);
            let plan = ProducerPlan {
                id: id as u32,
                topic: topic.clone(),
                client_id: cluster.client_id.clone(),
                args: p.clone(),
                rate,
                start_ns: start_ns + offset_ns,
                stamp_values: consumer.is_some(),
                writer_cpu: cpus.take(),
                reader_cpu: cpus.take(),
            };
            producers.push(produce::spawn(plan, stats.clone(), acked_ends.clone())?);
        }
    }
    let plan = Plan {
        warmup: run.warmup(),
        duration: if consume_to_end { None } else { run.duration() },
        produce_records: producer.and(run.records),
        consume_records: if producer.is_none() { run.records } else { None },
        interval: Duration::from_secs_f64(run.interval.max(0.1)),
        show_produce: producer.is_some(),
        show_consume: consumer.is_some(),
        json: run.json,
        rate: producer.and_then(|p| p.rate),
    };
    let outcome = report::run(&stats, &plan, producers, consumers);
    if let (Some(_), Some(_)) = (producer, consumer) {
        check_e2e_counts(&stats, &outcome);
    }
    let stored = match &ends_before {
        Some(before) => {
            Some(check_stored(&stats, &mut admin, &topic, before, outcome.produce.total.records)?)
        }
        None => None,
    };
    let errors = stats.error_count();
    summarize(&topic, &plan, &outcome, errors, stored, run.json);
    Ok(errors == 0)
}

/// How long the end offsets may take to cover every acknowledged record.
const STORED_WAIT: Duration = Duration::from_secs(5);

/// Asks the broker how many records the run added to the topic (end offsets after minus
/// before) and counts an error unless that is what the producers counted as acknowledged.
fn check_stored(
    stats: &Stats,
    admin: &mut Connection,
    topic: &TopicInfo,
    before: &std::collections::HashMap<i32, i64>,
    acknowledged: u64,
) -> Result<u64> {
    let deadline = std::time::Instant::now() + STORED_WAIT;
    loop {
        let after = conn::list_offsets(admin, topic, -1)?;
        let stored: i64 = after.iter().map(|(p, end)| end - before.get(p).copied().unwrap_or(0)).sum();
        let stored = stored.max(0) as u64;
        if stored == acknowledged || std::time::Instant::now() > deadline || stats.failed() {
            if stored != acknowledged && !stats.failed() {
                stats.error(|| {
                    format!("the broker's end offsets grew by {stored} records, but {acknowledged} were acknowledged")
                });
            }
            return Ok(stored);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// End to end, every acknowledged record must have been consumed exactly once.
fn check_e2e_counts(stats: &Stats, outcome: &Outcome) {
    let (produced, consumed) = (outcome.produce.total.records, outcome.consume.total.records);
    if stats.failed() {
        return; // the failure was reported; counts would only repeat it
    }
    if produced != consumed {
        stats.error(|| format!("{produced} records were acknowledged but {consumed} consumed"));
    }
}

fn summarize(
    topic: &TopicInfo,
    plan: &Plan,
    outcome: &Outcome,
    errors: u64,
    stored: Option<u64>,
    as_json: bool,
) {
    if as_json {
        let mut v = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "topic": topic.name,
            "partitions": topic.partitions.len(),
            "errors": errors,
            "generator_cpu_s": generator_cpu_s(),
            "rate": plan.rate,
            "broker_stored_records": stored,
        });
        if plan.show_produce {
            v["produce"] = report::flow_json(&outcome.produce);
            v["produce"]["send_wait_ms"] = report::percentiles_json(&outcome.send_wait);
        }
        if plan.show_consume {
            let key = if plan.show_produce { "e2e" } else { "consume" };
            v[key] = report::flow_json(&outcome.consume);
        }
        println!("{}", Value::to_string(&v));
        return;
    }
    if plan.show_produce {
        report::print_text("produce", &outcome.produce);
        if let Some(n) = stored {
            println!("  the broker's end offsets grew by {n} records");
        }
    }
    if plan.show_consume {
        report::print_text(if plan.show_produce { "e2e" } else { "consume" }, &outcome.consume);
    }
    if errors > 0 {
        println!("errors: {errors} (see above)");
    }
}

/// CPU time (user + system) this process has used so far, in seconds.
fn generator_cpu_s() -> f64 {
    // SAFETY: getrusage fills a plain struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return 0.0;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
