//! Producers. Each owns one connection driven by two threads: the writer generates records into
//! batches (sticky partitioning, as Kafka's clients do), frames requests and writes them,
//! keeping up to `max_in_flight` unanswered; the reader takes each response as it arrives,
//! timestamps it at once and records the latency of every record it acknowledges.
//!
//! Latency runs from a record's intended send time: at a fixed rate, record n of a producer is
//! due at `start + n / rate` whether or not the producer could send it then, so a stall in the
//! broker shows up in the latency of every record it delayed (no coordinated omission). Flat
//! out, a record is due when it is generated.

use std::collections::VecDeque;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, ProduceResponse};

use crate::args::ProducerArgs;
use crate::batch::{record_bytes_max, BatchBuilder, Stamp, STAMP_BYTES};
use crate::conn::{decode_response, read_frame, Connection, TopicInfo};
use crate::stats::{latency_us, LatencyCell, Stats};
use crate::wire::{ProduceFrame, ProduceTarget, PRODUCE};

/// Values are cut from a pool of random letters this large, each at a random place, so that a
/// compressed batch finds few repeats beyond the letters' own entropy (a single repeated
/// value, as kafka-producer-perf-test sends, would compress a hundredfold).
const PAYLOAD_POOL_BYTES: usize = 1 << 20;
/// Shortest sleep of the writer. A timed sleep costs 13-20 µs of CPU in a VM (the timer is
/// emulated), so at high rates the writer wakes every 50 µs and sends everything due rather
/// than sleeping between records; the records it sends late carry that lateness in their
/// latency, which is measured from their due time.
const SLEEP_MIN: Duration = Duration::from_micros(50);
/// How long the reader waits for a response beyond the request's own timeout.
const RESPONSE_GRACE: Duration = Duration::from_secs(10);

pub struct ProducerPlan {
    pub id: u32,
    pub topic: TopicInfo,
    pub client_id: String,
    pub args: ProducerArgs,
    /// This producer's records per second; `None` is flat out.
    pub rate: Option<f64>,
    /// Where this producer's schedule starts (ns on the run's clock).
    pub start_ns: u64,
    /// Start every value with a `Stamp` (end-to-end mode).
    pub stamp_values: bool,
    pub writer_cpu: Option<usize>,
    pub reader_cpu: Option<usize>,
}

/// The next offset after the last acknowledged record of every partition (index = partition).
pub type AckedEnds = Arc<Vec<AtomicI64>>;

/// Connects and starts the producer; the handle finishes once every request is answered.
pub fn spawn(plan: ProducerPlan, stats: Arc<Stats>, acked_ends: AckedEnds) -> Result<JoinHandle<()>> {
    let conn = Connection::connect(&plan.topic.leader, &plan.client_id)?;
    let version = conn.version(&PRODUCE)?;
    if plan.stamp_values && plan.args.record_size < STAMP_BYTES {
        bail!("end-to-end mode needs --record-size of at least {STAMP_BYTES} bytes");
    }
    let response_timeout = Duration::from_millis(plan.args.request_timeout_ms.max(0) as u64) + RESPONSE_GRACE;
    conn.stream.set_read_timeout(Some(response_timeout))?;
    conn.stream.set_write_timeout(Some(response_timeout))?;
    let name = format!("producer-{}", plan.id);
    let handle = thread::Builder::new().name(name).spawn(move || {
        pin(plan.writer_cpu);
        let id = plan.id;
        if let Err(e) = run(plan, version, conn, &stats, acked_ends) {
            stats.fail(|| format!("producer {id}: {e:#}"));
        }
    })?;
    Ok(handle)
}

pub fn pin(cpu: Option<usize>) {
    if let Some(id) = cpu {
        if !core_affinity::set_for_current(core_affinity::CoreId { id }) {
            eprintln!("pinion-bench: cannot pin a thread to CPU {id}");
        }
    }
}

/// Requests written and not yet answered, shared by the writer and the reader.
struct InFlight {
    count: AtomicUsize,
    writer: Thread,
    reader_gone: AtomicBool,
}

