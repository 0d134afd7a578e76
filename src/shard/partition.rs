//! One partition on its shard: the offsets (`durable <= high watermark <= next`), the batches
//! waiting to be written, the cache of recent batches, and the flusher task that writes and syncs.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::time::Instant;

use bytes::Bytes;
use futures::channel::oneshot;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};

use super::messages::{Acks, Appended, Fetched, TopicPartition};
use super::producers::{BatchSeq, Check, Producers};
use crate::buffers::ChunkBuf;
use crate::log::read_ahead::{FetchReads, ReadAhead};
use crate::log::{PartitionLog, Read};
use crate::metadata::configs::LogConfig;
use crate::protocol::batch::{self, Chunk};
use crate::protocol::errors::PartitionError;

/// Batches at least this large are kept as slices of the request that brought them; smaller
/// ones are copied. A slice keeps the chunk it was received into alive (`crate::buffers`, up to
/// 4 MiB) for as long as the batch stays cached: for small batches that would cost far more
/// memory than the copy costs time. A batch of this size still counts for as little as a
/// sixty-fourth of the chunk it holds, when the frames around it are not cached.
const KEEP_AS_RECEIVED_BYTES: usize = 64 << 10;

type AckSender = oneshot::Sender<Result<(), PartitionError>>;

struct AckWaiter {
    /// Answered when the high watermark (or the durable offset) reaches this.
    end_offset: i64,
    needs_sync: bool,
    tx: AckSender,
}

/// Shared by every partition of a shard: the cache budget and the order batches were cached
/// in, so the shard's oldest batches go first, whichever partition holds them.
pub struct CacheBudget {
    pub max_bytes: usize,
    pub used_bytes: std::cell::Cell<usize>,
    order: RefCell<VecDeque<(std::rc::Weak<Partition>, i64)>>,
}

impl CacheBudget {
    pub fn new(max_bytes: usize) -> Rc<CacheBudget> {
        Rc::new(CacheBudget {
            max_bytes,
            used_bytes: Default::default(),
            order: RefCell::new(VecDeque::new()),
        })
    }

    /// Drops the shard's oldest cached batches until the cache fits its budget. A batch not yet
    /// written stays (it is also the write queue), and so does everything cached after it.
    pub fn evict(&self) {
        while self.used_bytes.get() > self.max_bytes {
            let Some((partition, base_offset)) = self.order.borrow_mut().pop_front() else { return };
            let Some(p) = partition.upgrade() else { continue };
            match p.evict_front(base_offset) {
                Some(true) | None => {}
                Some(false) => {
                    self.order.borrow_mut().push_front((partition, base_offset));
                    return;
                }
            }
        }
    }
}

struct State {
    /// One past the last offset assigned (written or not).
    next_offset: i64,
    /// One past the last offset whose write completed: what consumers may read.
    high_watermark: i64,
    /// One past the last offset covered by an fdatasync.
    durable_offset: i64,
    /// Batches taken in and not written yet (they are in `cache` too).
    pending: Vec<Chunk>,
    /// Recent batches in offset order, ending at `next_offset`: large ones as the produce
    /// request's own bytes with the offset the log gave them, smaller ones copied with the
    /// offset in place (see `Chunk`).
    cache: VecDeque<Chunk>,
    ack_waiters: Vec<AckWaiter>,
    data_waiters: Vec<Rc<RefCell<Option<oneshot::Sender<()>>>>>,
    config: LogConfig,
    unsynced_messages: i64,
    last_sync: Instant,
    failed: Option<String>,
    closing: bool,
    producers: Producers,
}

pub struct Partition {
    pub tp: TopicPartition,
    pub log: PartitionLog,
    state: RefCell<State>,
    wake: LocalSender<()>,
    budget: Rc<CacheBudget>,
}

