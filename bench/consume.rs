//! Consumers. Each owns one connection and a share of the topic's partitions, and keeps one
//! fetch in flight, as Kafka's consumers do. As librdkafka's fetcher does, the next fetch goes
//! out as soon as a response's batch headers say where it ends, and the response's records are
//! checked while the broker answers that fetch. Every partition must arrive in order with
//! nothing missing: each batch must start exactly where the previous one ended and hold as many
//! records as its offsets span, and its CRC must match. In end-to-end mode every value carries
//! a stamp, whose per-producer, per-partition sequence numbers must also be contiguous; the
//! latency of a record runs from its intended send time to the moment its fetch response
//! arrived.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::args::ConsumerArgs;
use crate::batch::{for_each_value, Batches, Stamp};
use crate::check::{check_crc, OffsetCheck, SequenceCheck};
use crate::conn::{decode_response, read_frame, Connection, TopicInfo, Wanted};
use crate::produce::{pin, AckedEnds};
use crate::stats::{latency_us, LatencyCell, Stats};

/// v4 is the first with RecordBatch v2 and log start offsets; v13 names topics by id.
const FETCH: Wanted = Wanted { key: ApiKey::Fetch, min: 4, max: 16 };
/// After the producers finish, how long records may take to show up before they count as lost.
const LOST_AFTER: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// The consumer's read buffer: enough for a response's size prefix and header; the records are
/// read straight into the response's own buffer.
const READ_BUFFER_BYTES: usize = 16 << 10;

pub struct ConsumerPlan {
    pub id: usize,
    pub topic: TopicInfo,
    pub client_id: String,
    pub args: ConsumerArgs,
    /// (partition, first offset to read, offset to stop at).
    pub partitions: Vec<(i32, i64, Option<i64>)>,
    /// End-to-end mode: the producers' acknowledged ends, and how many producers there are.
    pub e2e: Option<(AckedEnds, u32)>,
    pub cpu: Option<usize>,
}

pub fn spawn(plan: ConsumerPlan, stats: Arc<Stats>) -> Result<JoinHandle<()>> {
    let mut conn = Connection::connect(&plan.topic.leader, &plan.client_id)?;
    conn.set_read_buffer(READ_BUFFER_BYTES)?;
    let version = conn.version(&FETCH)?;
    conn.stream.set_read_timeout(Some(RESPONSE_TIMEOUT))?;
    conn.stream.set_write_timeout(Some(RESPONSE_TIMEOUT))?;
    let cell = stats.consumed.new_cell();
    let handle = thread::Builder::new().name(format!("consumer-{}", plan.id)).spawn(move || {
        pin(plan.cpu);
        let id = plan.id;
        let mut consumer = Consumer::new(plan, version, conn, &stats, cell);
        if let Err(e) = consumer.run() {
            stats.fail(|| format!("consumer {id}: {e:#}"));
        }
    })?;
    Ok(handle)
}

struct Consumer<'a> {
    conn: Connection,
    version: i16,
    topic: TopicInfo,
    args: ConsumerArgs,
    partitions: Vec<OffsetCheck>,
    /// Offset to stop at, by position in `partitions`.
    stop_at: Vec<Option<i64>>,
    e2e: Option<(AckedEnds, u32)>,
    sequences: Option<SequenceCheck>,
    stats: &'a Stats,
    cell: LatencyCell,
}