#[derive(Clone, Copy)]
struct BatchMeta {
    partition: i32,
    first_seq: u64,
    first_due_ns: u64,
    records: u32,
    payload_bytes: u64,
    batch_bytes: u64,
}

struct RequestMeta {
    correlation_id: i32,
    batches: Vec<BatchMeta>,
}

#[derive(Clone, Copy)]
struct Schedule {
    start_ns: u64,
    ns_per_record: f64,
}

impl Schedule {
    fn due_ns(&self, seq: u64) -> u64 {
        self.start_ns + (seq as f64 * self.ns_per_record) as u64
    }
}

fn run(
    plan: ProducerPlan,
    version: i16,
    conn: Connection,
    stats: &Arc<Stats>,
    acked_ends: AckedEnds,
) -> Result<()> {
    let schedule = plan.rate.map(|r| Schedule { start_ns: plan.start_ns, ns_per_record: 1e9 / r });
    let inflight = Arc::new(InFlight {
        count: AtomicUsize::new(0),
        writer: thread::current(),
        reader_gone: AtomicBool::new(false),
    });
    let acks = plan.args.acks;
    let (meta_tx, meta_rx) = mpsc::channel::<RequestMeta>();
    let reader = if acks == 0 {
        None
    } else {
        let (stats, inflight, cell) = (stats.clone(), inflight.clone(), stats.produced.new_cell());
        let (reader, reader_cpu) = (conn.reader, plan.reader_cpu);
        Some(thread::Builder::new().name(format!("acks-{}", plan.id)).spawn(move || {
            pin(reader_cpu);
            let mut acks = AckReader { reader, version, schedule, stats: &stats, cell, acked_ends };
            if let Err(e) = acks.run(&meta_rx, &inflight) {
                stats.fail(|| format!("producer {} reading acks: {e:#}", plan.id));
            }
            inflight.reader_gone.store(true, Ordering::SeqCst);
            inflight.writer.unpark();
        })?)
    };
    set_timer_slack_ns(1);
    let partitions = plan.topic.partitions.len();
    let args = &plan.args;
    let mut writer = Writer {
        target: ProduceTarget {
            version,
            acks,
            timeout_ms: args.request_timeout_ms,
            topic: plan.topic.name.clone(),
            topic_id: plan.topic.id,
            client_id: plan.client_id.clone(),
        },
        stream: conn.stream,
        next_correlation_id: 1,
        builder: BatchBuilder::new(args.compression),
        open: None,
        closed: VecDeque::new(),
        closed_bytes: 0,
        sending: Vec::new(),
        pool: Vec::new(),
        frame: ProduceFrame::default(),
        partitions: plan.topic.partitions.clone(),
        sticky: plan.id as usize % partitions,
        request_no: 0,
        in_request: vec![0; partitions],
        next_seq: 0,
        partition_seq: vec![0; partitions],
        claimed: 0,
        exhausted: false,
        payload: payload(args.record_size + PAYLOAD_POOL_BYTES, plan.id),
        record_size: args.record_size,
        batch_bytes: args.batch_bytes.max(1),
        max_request_bytes: args.max_request_bytes.max(1),
        buffer_bytes: args.buffer_bytes.max(1),
        linger_ns: (args.linger_ms.max(0.0) * 1e6) as u64,
        max_in_flight: args.max_in_flight.max(1),
        claim_chunk: (args.batch_bytes / record_bytes_max(args.record_size)).max(1) as u64,
        producer_id: plan.id,
        stamp_values: plan.stamp_values,
        schedule,
        stats: stats.clone(),
        send_wait: stats.send_wait.new_cell(),
        inflight: inflight.clone(),
        meta_tx,
    };
    let result = writer.run();
    drop(writer); // closes the request channel: the reader ends after the last response
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    result
}

struct Open {
    buf: Vec<u8>,
    partition: usize,
    first_seq: u64,
    first_due_ns: u64,
    payload_bytes: u64,
}

struct Closed {
    buf: Vec<u8>,
    partition: usize,
    meta: BatchMeta,
}