impl Partition {
    /// Wraps an opened log and starts its flusher.
    pub fn start(
        tp: TopicPartition,
        log: PartitionLog,
        config: LogConfig,
        budget: Rc<CacheBudget>,
    ) -> Rc<Partition> {
        let end = log.next_offset();
        let (wake, wakeup) = local_channel::new_bounded(1);
        let partition = Rc::new(Partition {
            tp,
            log,
            state: RefCell::new(State {
                next_offset: end,
                high_watermark: end,
                durable_offset: end,
                pending: Vec::new(),
                cache: VecDeque::new(),
                ack_waiters: Vec::new(),
                data_waiters: Vec::new(),
                config,
                unsynced_messages: 0,
                last_sync: Instant::now(),
                failed: None,
                closing: false,
                producers: Producers::default(),
            }),
            wake,
            budget,
        });
        glommio::spawn_local(flusher(partition.clone(), wakeup)).detach();
        partition
    }

    /// Rebuilds idempotent producers' state from the batches recovery found, so a retry of a
    /// batch written just before a crash is still recognised as a duplicate.
    pub fn restore_producers(&self, batches: &[crate::log::segment::ProducerBatch]) {
        let mut st = self.state.borrow_mut();
        for b in batches {
            let seq = BatchSeq {
                producer_id: b.producer_id,
                epoch: b.epoch,
                first_seq: b.base_sequence,
                count: b.records,
            };
            st.producers.record(&seq, b.base_offset);
        }
    }

    pub fn high_watermark(&self) -> i64 {
        self.state.borrow().high_watermark
    }

    pub fn set_config(&self, config: LogConfig) {
        self.log.set_config(config.clone());
        self.state.borrow_mut().config = config;
    }

