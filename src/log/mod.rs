//! A partition's log on disk: segments of record batches written with aligned, coalesced direct
//! writes, read back with aligned direct reads, and recovered at start-up.
//!
//! Only the partition's flusher task calls `append`, `sync`, `roll` and `close`; fetches call the
//! read side at any time. No borrow of the log is held across an await.

pub mod index;
pub mod read_ahead;
pub mod read_buf;
pub mod segment;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::metadata::configs::LogConfig;
use crate::protocol::batch::{self, BatchHeader, Chunk};
use index::SegmentIndex;
use read_ahead::{FetchReads, ReadAhead};
use segment::Segment;

/// What a read of the log for a fetch found.
#[derive(Debug)]
pub enum Read {
    /// Batches from the one holding the offset on.
    Batches(Bytes),
    /// Nothing at or after the offset, before the end asked for.
    Nothing,
    /// Left for a later fetch: this one has used what it may read (`read_ahead::FetchReads`).
    Deferred,
}

impl Read {
    /// The batches read, if any.
    pub fn batches(self) -> Option<Bytes> {
        match self {
            Read::Batches(b) => Some(b),
            Read::Nothing | Read::Deferred => None,
        }
    }
}

/// Largest single write; bigger appends are split.
const WRITE_BYTES_MAX: usize = 8 << 20;

/// Default bytes of zeros kept written ahead of a segment taking durable writes.
pub const ZERO_AHEAD_BYTES: u64 = 1 << 20;

/// The first step of zeros written ahead in a segment; each step doubles while the writes
/// reach the zeros within `ZERO_STEP_GROW_WITHIN`, up to the configured bytes, and halves
/// back when they do not. A partition taking a durable write now and then keeps 64 KiB of zeros.
/// Steps of about 100 ms of writes: the partition's writes issued while a step of zeros is
/// being written can wait for it, so steps are kept no bigger than the writes need (at
/// 10,000 records/s over 8 partitions, steps grown within 1 s reached 1 MiB and produce p99
/// was 1.02-1.93 ms; grown within 100 ms, 0.84-1.04 ms).
const ZERO_STEP_FIRST_BYTES: u64 = 64 << 10;
const ZERO_STEP_GROW_WITHIN: std::time::Duration = std::time::Duration::from_millis(100);

/// Zeros are written ahead only while durable writes average at most this many bytes: below
/// it the fixed cost of extending the file dominates a write; above it, bandwidth does, and
/// writing every byte twice would cost more than it saves.
const ZERO_AHEAD_MAX_WRITE_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("short write to {path}: {written} of {expected} bytes")]
    ShortWrite { path: PathBuf, written: usize, expected: usize },
}

impl LogError {
    pub fn io(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> LogError {
        LogError::Io { op, path: path.to_path_buf(), source: e.into() }
    }
}

pub struct PartitionLog {
    pub dir: PathBuf,
    segments: RefCell<Vec<Rc<Segment>>>,
    log_start_offset: Cell<i64>,
    /// Bytes of the active segment's last, partly filled block: rewritten with the next write,
    /// because direct I/O writes whole blocks.
    tail: RefCell<Vec<u8>>,
    config: RefCell<LogConfig>,
    /// See `zero_ahead`; 0 turns it off.
    zero_ahead_bytes: Cell<u64>,
    /// Moving average of the bytes in a durable write.
    durable_write_bytes: Cell<u64>,
}

/// Whether a seal makes a segment's index files durable.
#[derive(Clone, Copy)]
enum IndexFiles {
    /// Written new, synced, renamed into place, directory synced: a sealed segment's index is
    /// trusted at the next start.
    Synced,
    /// Written in place: for the active segment at a clean shutdown, whose index is rebuilt
    /// by the scan at the next start.
    Unsynced,
}

/// What recovery did to a partition, for the start-up log line.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    /// Idempotent producers' last batches in the active segment, to rebuild their state.
    pub producer_batches: Vec<segment::ProducerBatch>,
    pub truncated: Option<(u64, String)>,
    pub rebuilt_indexes: usize,
}