struct Writer {
    target: ProduceTarget,
    stream: TcpStream,
    next_correlation_id: i32,
    builder: BatchBuilder,
    /// The one batch being filled (for partition `sticky`).
    open: Option<Open>,
    /// Full or lingered batches waiting for a request, oldest first.
    closed: VecDeque<Closed>,
    closed_bytes: usize,
    /// Batches of the request being written.
    sending: Vec<Closed>,
    /// Batch buffers to reuse.
    pool: Vec<Vec<u8>>,
    frame: ProduceFrame,
    partitions: Vec<i32>,
    sticky: usize,
    /// Number of the request being assembled, and in which request each partition last was,
    /// so that a request holds at most one batch per partition.
    request_no: u64,
    in_request: Vec<u64>,
    /// This producer's next record number (its place in the schedule).
    next_seq: u64,
    /// Next sequence number per partition, for stamped values.
    partition_seq: Vec<u64>,
    /// Records taken from the shared budget and not generated yet.
    claimed: u64,
    exhausted: bool,
    payload: Vec<u8>,
    record_size: usize,
    batch_bytes: usize,
    max_request_bytes: usize,
    buffer_bytes: usize,
    linger_ns: u64,
    max_in_flight: usize,
    claim_chunk: u64,
    producer_id: u32,
    stamp_values: bool,
    schedule: Option<Schedule>,
    stats: Arc<Stats>,
    /// Due time -> written, per batch.
    send_wait: LatencyCell,
    inflight: Arc<InFlight>,
    meta_tx: mpsc::Sender<RequestMeta>,
}

impl Writer {
    fn run(&mut self) -> Result<()> {
        loop {
            if self.inflight.reader_gone.load(Ordering::SeqCst) {
                return Ok(()); // the reader reported why
            }
            let now_ns = self.stats.clock.now_ns();
            let stopping = self.stats.stopping() || self.exhausted;
            if !stopping {
                self.generate(now_ns)?;
            }
            let slot_free = self.inflight.count.load(Ordering::SeqCst) < self.max_in_flight;
            // As in Kafka's producer, a batch takes records until it is full or a request takes
            // it; linger only says when a partly filled batch may be taken. So while every
            // request slot is busy, records pile into the open batch rather than into more,
            // smaller batches.
            if let Some(open) = &self.open {
                let lingered = stopping || self.exhausted || now_ns >= open.first_due_ns + self.linger_ns;
                if lingered && slot_free {
                    self.close()?;
                }
            }
            if !self.closed.is_empty() && slot_free {
                self.send()?;
                continue;
            }
            if (stopping || self.exhausted) && self.open.is_none() && self.closed.is_empty() {
                return Ok(());
            }
            self.wait(now_ns);
        }
    }

    /// Sleeps until the next thing to do: a record falls due, the open batch's linger ends
    /// (when a request slot is free to take it), or the reader frees a request slot (it
    /// unparks this thread).
    fn wait(&self, now_ns: u64) {
        let can_generate = !self.stats.stopping() && !self.exhausted && self.closed_bytes < self.buffer_bytes;
        let mut deadline = None;
        if can_generate {
            match self.schedule {
                Some(s) => deadline = Some(s.due_ns(self.next_seq)),
                None => return, // flat out: go on generating
            }
        }
        let slot_free = self.inflight.count.load(Ordering::SeqCst) < self.max_in_flight;
        if let (Some(open), true) = (&self.open, slot_free) {
            let linger_end = open.first_due_ns + self.linger_ns;
            deadline = Some(deadline.map_or(linger_end, |d: u64| d.min(linger_end)));
        }
        match deadline {
            Some(d) if d <= now_ns => {}
            Some(d) => thread::park_timeout(Duration::from_nanos(d - now_ns).max(SLEEP_MIN)),
            None => thread::park_timeout(Duration::from_millis(100)),
        }
    }

    /// Generates the records due by `now_ns` (flat out: until a batch closes or the buffer is
    /// full).
    fn generate(&mut self, now_ns: u64) -> Result<()> {
        loop {
            if self.closed_bytes >= self.buffer_bytes {
                return Ok(());
            }
            let due_ns = match self.schedule {
                Some(s) => {
                    let due = s.due_ns(self.next_seq);
                    if due > now_ns {
                        return Ok(());
                    }
                    due
                }
                None => now_ns,
            };
            if self.claimed == 0 {
                self.claimed = self.stats.take_budget(self.claim_chunk);
                if self.claimed == 0 {
                    self.exhausted = true;
                    return Ok(());
                }
            }
            self.claimed -= 1;
            if self.append(due_ns)? && self.schedule.is_none() {
                return Ok(()); // let a free request slot take the batch at once
            }
        }
    }