    /// Validates the batches in `records`, gives them offsets, and queues them for the flusher.
    /// Nothing is appended unless every batch is valid. The receiver resolves when `acks` is
    /// satisfied.
    pub fn append(
        self: &Rc<Self>,
        records: &Bytes,
        acks: Acks,
        arena: &RefCell<ChunkBuf>,
    ) -> Result<(Appended, oneshot::Receiver<Result<(), PartitionError>>), PartitionError> {
        let mut st = self.state.borrow_mut();
        if let Some(why) = &st.failed {
            return Err(PartitionError::Storage(why.clone()));
        }
        if st.closing {
            return Err(PartitionError::Deleting);
        }
        let max = st.config.max_message_bytes;
        let mut spans = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let total = batch::frame_length(&records[pos..]).map_err(|e| match e {
                batch::BatchError::Truncated { .. }
                    if records.len() - pos > batch::MAGIC_OFFSET
                        && records[pos + batch::MAGIC_OFFSET] as i8 != batch::CURRENT_MAGIC =>
                {
                    PartitionError::Batch(batch::BatchError::UnsupportedMagic {
                        magic: records[pos + batch::MAGIC_OFFSET] as i8,
                    })
                }
                e => PartitionError::Batch(e),
            })?;
            if total > max {
                return Err(PartitionError::MessageTooLarge { size: total, max });
            }
            let header = batch::validate(&records[pos..pos + total]).map_err(PartitionError::Batch)?;
            let producer = (header.producer_id.get() >= 0).then(|| BatchSeq {
                producer_id: header.producer_id.get(),
                epoch: header.producer_epoch.get(),
                first_seq: header.base_sequence.get(),
                count: header.records_count.get(),
            });
            spans.push((pos, total, header.offset_count(), producer));
            pos += total;
        }
        // An idempotent producer's retry of a batch already written: answer with the original
        // offset once that write meets `acks`, and write nothing.
        for (_, _, count, producer) in &spans {
            let Some(seq) = producer else { continue };
            match st.producers.check(seq) {
                Check::Append => {}
                Check::Duplicate { base_offset } => {
                    let (tx, rx) = oneshot::channel();
                    let end_offset = base_offset + count;
                    st.ack_waiters.push(AckWaiter { end_offset, needs_sync: acks == Acks::All, tx });
                    let appended = Appended {
                        base_offset,
                        log_start_offset: self.log.log_start_offset(),
                        log_append_time_ms: -1,
                    };
                    drop(st);
                    let _ = self.wake.try_send(());
                    return Ok((appended, rx));
                }
                Check::OutOfOrder { expected, got } => {
                    return Err(PartitionError::OutOfOrderSequence { expected, got })
                }
                Check::StaleEpoch { current, got } => {
                    return Err(PartitionError::StaleProducerEpoch { current, got })
                }
            }
        }
        if spans.is_empty() {
            return Err(PartitionError::Batch(batch::BatchError::Truncated {
                available: 0,
                needed: batch::HEADER_BYTES,
            }));
        }
        let base_offset = st.next_offset;
        let mut added = 0;
        // LogAppendTime: the broker's clock stamps each batch (and so its CRC is recomputed).
        // That changes the batch, so it is copied, as are small batches.
        let append_time = st.config.log_append_time.then(crate::group::store::now_ms);
        for (pos, total, count, producer) in spans {
            if let Some(seq) = producer {
                let offset = st.next_offset;
                st.producers.record(&seq, offset);
            }
            let chunk = if append_time.is_none() && total >= KEEP_AS_RECEIVED_BYTES {
                Chunk::received(records.slice(pos..pos + total), st.next_offset)
            } else {
                // A copy takes its offset in place, so it goes out as one piece.
                let base = st.next_offset;
                let copy = arena.borrow_mut().push_edited(&records[pos..pos + total], |copy| {
                    batch::set_base_offset(copy, base);
                    if let Some(now) = append_time {
                        batch::set_log_append_time(copy, now);
                    }
                });
                Chunk::stored(copy)
            };
            st.next_offset += count;
            st.unsynced_messages += count;
            added += chunk.len();
            st.pending.push(chunk.clone());
            self.budget.order.borrow_mut().push_back((Rc::downgrade(self), st.next_offset - count));
            st.cache.push_back(chunk);
        }
        self.budget.used_bytes.set(self.budget.used_bytes.get() + added);
        let (tx, rx) = oneshot::channel();
        let end_offset = st.next_offset;
        match acks {
            Acks::None | Acks::Leader => st.ack_waiters.push(AckWaiter { end_offset, needs_sync: false, tx }),
            Acks::All => st.ack_waiters.push(AckWaiter { end_offset, needs_sync: true, tx }),
        }
        let appended = Appended {
            base_offset,
            log_start_offset: self.log.log_start_offset(),
            log_append_time_ms: append_time.unwrap_or(-1),
        };
        drop(st);
        let _ = self.wake.try_send(());
        Ok((appended, rx))
    }

    /// Batches from `offset` on, up to `max_bytes` (the first one always whole), from the cache
    /// when it still holds `offset`, else from disk within what `reads` allows this fetch. What
    /// to read, and whether to leave the read for a later fetch, is decided when this is called
    /// (`PartitionLog::read`).
    pub fn fetch<'a>(
        &'a self,
        offset: i64,
        max_bytes: usize,
        reads: Option<&'a FetchReads<'a>>,
    ) -> impl Future<Output = Result<Fetched, PartitionError>> + 'a {
        let planned = self.plan_fetch(offset, max_bytes).map(|(mut fetched, from_cache)| {
            let read = match from_cache {
                Some(batches) => {
                    fetched.batches = batches;
                    None
                }
                None if offset == fetched.high_watermark => None,
                None => Some(self.log.read(offset, max_bytes, fetched.high_watermark, reads)),
            };
            (fetched, read)
        });
        async move {
            let (mut fetched, read) = planned?;
            let Some(read) = read else { return Ok(fetched) };
            match read.await {
                Ok(Read::Batches(bytes)) => fetched.batches.push(Chunk::stored(bytes)),
                Ok(Read::Nothing) => {}
                Ok(Read::Deferred) => fetched.deferred = true,
                Err(e) => {
                    eprintln!("pinion: {}: fetch at offset {offset}: {e}", self.tp);
                    return Err(PartitionError::Storage(e.to_string()));
                }
            }
            Ok(fetched)
        }
    }

    /// The offsets a fetch of `offset` answers with, and the cached batches from it when the
    /// cache still holds it.
    fn plan_fetch(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<(Fetched, Option<Vec<Chunk>>), PartitionError> {
        let st = self.state.borrow();
        let log_start = self.log.log_start_offset();
        if offset < log_start || offset > st.high_watermark {
            return Err(PartitionError::OffsetOutOfRange { offset, log_start, log_end: st.high_watermark });
        }
        let fetched = Fetched {
            high_watermark: st.high_watermark,
            log_start_offset: log_start,
            batches: Vec::new(),
            deferred: false,
        };
        Ok((fetched, cached_from(&st.cache, offset, max_bytes, st.high_watermark)))
    }

    /// Whether a read is made ahead for a fetch of `offset` (which the cache no longer holds).
    pub fn is_read_ahead(&self, offset: i64, ahead: &ReadAhead) -> bool {
        let st = self.state.borrow();
        let cached = st.cache.front().and_then(Chunk::first_offsets).is_some_and(|(base, _)| base <= offset);
        !cached && self.log.is_read_ahead(offset, ahead)
    }

    /// Registers `waiter` to fire when the high watermark passes `offset`; false if it already has.
    pub fn wait_for_data(&self, offset: i64, waiter: &Rc<RefCell<Option<oneshot::Sender<()>>>>) -> bool {
        let mut st = self.state.borrow_mut();
        if st.high_watermark > offset || st.failed.is_some() {
            return false;
        }
        st.data_waiters.retain(|w| w.borrow().is_some());
        st.data_waiters.push(waiter.clone());
        true
    }

    /// Drops the oldest cached batch if it starts at `base_offset`: `Some(true)` when dropped,
    /// `Some(false)` when it is not written yet, `None` when it is already gone.
    fn evict_front(&self, base_offset: i64) -> Option<bool> {
        let mut st = self.state.borrow_mut();
        let (front_base, front_last) = st.cache.front()?.first_offsets()?;
        if front_base != base_offset {
            return None;
        }
        if front_last >= st.high_watermark {
            return Some(false);
        }
        let b = st.cache.pop_front()?;
        self.budget.used_bytes.set(self.budget.used_bytes.get() - b.len());
        Some(true)
    }

    pub fn cached_bytes(&self) -> usize {
        self.state.borrow().cache.iter().map(|b| b.len()).sum()
    }

    /// Waits until everything appended is written and synced, then seals the log. Further
    /// appends are refused.
    pub async fn close(&self) -> Result<(), PartitionError> {
        let done = {
            let mut st = self.state.borrow_mut();
            st.closing = true;
            let (tx, rx) = oneshot::channel();
            let end_offset = st.next_offset;
            st.ack_waiters.push(AckWaiter { end_offset, needs_sync: true, tx });
            rx
        };
        let _ = self.wake.try_send(());
        match done.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(PartitionError::Storage("flusher stopped".into())),
        }
        self.log.close().await.map_err(|e| PartitionError::Storage(e.to_string()))?;
        let cached: usize = self.cached_bytes();
        self.budget.used_bytes.set(self.budget.used_bytes.get().saturating_sub(cached));
        self.state.borrow_mut().cache.clear();
        let _ = self.wake.try_send(());
        Ok(())
    }

    /// Stops the flusher without sealing (the data is about to be deleted).
    pub fn abandon(&self) {
        let mut st = self.state.borrow_mut();
        st.closing = true;
        for w in st.ack_waiters.drain(..) {
            let _ = w.tx.send(Err(PartitionError::Deleting));
        }
        let cached: usize = st.cache.iter().map(|b| b.len()).sum();
        self.budget.used_bytes.set(self.budget.used_bytes.get().saturating_sub(cached));
        st.cache.clear();
        st.pending.clear();
        let _ = self.wake.try_send(());
    }
}