impl PartitionLog {
    /// Opens (creating if needed) the log in `dir`, scanning the active segment and truncating
    /// it at the first invalid batch, and rebuilding any sealed segment's damaged index.
    pub async fn open(dir: PathBuf, config: LogConfig) -> Result<(PartitionLog, RecoveryReport), LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io("create", &dir, e))?;
        let mut bases: Vec<i64> = std::fs::read_dir(&dir)
            .map_err(|e| LogError::io("list", &dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| segment::parse_file_name(&e.file_name().to_string_lossy()))
            .collect();
        bases.sort_unstable();
        let created = bases.is_empty();
        if created {
            bases.push(0);
        }
        let mut report = RecoveryReport::default();
        let mut segments = Vec::with_capacity(bases.len());
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(segment::file_name(base, "log"));
            let file = Segment::open_file(&path).await?;
            let size = file.file_size().await.map_err(|e| LogError::io("stat", &path, e))?;
            let seg = Segment::new(base, file, path.clone(), size, base, SegmentIndex::new());
            match bases.get(i + 1) {
                Some(&next_base) => {
                    seg.next_offset.set(next_base);
                    match load_index(&dir, base, size) {
                        Some(ix) => *seg.index.borrow_mut() = ix,
                        None => {
                            let found = seg.scan(config.index_interval_bytes).await?;
                            // Written back, so the next start finds them whole.
                            let next_relative = (found.next_offset - base).max(0) as u32;
                            let offsets = found.index.encode_offsets();
                            let times = found.index.encode_times(next_relative);
                            let written =
                                write_synced(&dir.join(segment::file_name(base, "index")), &offsets)
                                    .and_then(|()| {
                                        write_synced(&dir.join(segment::file_name(base, "timeindex")), &times)
                                    });
                            if let Err(e) = written {
                                eprintln!("pinion: keeping a rebuilt index in memory only: {e}");
                            }
                            *seg.index.borrow_mut() = found.index;
                            report.rebuilt_indexes += 1;
                        }
                    }
                }
                None => {
                    let found = seg.scan(config.index_interval_bytes).await?;
                    if found.valid_bytes < size {
                        seg.file
                            .truncate(found.valid_bytes)
                            .await
                            .map_err(|e| LogError::io("truncate", &path, e))?;
                        let why = found.damage.clone().unwrap_or_else(|| "zero padding".into());
                        if found.damage.is_some() {
                            report.truncated = Some((size - found.valid_bytes, why));
                        }
                    }
                    seg.size_bytes.set(found.valid_bytes);
                    seg.next_offset.set(found.next_offset.max(base));
                    *seg.index.borrow_mut() = found.index;
                    report.producer_batches = found.producer_batches;
                }
            }
            segments.push(Rc::new(seg));
        }
        if created {
            // The new segment's name and the partition directory's own name must be durable
            // before anything written to the segment is acknowledged as synced. Off the
            // shard's thread: a topic of a thousand partitions makes two thousand of these.
            let dir = dir.clone();
            off_reactor(move || {
                sync_dir(&dir)?;
                dir.parent().map_or(Ok(()), sync_dir)
            })
            .await?;
        }
        let log = PartitionLog {
            dir,
            log_start_offset: Cell::new(bases[0]),
            segments: RefCell::new(segments),
            tail: RefCell::new(Vec::new()),
            config: RefCell::new(config),
            zero_ahead_bytes: Cell::new(ZERO_AHEAD_BYTES),
            durable_write_bytes: Cell::new(0),
        };
        log.load_tail().await?;
        Ok((log, report))
    }

    /// Reads the active segment's partial last block into `tail`.
    async fn load_tail(&self) -> Result<(), LogError> {
        let active = self.active();
        let size = active.size_bytes.get();
        let aligned = active.file.align_down(size);
        let tail = active.read(aligned, (size - aligned) as usize).await?;
        *self.tail.borrow_mut() = tail.to_vec();
        Ok(())
    }

    pub fn active(&self) -> Rc<Segment> {
        match self.segments.borrow().last() {
            Some(s) => s.clone(),
            None => unreachable!("a partition log always has an active segment"),
        }
    }

    /// One past the last offset on disk.
    pub fn next_offset(&self) -> i64 {
        self.active().next_offset.get()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.get()
    }

    pub fn set_config(&self, config: LogConfig) {
        *self.config.borrow_mut() = config;
    }

    /// How many bytes of zeros to keep written ahead of durable writes (0: none).
    pub fn set_zero_ahead(&self, bytes: u64) {
        self.zero_ahead_bytes.set(bytes);
    }

    /// Writes whole, validated batches whose offsets continue the log, rolling segments at
    /// `segment.bytes` or `segment.ms`. Returns when the bytes are on the device; with
    /// `durable`, when they are durable too (written with O_DSYNC: the data and the metadata
    /// needed to read it back, as an fdatasync after the write would make them). A `durable`
    /// append makes only its own bytes durable on a device that honours FUA, so use it only
    /// when everything before is already durable.
    pub async fn append(&self, batches: &[Chunk], durable: bool) -> Result<(), LogError> {
        let mut i = 0;
        while i < batches.len() {
            let active = self.active();
            let (segment_bytes, segment_ms) = {
                let c = self.config.borrow();
                (c.segment_bytes, c.segment_ms)
            };
            let size = active.size_bytes.get();
            let too_old = segment_ms >= 0 && active.opened.elapsed().as_millis() >= segment_ms as u128;
            if size > 0 && (size + batches[i].len() as u64 > segment_bytes || too_old) {
                let base = batches[i].first_offsets().map(|(base, _)| base).unwrap_or(0);
                self.roll(base).await?;
                continue;
            }
            let mut j = i;
            let mut group_bytes = 0u64;
            while j < batches.len() {
                let len = batches[j].len() as u64;
                let fits_segment = size + group_bytes + len <= segment_bytes || j == i && size == 0;
                if !fits_segment || (group_bytes + len > WRITE_BYTES_MAX as u64 && j > i) {
                    break;
                }
                group_bytes += len;
                j += 1;
            }
            self.write_group(&active, &batches[i..j], durable).await?;
            i = j;
        }
        Ok(())
    }

    async fn write_group(
        &self,
        active: &Rc<Segment>,
        batches: &[Chunk],
        durable: bool,
    ) -> Result<(), LogError> {
        let durable_file = if durable { Some(active.durable_file().await?) } else { None };
        let size = active.size_bytes.get();
        let aligned_pos = active.file.align_down(size);
        let data_end = size + batches.iter().map(|b| b.len() as u64).sum::<u64>();
        let write_end = active.file.align_up(data_end);
        if write_end > active.zeroed_to.get() {
            // Zeros being written past `zeroed_to` must not land on top of these bytes.
            active.zeros_landed().await;
        }
        let tail = std::mem::take(&mut *self.tail.borrow_mut());
        debug_assert_eq!(tail.len() as u64, size - aligned_pos);
        let data_bytes = (data_end - size) as usize;
        let total = tail.len() + data_bytes;
        let padded = active.file.align_up(total as u64) as usize;
        let mut buf = active.file.alloc_dma_buffer(padded);
        let out = buf.as_bytes_mut();
        out[..tail.len()].copy_from_slice(&tail);
        let mut at = tail.len();
        for b in batches {
            b.copy_to(&mut out[at..at + b.len()]);
            at += b.len();
        }
        out[total..].fill(0);
        let new_tail_start = active.file.align_down(total as u64) as usize;
        let new_tail = out[new_tail_start..total].to_vec();
        let file = durable_file.as_ref().unwrap_or(&active.file);
        let written = match file.write_at(buf, aligned_pos).await {
            Ok(n) => n,
            Err(e) => {
                *self.tail.borrow_mut() = tail;
                return Err(LogError::io("write", &active.path, e));
            }
        };
        if written < total {
            *self.tail.borrow_mut() = tail;
            return Err(LogError::ShortWrite { path: active.path.clone(), written, expected: total });
        }
        let interval = self.config.borrow().index_interval_bytes;
        let mut index = active.index.borrow_mut();
        let mut pos = size;
        for b in batches {
            if let (Ok(h), Some((base, last))) = (BatchHeader::peek(&b.bytes), b.first_offsets()) {
                let relative = (base - active.base_offset) as u32;
                index.on_append(relative, pos as u32, b.len() as u64, h.max_timestamp.get(), interval);
                active.next_offset.set(last + 1);
            }
            pos += b.len() as u64;
        }
        active.size_bytes.set(pos);
        *self.tail.borrow_mut() = new_tail;
        if durable {
            let (average, bytes) = (self.durable_write_bytes.get(), data_bytes as u64);
            self.durable_write_bytes.set(if average == 0 {
                bytes
            } else {
                average - average / 8 + bytes / 8
            });
            self.zero_ahead(active, write_end);
        }
        Ok(())
    }

    /// Keeps zeros written ahead of a segment that takes durable writes. A durable write that
    /// extends the file must make the file's new size and block map durable too (a journal
    /// commit, or an inode write on a file system without a journal), and io_uring hands every
    /// such write to a kernel worker thread. One into allocated but unwritten blocks (after
    /// fallocate) must record that they now hold data, which a kernel worker does after the
    /// write, before it counts as done: slower than extending at e2e rates on the reference
    /// machine's disk (tuning.md), though it saves the hand-off (docs/benchmarks.md). A
    /// write over blocks already written and synced is data only: it takes about half as long
    /// and no thread hand-off. So after a durable write, when such writes are small (see
    /// `ZERO_AHEAD_MAX_WRITE_BYTES`) and fewer than half a step of zeros is left past it, a
    /// background task writes (with O_DSYNC) the next step of zeros (see
    /// `ZERO_STEP_FIRST_BYTES`; at most `zero_ahead_bytes`). A crash leaves them past the last
    /// batch, where recovery cuts them off as padding; sealing a segment cuts them too.
    fn zero_ahead(&self, seg: &Rc<Segment>, written_to: u64) {
        let most = seg.file.align_up(self.zero_ahead_bytes.get());
        let (step, filled_at) = seg.zero_step.get();
        if most == 0
            || seg.zeroing_failed.get()
            || self.durable_write_bytes.get() > ZERO_AHEAD_MAX_WRITE_BYTES
            || seg.zeroed_to.get() >= written_to + step / 2
        {
            return;
        }
        let Ok(permit) = seg.zeroing.try_acquire_static_permit(1) else {
            return; // already under way
        };
        let step = match filled_at {
            None => ZERO_STEP_FIRST_BYTES,
            Some(at) if at.elapsed() < ZERO_STEP_GROW_WITHIN => step * 2,
            Some(_) => step / 2,
        };
        let step = seg.file.align_up(step.clamp(ZERO_STEP_FIRST_BYTES.min(most), most));
        let start = seg.zeroed_to.get().max(written_to);
        // Nothing is written past segment.bytes: the segment rolls first.
        let segment_end = seg.file.align_up(self.config.borrow().segment_bytes);
        let step = step.min(segment_end.saturating_sub(start));
        if step == 0 {
            return;
        }
        let seg = seg.clone();
        glommio::spawn_local(async move {
            let _permit = permit;
            match write_zeros(&seg, start, step as usize).await {
                Ok(()) => {
                    seg.zeroed_to.set(start + step);
                    seg.zero_step.set((step, Some(std::time::Instant::now())));
                }
                Err(e) => {
                    seg.zeroing_failed.set(true);
                    eprintln!("pinion: no more zeros written ahead in this segment: {e}");
                }
            }
        })
        .detach();
    }

    /// Deletes the oldest sealed segments while their newest record is older than
    /// `retention.ms`, or while the log stays at or above `retention.bytes` without them, as
    /// Kafka does; the log start offset moves to the first segment kept. The active segment
    /// is never deleted. Returns how many segments went.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        let (retention_ms, retention_bytes) = {
            let c = self.config.borrow();
            (c.retention_ms, c.retention_bytes)
        };
        let (mut deleted, mut doomed) = (0, Vec::new());
        loop {
            {
                let segments = self.segments.borrow();
                let Some(oldest) = segments.first().filter(|_| segments.len() > 1) else { break };
                let newest_ms = oldest.index.borrow().max_timestamp();
                let too_old =
                    retention_ms >= 0 && newest_ms >= 0 && newest_ms < now_ms.saturating_sub(retention_ms);
                let total: u64 = segments.iter().map(|s| s.size_bytes.get()).sum();
                let too_big = retention_bytes >= 0
                    && total.saturating_sub(retention_bytes as u64) >= oldest.size_bytes.get();
                if !(too_old || too_big) {
                    break;
                }
            }
            doomed.extend(self.detach_oldest_segment());
            deleted += 1;
        }
        self.delete_detached(doomed).await?;
        Ok(deleted)
    }

    /// Deletes every sealed segment, keeping only the active one: for a log whose older
    /// contents a later snapshot supersedes (the offsets log). Returns how many went.
    pub async fn delete_sealed_segments(&self) -> Result<usize, LogError> {
        let (mut deleted, mut doomed) = (0, Vec::new());
        while self.segments.borrow().len() > 1 {
            doomed.extend(self.detach_oldest_segment());
            deleted += 1;
        }
        self.delete_detached(doomed).await?;
        Ok(deleted)
    }

    /// Deletes the files of detached segments and syncs the directory. Unlinking a large file
    /// frees its blocks, and the directory sync waits for the disk: both off the shard's thread.
    async fn delete_detached(&self, paths: Vec<PathBuf>) -> Result<(), LogError> {
        if paths.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        off_reactor(move || {
            delete_files(&paths)?;
            sync_dir(&dir)
        })
        .await
    }

    /// Sealed segments (every one but the active).
    pub fn sealed_segments(&self) -> usize {
        self.segments.borrow().len().saturating_sub(1)
    }

    /// Drops the oldest segment from the log, which then starts at the next segment, and
    /// returns the paths of its files for `delete_detached`. Readers holding the segment keep
    /// its file open.
    fn detach_oldest_segment(&self) -> Vec<PathBuf> {
        let mut segments = self.segments.borrow_mut();
        let victim = segments.remove(0);
        self.log_start_offset.set(segments[0].base_offset);
        ["log", "index", "timeindex"]
            .iter()
            .map(|ext| self.dir.join(segment::file_name(victim.base_offset, ext)))
            .collect()
    }

    /// Makes every completed write durable.
    pub async fn sync(&self) -> Result<(), LogError> {
        let active = self.active();
        active.file.fdatasync().await.map_err(|e| LogError::io("fdatasync", &active.path, e))
    }

    /// Seals the active segment and starts a new one at `base_offset`.
    async fn roll(&self, base_offset: i64) -> Result<(), LogError> {
        let active = self.active();
        self.seal(&active, IndexFiles::Synced).await?;
        let next = Segment::create(&self.dir, base_offset.max(active.next_offset.get())).await?;
        self.segments.borrow_mut().push(Rc::new(next));
        self.tail.borrow_mut().clear();
        let dir = self.dir.clone();
        off_reactor(move || sync_dir(&dir)).await
    }

    /// Makes a segment final: data synced, file cut to its exact size (dropping the padding of
    /// the last block), index files written (and synced, if asked).
    async fn seal(&self, seg: &Segment, index_files: IndexFiles) -> Result<(), LogError> {
        seg.zeros_landed().await;
        seg.close_durable_file().await;
        let size = seg.size_bytes.get();
        seg.file.truncate(size).await.map_err(|e| LogError::io("truncate", &seg.path, e))?;
        seg.file.fdatasync().await.map_err(|e| LogError::io("fdatasync", &seg.path, e))?;
        let (offsets, times) = {
            let index = seg.index.borrow();
            let next_relative = (seg.next_offset.get() - seg.base_offset) as u32;
            (index.encode_offsets(), index.encode_times(next_relative))
        };
        let (dir, base) = (self.dir.clone(), seg.base_offset);
        off_reactor(move || {
            let (index, timeindex) = (
                dir.join(segment::file_name(base, "index")),
                dir.join(segment::file_name(base, "timeindex")),
            );
            match index_files {
                IndexFiles::Synced => {
                    write_synced(&index, &offsets).and_then(|()| write_synced(&timeindex, &times))
                }
                IndexFiles::Unsynced => {
                    let write = |path: &Path, data: &[u8]| {
                        std::fs::write(path, data).map_err(|e| LogError::io("write", path, e))
                    };
                    write(&index, &offsets).and_then(|()| write(&timeindex, &times))
                }
            }
        })
        .await
    }

    /// Clean shutdown: the active segment is sealed like a rolled one, except that its index
    /// files are not synced. Nothing relies on them: the next start scans the active segment
    /// whatever they hold, and its next seal rewrites them. Their four syncs were most of the
    /// time a shard with many partitions took to stop.
    pub async fn close(&self) -> Result<(), LogError> {
        let active = self.active();
        self.seal(&active, IndexFiles::Unsynced).await
    }

    /// Finds the segment holding `offset` and reads batches from it (see
    /// `Segment::read_batches`). `end_offset` bounds what may be returned. With `fetch`, a read
    /// made ahead for `offset` is used when there is one; otherwise the read must fit what the
    /// fetch may still read (unless it is the fetch's first), or it is left for a later fetch. When the segment holds more after
    /// what is returned, the next stretch is read ahead for the fetch that follows.
    ///
    /// Which source serves the read, and whether it is left, is decided when this is called,
    /// not when the returned future first runs: a fetch decides its partitions in its order.
    pub fn read<'a>(
        &'a self,
        offset: i64,
        max_bytes: usize,
        end_offset: i64,
        fetch: Option<&'a FetchReads<'a>>,
    ) -> impl std::future::Future<Output = Result<Read, LogError>> + 'a {
        let found = self.segment_for(offset);
        let mut taken = None;
        let mut deferred = false;
        if let (Some((seg, position)), Some(fetch)) = (&found, fetch) {
            taken = fetch.take(seg, offset);
            if taken.is_none() {
                let len = seg.read_len(u64::from(*position), max_bytes);
                deferred = !fetch.allow(seg, offset, u64::from(*position), len);
            }
        }
        async move {
            let Some((seg, position)) = found else { return Ok(Read::Nothing) };
            if deferred {
                return Ok(Read::Deferred);
            }
            let mut picked = None;
            if let Some(taken) = taken {
                let (at, len) = (taken.position, taken.len);
                if let Some(buf) = taken.bytes().await {
                    if let segment::Pick::Found(p) =
                        segment::pick(buf, at, len, offset, max_bytes, end_offset)
                    {
                        picked = Some(p);
                    }
                }
            }
            let picked = match picked {
                Some(p) => p,
                None => match seg.read_batches(u64::from(position), offset, max_bytes, end_offset).await? {
                    Some(p) => p,
                    None => return Ok(Read::Nothing),
                },
            };
            if let Some(fetch) = fetch.filter(|_| picked.end_position < seg.size_bytes.get()) {
                let len = seg.read_len(picked.end_position, max_bytes);
                fetch.read_on(seg, picked.next_offset, picked.end_position, len);
            }
            Ok(Read::Batches(picked.bytes))
        }
    }

    /// Whether a read is made ahead for a fetch of `offset`.
    pub fn is_read_ahead(&self, offset: i64, ahead: &ReadAhead) -> bool {
        self.segment_for(offset).is_some_and(|(seg, _)| ahead.has(&seg, offset))
    }

    /// The segment holding `offset`, and the indexed position at or before it.
    fn segment_for(&self, offset: i64) -> Option<(Rc<Segment>, u32)> {
        let segments = self.segments.borrow();
        let i = segments.partition_point(|s| s.base_offset <= offset);
        let seg = segments.get(i.checked_sub(1)?)?.clone();
        let position = seg.index.borrow().floor_position((offset - seg.base_offset) as u32);
        Some((seg, position))
    }

    /// The first batch whose max timestamp is at least `timestamp`: its base offset and max
    /// timestamp.
    pub async fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let segments: Vec<Rc<Segment>> = self.segments.borrow().clone();
        for seg in segments {
            let (position, size) = {
                let index = seg.index.borrow();
                if index.max_timestamp() < timestamp {
                    continue;
                }
                (index.floor_position(index.scan_start(timestamp)), seg.size_bytes.get())
            };
            let mut pos = u64::from(position);
            while pos < size {
                let buf = seg.read(pos, 1 << 20).await?;
                let mut batches = batch::Batches::new(&buf);
                for (_, h, bytes) in batches.by_ref() {
                    if h.max_timestamp.get() >= timestamp {
                        return Ok(Some(first_record_reaching(bytes, timestamp)));
                    }
                }
                let consumed = batches.position();
                if consumed == 0 {
                    // A batch larger than the read: read it whole next time.
                    let needed = batch::frame_length(&buf).err().and_then(|e| match e {
                        batch::BatchError::Truncated { needed, .. } => Some(needed),
                        _ => None,
                    });
                    match needed {
                        Some(n) if pos + n as u64 <= size => {
                            let buf = seg.read(pos, n).await?;
                            if let Ok(h) = BatchHeader::peek(&buf) {
                                if h.max_timestamp.get() >= timestamp {
                                    return Ok(Some(first_record_reaching(&buf, timestamp)));
                                }
                            }
                            pos += n as u64;
                            continue;
                        }
                        _ => break,
                    }
                }
                pos += consumed as u64;
            }
        }
        Ok(None)
    }

    /// The base offset of the (first) batch holding the largest timestamp, and that timestamp.
    pub async fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        let max = self.segments.borrow().iter().map(|s| s.index.borrow().max_timestamp()).max();
        match max {
            // The first batch reaching the largest timestamp is the one holding it.
            Some(ts) if ts >= 0 => self.offset_for_timestamp(ts).await,
            _ => Ok(None),
        }
    }
}