    /// Appends one record due at `due_ns`; true if that closed a batch.
    fn append(&mut self, due_ns: u64) -> Result<bool> {
        let timestamp_ms = self.stats.clock.wall_ms(due_ns);
        let open = match &mut self.open {
            Some(open) => open,
            None => {
                let mut buf = self.pool.pop().unwrap_or_else(|| Vec::with_capacity(self.batch_bytes + 256));
                self.builder.begin(&mut buf, timestamp_ms);
                self.open.insert(Open {
                    buf,
                    partition: self.sticky,
                    first_seq: self.next_seq,
                    first_due_ns: due_ns,
                    payload_bytes: 0,
                })
            }
        };
        let start =
            (mix(self.next_seq ^ u64::from(self.producer_id) << 40) % PAYLOAD_POOL_BYTES as u64) as usize;
        if self.stamp_values {
            let sequence = self.partition_seq[open.partition];
            self.partition_seq[open.partition] += 1;
            let stamp = Stamp {
                send_ns: due_ns,
                producer: self.producer_id,
                partition: self.partitions[open.partition] as u32,
                sequence,
            };
            let rest = &self.payload[start..start + self.record_size - STAMP_BYTES];
            self.builder.append(&mut open.buf, timestamp_ms, &stamp.encode(), rest);
        } else {
            let value = &self.payload[start..start + self.record_size];
            self.builder.append(&mut open.buf, timestamp_ms, &[], value);
        }
        open.payload_bytes += self.record_size as u64;
        self.next_seq += 1;
        let full = self.builder.size(&open.buf) + record_bytes_max(self.record_size) > self.batch_bytes;
        if full {
            self.close()?;
        }
        Ok(full)
    }

    /// Finishes the open batch and queues it; the next batch goes to the next partition.
    fn close(&mut self) -> Result<()> {
        let Some(mut open) = self.open.take() else { return Ok(()) };
        self.builder.finish(&mut open.buf)?;
        let meta = BatchMeta {
            partition: self.partitions[open.partition],
            first_seq: open.first_seq,
            first_due_ns: open.first_due_ns,
            records: self.builder.records() as u32,
            payload_bytes: open.payload_bytes,
            batch_bytes: open.buf.len() as u64,
        };
        self.closed_bytes += open.buf.len();
        self.closed.push_back(Closed { buf: open.buf, partition: open.partition, meta });
        self.sticky = (self.sticky + 1) % self.partitions.len();
        Ok(())
    }

    /// Writes one request with the oldest queued batches: at most one per partition (so a
    /// partition's batches stay in order) and at most `max_request_bytes`.
    fn send(&mut self) -> Result<()> {
        self.request_no += 1;
        let mut bytes = 0;
        let mut take = 0;
        for c in &self.closed {
            if self.in_request[c.partition] == self.request_no
                || (take > 0 && bytes + c.buf.len() > self.max_request_bytes)
            {
                break;
            }
            self.in_request[c.partition] = self.request_no;
            bytes += c.buf.len();
            take += 1;
        }
        self.sending.extend(self.closed.drain(..take));
        self.closed_bytes -= bytes;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let batches: Vec<(i32, &[u8])> =
            self.sending.iter().map(|c| (c.meta.partition, c.buf.as_slice())).collect();
        self.frame.encode(&self.target, correlation_id, &batches);
        if self.target.acks != 0 {
            let metas = self.sending.iter().map(|c| c.meta).collect();
            self.inflight.count.fetch_add(1, Ordering::SeqCst);
            self.meta_tx
                .send(RequestMeta { correlation_id, batches: metas })
                .context("the ack reader is gone")?;
        }
        self.frame.write_to(&mut self.stream, &batches).context("writing a produce request")?;
        drop(batches);
        let written_ns = self.stats.clock.now_ns();
        {
            let mut waits = self.send_wait.lock().expect("latency lock");
            for c in &self.sending {
                waits.record(latency_us(c.meta.first_due_ns, written_ns)).expect("latency within bounds");
            }
        }
        for c in self.sending.drain(..) {
            if self.target.acks == 0 {
                // Nothing will answer: a record counts once it is written.
                let now_ns = self.stats.clock.now_ns();
                self.stats.produced.add(
                    u64::from(c.meta.records),
                    c.meta.payload_bytes,
                    c.meta.batch_bytes,
                    now_ns,
                );
            }
            self.pool.push(c.buf);
        }
        Ok(())
    }
}