impl Consumer<'_> {
    fn new(
        plan: ConsumerPlan,
        version: i16,
        conn: Connection,
        stats: &Stats,
        cell: LatencyCell,
    ) -> Consumer<'_> {
        let partitions = plan.topic.partitions.len();
        Consumer {
            conn,
            version,
            sequences: plan.e2e.as_ref().map(|e| SequenceCheck::new(e.1 as usize, partitions)),
            partitions: plan
                .partitions
                .iter()
                .map(|&(partition, next_offset, _)| OffsetCheck { partition, next_offset })
                .collect(),
            stop_at: plan.partitions.iter().map(|p| p.2).collect(),
            topic: plan.topic,
            args: plan.args,
            e2e: plan.e2e,
            stats,
            cell,
        }
    }

    fn run(&mut self) -> Result<()> {
        let mut last_progress = std::time::Instant::now();
        let mut arrived: Option<Arrived> = None;
        loop {
            if self.finished() {
                return match arrived {
                    Some(a) => self.check(a),
                    None => Ok(()),
                };
            }
            let wanted: Vec<usize> =
                (0..self.partitions.len()).filter(|&i| !self.partition_done(i)).collect();
            let correlation_id = self.send_fetch(&wanted)?;
            if let Some(a) = arrived.take() {
                self.check(a)?;
            }
            let a = self.receive(correlation_id)?;
            if a.records > 0 {
                last_progress = std::time::Instant::now();
            } else if self.stats.producers_done.load(Ordering::SeqCst) && last_progress.elapsed() > LOST_AFTER
            {
                bail!("records are missing: {}", self.missing());
            }
            arrived = Some(a);
        }
    }

    fn finished(&self) -> bool {
        if self.e2e.is_some() {
            // End-to-end: run until every acknowledged record has arrived (or a failure).
            self.stats.failed()
                || (self.stats.producers_done.load(Ordering::SeqCst)
                    && (0..self.partitions.len()).all(|i| self.partition_done(i)))
        } else {
            self.stats.stopping() || (0..self.partitions.len()).all(|i| self.partition_done(i))
        }
    }

    fn partition_done(&self, i: usize) -> bool {
        let p = &self.partitions[i];
        match (&self.e2e, self.stop_at[i]) {
            (Some((ends, _)), _) => {
                self.stats.producers_done.load(Ordering::SeqCst)
                    && p.next_offset >= ends[p.partition as usize].load(Ordering::SeqCst)
            }
            (None, Some(stop)) => p.next_offset >= stop,
            (None, None) => false,
        }
    }

    fn missing(&self) -> String {
        let Some((ends, _)) = &self.e2e else { return String::new() };
        self.partitions
            .iter()
            .filter_map(|p| {
                let end = ends[p.partition as usize].load(Ordering::SeqCst);
                (p.next_offset < end)
                    .then(|| format!("partition {} stops at {} of {end}", p.partition, p.next_offset))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Sends a fetch for the given partitions from where the last response ended.
    fn send_fetch(&mut self, wanted: &[usize]) -> Result<i32> {
        let partitions = wanted
            .iter()
            .map(|&i| {
                FetchPartition::default()
                    .with_partition(self.partitions[i].partition)
                    .with_fetch_offset(self.partitions[i].next_offset)
                    .with_partition_max_bytes(self.args.partition_max_bytes)
            })
            .collect();
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(self.args.fetch_max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(self.args.fetch_max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(self.topic.name.clone())))
                .with_topic_id(self.topic.id)
                .with_partitions(partitions)]);
        let (correlation_id, frame) = self.conn.encode_request(ApiKey::Fetch, self.version, &request)?;
        std::io::Write::write_all(&mut self.conn.stream, &frame).context("writing a fetch request")?;
        Ok(correlation_id)
    }

    /// Reads a fetch response and moves each partition past its whole batches, checking from
    /// their headers that they continue it with nothing missing; the records are checked later
    /// (`check`).
    fn receive(&mut self, correlation_id: i32) -> Result<Arrived> {
        let response = read_frame(&mut self.conn.reader).context("waiting for a fetch response")?;
        let now_ns = self.stats.clock.now_ns();
        let response: FetchResponse = decode_response(ApiKey::Fetch, self.version, correlation_id, response)?;
        if let Some(e) = ResponseError::try_from_code(response.error_code) {
            bail!("fetch failed: {e}");
        }
        let mut arrived = Arrived { now_ns, records: 0, sets: Vec::new() };
        for topic in response.responses {
            for data in topic.partitions {
                if let Some(e) = ResponseError::try_from_code(data.error_code) {
                    bail!("fetch of partition {} failed: {e}", data.partition_index);
                }
                let Some(i) = self.partitions.iter().position(|p| p.partition == data.partition_index) else {
                    bail!("fetch response names partition {} it was not asked for", data.partition_index);
                };
                let Some(records) = data.records else { continue };
                let mut walk = Batches::new(&records);
                let mut whole = 0;
                while let Some((view, _)) = walk.next_batch()? {
                    self.partitions[i].take(&view)?;
                    arrived.records += view.records_count as u64;
                    whole += view.total_bytes;
                }
                if whole > 0 {
                    arrived.sets.push((self.partitions[i].partition, records.slice(..whole)));
                }
            }
        }
        Ok(arrived)
    }

    /// Checks the records of a response's whole batches (CRC, and the stamps in end-to-end
    /// mode) and counts them.
    fn check(&mut self, arrived: Arrived) -> Result<()> {
        let now_ns = arrived.now_ns;
        for (partition, records) in arrived.sets {
            let mut walk = Batches::new(&records);
            while let Some((view, batch)) = walk.next_batch()? {
                if !self.args.no_check_crc {
                    check_crc(partition, &view, batch)?;
                }
                let mut payload_bytes = 0;
                if let Some(sequences) = &mut self.sequences {
                    payload_bytes = stamps(partition, batch, view.codec, now_ns, sequences, &self.cell)?;
                }
                self.stats.consumed.add(
                    view.records_count as u64,
                    payload_bytes,
                    view.total_bytes as u64,
                    now_ns,
                );
            }
        }
        Ok(())
    }
}

/// A fetch response whose batch headers have been checked and whose records have not.
struct Arrived {
    now_ns: u64,
    records: u64,
    /// Each partition's whole batches.
    sets: Vec<(i32, Bytes)>,
}

/// Checks the stamped values of one batch and records their end-to-end latency; returns the
/// value bytes.
fn stamps(
    partition: i32,
    batch: &[u8],
    codec: i16,
    now_ns: u64,
    sequences: &mut SequenceCheck,
    cell: &LatencyCell,
) -> Result<u64> {
    let mut hist = cell.lock().expect("latency lock");
    let mut payload_bytes = 0;
    for_each_value(batch, codec, |value| {
        let Some(stamp) = Stamp::decode(value) else {
            bail!("partition {partition}: a record of {} bytes carries no stamp", value.len());
        };
        sequences.take(partition, &stamp)?;
        payload_bytes += value.len() as u64;
        hist.record(latency_us(stamp.send_ns, now_ns)).expect("latency within bounds");
        Ok(())
    })?;
    Ok(payload_bytes)
}