/// The offset and timestamp of the first record in `batch` whose timestamp is at least
/// `timestamp` (the batch's max timestamp is). The batch is decoded, decompressing if needed,
/// as Kafka does for this lookup; with LogAppendTime every record carries the batch's time.
fn first_record_reaching(batch: &[u8], timestamp: i64) -> (i64, i64) {
    let whole = match BatchHeader::peek(batch) {
        Ok(h) => (h.base_offset(), h.max_timestamp.get()),
        Err(_) => return (-1, -1),
    };
    if BatchHeader::peek(batch).is_ok_and(|h| h.attributes.get() & batch::ATTR_LOG_APPEND_TIME != 0) {
        return whole;
    }
    let mut buf = Bytes::copy_from_slice(batch);
    match kafka_protocol::records::RecordBatchDecoder::decode(&mut buf) {
        Ok(set) => set
            .records
            .iter()
            .find(|r| r.timestamp >= timestamp)
            .map(|r| (r.offset, r.timestamp))
            .unwrap_or(whole),
        Err(_) => whole,
    }
}

fn load_index(dir: &Path, base: i64, segment_bytes: u64) -> Option<SegmentIndex> {
    let offsets = std::fs::read(dir.join(segment::file_name(base, "index"))).ok()?;
    let times = std::fs::read(dir.join(segment::file_name(base, "timeindex"))).ok()?;
    SegmentIndex::decode(&offsets, &times, segment_bytes)
}