/// The cached batches from the one holding `offset`, or `None` when the cache starts after it.
fn cached_from(cache: &VecDeque<Chunk>, offset: i64, max_bytes: usize, hwm: i64) -> Option<Vec<Chunk>> {
    let (first_base, _) = cache.front()?.first_offsets()?;
    if first_base > offset {
        return None;
    }
    let last_offset = |b: &Chunk| b.first_offsets().map(|(_, last)| last).unwrap_or(i64::MAX);
    let start = cache.partition_point(|b| last_offset(b) < offset);
    let mut out = Vec::new();
    let mut bytes = 0;
    for b in cache.iter().skip(start) {
        let base = b.first_offsets().map(|(base, _)| base).unwrap_or(i64::MAX);
        if base >= hwm || (!out.is_empty() && bytes + b.len() > max_bytes) {
            break;
        }
        bytes += b.len();
        out.push(b.clone());
    }
    Some(out)
}

/// Writes whatever is pending, answers acks=1 waiters, syncs when an acks=all waiter (or the
/// flush policy) needs it, answers those. Appends made while a write or sync is in flight go
/// into the next round: that is the group commit. A round whose write must be durable, with
/// everything before it already durable, writes through the segment's O_DSYNC handle: one
/// I/O instead of a write and then an fdatasync, each a trip through the kernel's io_uring
/// workers.
async fn flusher(p: Rc<Partition>, wakeup: LocalReceiver<()>) {
    loop {
        let work = {
            let mut st = p.state.borrow_mut();
            answer(&mut st);
            let need_sync = st.ack_waiters.iter().any(|w| w.needs_sync && w.end_offset > st.durable_offset);
            if !st.pending.is_empty() || need_sync {
                // When everything before these batches is durable, one O_DSYNC write makes
                // them durable too: no separate fdatasync.
                let durable_write = (need_sync || flush_policy_due(&st))
                    && st.durable_offset == st.high_watermark
                    && !st.pending.is_empty();
                Some((std::mem::take(&mut st.pending), st.next_offset, durable_write))
            } else if st.closing && st.ack_waiters.is_empty() {
                return;
            } else {
                None
            }
        };
        let Some((batches, end, durable_write)) = work else {
            if wakeup.recv().await.is_none() {
                return;
            }
            continue;
        };
        if !batches.is_empty() {
            if let Err(e) = p.log.append(&batches, durable_write).await {
                fail(&p, e.to_string());
                return;
            }
            let mut st = p.state.borrow_mut();
            st.high_watermark = end;
            if durable_write {
                st.durable_offset = end;
                st.unsynced_messages = 0;
                st.last_sync = Instant::now();
            }
            answer(&mut st);
            for w in st.data_waiters.drain(..) {
                if let Some(tx) = w.borrow_mut().take() {
                    let _ = tx.send(());
                }
            }
        }
        p.budget.evict();
        let sync_due = {
            let st = p.state.borrow();
            st.ack_waiters.iter().any(|w| w.needs_sync && w.end_offset <= st.high_watermark)
                || (flush_policy_due(&st) && st.durable_offset < st.high_watermark)
        };
        if sync_due {
            let synced_to = p.state.borrow().high_watermark;
            if let Err(e) = p.log.sync().await {
                fail(&p, e.to_string());
                return;
            }
            let mut st = p.state.borrow_mut();
            st.durable_offset = synced_to;
            st.unsynced_messages = 0;
            st.last_sync = Instant::now();
            answer(&mut st);
        }
    }
}