struct AckReader<'a> {
    reader: std::io::BufReader<TcpStream>,
    version: i16,
    schedule: Option<Schedule>,
    stats: &'a Stats,
    cell: LatencyCell,
    acked_ends: AckedEnds,
}

impl AckReader<'_> {
    fn run(&mut self, requests: &mpsc::Receiver<RequestMeta>, inflight: &InFlight) -> Result<()> {
        while let Ok(request) = requests.recv() {
            let frame = read_frame(&mut self.reader).context("waiting for a produce response")?;
            let now_ns = self.stats.clock.now_ns();
            let response: ProduceResponse =
                decode_response(ApiKey::Produce, self.version, request.correlation_id, frame)?;
            self.account(&request, &response, now_ns);
            inflight.count.fetch_sub(1, Ordering::SeqCst);
            inflight.writer.unpark();
        }
        Ok(())
    }

    fn account(&mut self, request: &RequestMeta, response: &ProduceResponse, now_ns: u64) {
        let mut answered = 0;
        let mut hist = self.cell.lock().expect("latency lock");
        for topic in &response.responses {
            for p in &topic.partition_responses {
                let Some(batch) = request.batches.iter().find(|b| b.partition == p.index) else {
                    self.stats
                        .error(|| format!("produce response names partition {} it was not sent", p.index));
                    continue;
                };
                answered += 1;
                if let Some(e) = ResponseError::try_from_code(p.error_code) {
                    let message = p.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
                    self.stats.error(|| format!("produce to partition {} failed: {e} {message}", p.index));
                    continue;
                }
                match self.schedule {
                    Some(s) => {
                        for i in 0..u64::from(batch.records) {
                            let us = latency_us(s.due_ns(batch.first_seq + i), now_ns);
                            hist.record(us).expect("latency within bounds");
                        }
                    }
                    None => hist
                        .record_n(latency_us(batch.first_due_ns, now_ns), u64::from(batch.records))
                        .expect("latency within bounds"),
                }
                self.stats.produced.add(
                    u64::from(batch.records),
                    batch.payload_bytes,
                    batch.batch_bytes,
                    now_ns,
                );
                if let Some(end) = self.acked_ends.get(p.index as usize) {
                    end.fetch_max(p.base_offset + i64::from(batch.records), Ordering::SeqCst);
                }
            }
        }
        if answered != request.batches.len() {
            self.stats.error(|| {
                format!("produce response answers {answered} of {} partitions", request.batches.len())
            });
        }
    }
}

/// A well-mixed hash of `x` (splitmix64's finalizer).
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Random upper-case letters, as kafka-producer-perf-test sends.
fn payload(len: usize, seed: u32) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(seed);
    (0..len)
        .map(|_| {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            b'A' + ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) % 26) as u8
        })
        .collect()
}

/// Lets this thread's sleeps end on time: the default 50 µs timer slack would add to every
/// fixed-rate send.
pub fn set_timer_slack_ns(ns: u64) {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_spacing() {
        let s = Schedule { start_ns: 1000, ns_per_record: 1e9 / 10_000.0 };
        assert_eq!(s.due_ns(0), 1000);
        assert_eq!(s.due_ns(10_000), 1000 + 1_000_000_000);
    }

    #[test]
    fn payload_is_letters() {
        let p = payload(1000, 1);
        assert!(p.iter().all(u8::is_ascii_uppercase));
        assert_ne!(p, payload(1000, 2));
    }
}