/// Writes `len` zero bytes at `position` through the segment's O_DSYNC handle.
async fn write_zeros(seg: &Segment, position: u64, len: usize) -> Result<(), LogError> {
    let file = seg.durable_file().await?;
    let mut buf = file.alloc_dma_buffer(len);
    buf.as_bytes_mut().fill(0);
    let written =
        file.write_at(buf, position).await.map_err(|e| LogError::io("write zeros", &seg.path, e))?;
    if written < len {
        return Err(LogError::ShortWrite { path: seg.path.clone(), written, expected: len });
    }
    Ok(())
}

/// Runs blocking file-system work (create, fsync, rename) on the executor's blocking thread and
/// waits for it there. An fsync waits for the disk, behind every write queued before it: under
/// heavy durable writes that is milliseconds, and done on a shard's own thread it would stall
/// every other partition of the shard, and the router when they share a CPU, for as long (the
/// eight partitions of a steadily produced topic roll within moments of each other).
async fn off_reactor<F>(work: F) -> Result<(), LogError>
where
    F: FnOnce() -> Result<(), LogError> + Send + 'static,
{
    glommio::executor().spawn_blocking(work).await
}

/// Deletes files that may already be gone.
fn delete_files(paths: &[PathBuf]) -> Result<(), LogError> {
    for path in paths {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(LogError::io("delete", path, e))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Write-new + fsync + rename + fsync the directory.
pub fn write_synced(path: &Path, data: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| LogError::io("create", &tmp, e))?;
    f.write_all(data).map_err(|e| LogError::io("write", &tmp, e))?;
    f.sync_data().map_err(|e| LogError::io("fsync", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| LogError::io("rename", path, e))?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| LogError::io("fsync directory", dir, e))
}

#[cfg(test)]
pub(crate) mod tests;