/// Whether `flush.messages` or `flush.ms` asks for a sync: counted over everything appended
/// since the last one, written or not (`unsynced_messages` grows at append).
fn flush_policy_due(st: &State) -> bool {
    st.unsynced_messages >= st.config.flush_messages
        || (st.config.flush_ms < i64::MAX && st.last_sync.elapsed().as_millis() as i64 >= st.config.flush_ms)
}

/// Answers the waiters whose condition now holds.
fn answer(st: &mut State) {
    let (hwm, durable) = (st.high_watermark, st.durable_offset);
    debug_assert!(durable <= hwm && hwm <= st.next_offset);
    let mut i = 0;
    while i < st.ack_waiters.len() {
        let w = &st.ack_waiters[i];
        let done = if w.needs_sync { w.end_offset <= durable } else { w.end_offset <= hwm };
        if done {
            let w = st.ack_waiters.swap_remove(i);
            let _ = w.tx.send(Ok(()));
        } else {
            i += 1;
        }
    }
}

/// A disk error takes the partition offline: every waiter gets KAFKA_STORAGE_ERROR.
fn fail(p: &Partition, why: String) {
    eprintln!("pinion: partition {} offline after storage error: {why}", p.tp);
    let mut st = p.state.borrow_mut();
    for w in st.ack_waiters.drain(..) {
        let _ = w.tx.send(Err(PartitionError::Storage(why.clone())));
    }
    for w in st.data_waiters.drain(..) {
        if let Some(tx) = w.borrow_mut().take() {
            let _ = tx.send(());
        }
    }
    st.failed = Some(why);
}
