//! One segment of a partition log: a `.log` file of record batches opened with O_DIRECT, its
//! in-memory indexes, and the scan that recovers it after a crash.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};
use glommio::sync::Semaphore;

use super::index::SegmentIndex;
use super::read_buf;
use super::LogError;
use crate::protocol::batch;

/// Bytes read per step when scanning a segment at start-up.
const SCAN_CHUNK_BYTES: usize = 4 << 20;

/// Reads at least this large are trimmed to their allocator block (`Segment::fit_block`); the
/// alignment unit they may lose is then a small part of them.
const FIT_BLOCK_MIN_BYTES: usize = 64 << 10;

pub fn file_name(base_offset: i64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Parses `00000000000000000042.log` into 42.
pub fn parse_file_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".log")?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit())).then(|| stem.parse().ok())?
}

/// A segment as readers see it. The writer updates `size_bytes`, `next_offset` and `index` after
/// each completed write, so readers never see bytes that are not on disk.
pub struct Segment {
    pub base_offset: i64,
    pub file: Rc<DmaFile>,
    pub path: PathBuf,
    /// Bytes of whole, valid batches.
    pub size_bytes: Cell<u64>,
    /// One past the last offset stored here.
    pub next_offset: Cell<i64>,
    pub index: RefCell<SegmentIndex>,
    /// When this segment was created or opened, for `segment.ms` rolling.
    pub opened: std::time::Instant,
    /// The same file opened with O_DSYNC, for writes that must be durable when they complete;
    /// opened on first use.
    durable: RefCell<Option<Rc<DmaFile>>>,
    /// Past the end of the log, the file holds written, durable zeros up to here: a durable
    /// write that ends below it overwrites blocks instead of extending the file.
    pub zeroed_to: Cell<u64>,
    /// Held while zeros are being written past `zeroed_to`.
    pub zeroing: Rc<Semaphore>,
    /// Writing zeros failed once (the disk is full, say): no more tries on this segment.
    pub zeroing_failed: Cell<bool>,
    /// Bytes of the last step of zeros and when they landed.
    pub zero_step: Cell<(u64, Option<std::time::Instant>)>,
}

/// What a scan of a segment found.
#[derive(Debug)]
pub struct ScanResult {
    pub valid_bytes: u64,
    pub next_offset: i64,
    pub index: SegmentIndex,
    /// Why the scan stopped before the end of the file, if it did.
    pub damage: Option<String>,
    /// The last few batches of each idempotent producer, oldest first.
    pub producer_batches: Vec<ProducerBatch>,
}

impl ScanResult {
    fn with_producers(
        mut self,
        producers: std::collections::HashMap<i64, std::collections::VecDeque<ProducerBatch>>,
    ) -> ScanResult {
        self.producer_batches = producers.into_values().flatten().collect();
        self.producer_batches.sort_by_key(|b| b.base_offset);
        self
    }
}

/// Where an idempotent producer's batch landed: what the shard needs to recognise a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub records: i32,
    pub base_offset: i64,
}

/// Batches kept per producer: Kafka allows at most 5 in flight, so a retry is among the last 5.
const PRODUCER_BATCHES_KEPT: usize = 5;

thread_local! {
    /// Devices on which this thread's reactor has tested polled I/O with a file holding data.
    static PROBED_DEVICES: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
    static PROBE_LOCK: Rc<glommio::sync::Semaphore> = Rc::new(glommio::sync::Semaphore::new(1));
}

/// glommio decides once per thread and device whether file I/O goes to its polled ring, by
/// reading the first block of the first file opened there. An empty file reads without error,
/// so if that file were a new segment, polling would be turned on even on a device that cannot
/// poll, and every later read on this thread would fail with EOPNOTSUPP. The first open on each
/// device is therefore of a scratch file that holds one block.
async fn probe_polled_io(dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(device) = std::fs::metadata(dir).map(|m| m.dev()) else { return };
    let probed = || PROBED_DEVICES.with(|d| d.borrow().contains(&device));
    if probed() {
        return;
    }
    let lock = PROBE_LOCK.with(Rc::clone);
    let Ok(_permit) = lock.acquire_permit(1).await else { return };
    if probed() {
        return;
    }
    let probe = dir.join(".pinion-poll-probe");
    if std::fs::write(&probe, [0x5a; 4096]).is_ok() {
        if let Ok(file) = DmaFile::open(&probe).await {
            let _ = file.close().await;
        }
        let _ = std::fs::remove_file(&probe);
    }
    PROBED_DEVICES.with(|d| d.borrow_mut().push(device));
}

impl Segment {
    pub async fn open_file(path: &Path) -> Result<DmaFile, LogError> {
        if let Some(dir) = path.parent() {
            probe_polled_io(dir).await;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(|e| LogError::io("open", path, e))
    }

    /// The file handle whose writes are durable when they complete (O_DSYNC): one system call
    /// does the write and the fdatasync.
    pub async fn durable_file(&self) -> Result<Rc<DmaFile>, LogError> {
        if let Some(f) = self.durable.borrow().as_ref() {
            return Ok(f.clone());
        }
        let file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DSYNC)
            .dma_open(&self.path)
            .await
            .map_err(|e| LogError::io("open", &self.path, e))?;
        let file = Rc::new(file);
        *self.durable.borrow_mut() = Some(file.clone());
        Ok(file)
    }

    /// Closes the O_DSYNC handle, if one was opened.
    pub async fn close_durable_file(&self) {
        let file = self.durable.borrow_mut().take();
        if let Some(f) = file.and_then(|f| Rc::try_unwrap(f).ok()) {
            let _ = f.close().await;
        }
    }

    pub async fn create(dir: &Path, base_offset: i64) -> Result<Segment, LogError> {
        let path = dir.join(file_name(base_offset, "log"));
        let file = Segment::open_file(&path).await?;
        Ok(Segment::new(base_offset, file, path, 0, base_offset, SegmentIndex::new()))
    }

    pub fn new(
        base_offset: i64,
        file: DmaFile,
        path: PathBuf,
        size_bytes: u64,
        next_offset: i64,
        index: SegmentIndex,
    ) -> Segment {
        Segment {
            base_offset,
            file: Rc::new(file),
            path,
            size_bytes: Cell::new(size_bytes),
            next_offset: Cell::new(next_offset),
            index: RefCell::new(index),
            opened: std::time::Instant::now(),
            durable: RefCell::new(None),
            zeroed_to: Cell::new(0),
            zeroing: Rc::new(Semaphore::new(1)),
            zeroing_failed: Cell::new(false),
            zero_step: Cell::new((0, None)),
        }
    }

    /// Waits until no zeros are being written past `zeroed_to`.
    pub async fn zeros_landed(&self) {
        // The semaphore is never closed, so this only waits.
        let _ = self.zeroing.acquire_permit(1).await;
    }

    /// Reads up to `len` bytes at `position` into one buffer shared by every batch sliced from it.
    pub async fn read(&self, position: u64, len: usize) -> Result<Bytes, LogError> {
        let end = self.size_bytes.get();
        let len = len.min(end.saturating_sub(position) as usize);
        if len == 0 {
            return Ok(Bytes::new());
        }
        read_file(&self.file, &self.path, position, len).await
    }

    /// Trims a large read of `len` bytes at `position` so that, aligned, it still fits the
    /// power-of-two block the I/O memory's allocator gives for `len`: a read of 1 MiB that starts
    /// mid-block would otherwise take 2 MiB. It loses less than one alignment unit.
    fn fit_block(&self, position: u64, len: usize) -> usize {
        if len < FIT_BLOCK_MIN_BYTES {
            return len;
        }
        let block = (len as u64).next_power_of_two();
        let end = (self.file.align_down(position) + block).min(position + len as u64);
        (end - position) as usize
    }

    /// How much a read for a fetch of `max_bytes` at `position` asks for: no more than the
    /// segment holds there, so that what a fetch may read is not spent on bytes that are not.
    pub fn read_len(&self, position: u64, max_bytes: usize) -> usize {
        let held = self.size_bytes.get().saturating_sub(position);
        self.fit_block(position, max_bytes.max(batch::HEADER_BYTES)).min(held as usize)
    }

    /// Reads the batches from `position` on: all whose last offset is at least `offset`, up to
    /// `max_bytes` (but always the first one whole), stopping before `end_offset`.
    pub async fn read_batches(
        &self,
        mut position: u64,
        offset: i64,
        max_bytes: usize,
        end_offset: i64,
    ) -> Result<Option<Picked>, LogError> {
        let mut want = self.read_len(position, max_bytes);
        loop {
            let buf = self.read(position, want).await?;
            match pick(buf, position, want, offset, max_bytes, end_offset) {
                Pick::Found(picked) => return Ok(Some(picked)),
                Pick::End => return Ok(None),
                Pick::Further { skip, needs } => {
                    position += skip as u64;
                    want = want.max(needs);
                }
            }
        }
    }

    /// Scans the file from the start, checking each batch's length, magic, CRC and offsets, and
    /// rebuilds the indexes. Stops at the first batch that is not whole and valid.
    pub async fn scan(&self, index_interval_bytes: u64) -> Result<ScanResult, LogError> {
        let file_bytes = self.file.file_size().await.map_err(|e| LogError::io("stat", &self.path, e))?;
        let mut found = ScanResult {
            valid_bytes: 0,
            next_offset: self.base_offset,
            index: SegmentIndex::new(),
            damage: None,
            producer_batches: Vec::new(),
        };
        let mut producers: std::collections::HashMap<i64, std::collections::VecDeque<ProducerBatch>> =
            std::collections::HashMap::new();
        let mut chunk = SCAN_CHUNK_BYTES;
        while found.valid_bytes < file_bytes {
            let left = file_bytes - found.valid_bytes;
            let buf = read_file(&self.file, &self.path, found.valid_bytes, chunk.min(left as usize)).await?;
            let mut rest = &buf[..];
            let mut progressed = false;
            while !rest.is_empty() {
                let at = found.valid_bytes;
                let total = match batch::frame_length(rest) {
                    Ok(total) => total,
                    Err(batch::BatchError::Truncated { needed, .. })
                        if (needed as u64) <= file_bytes - at && progressed =>
                    {
                        break; // continues past this chunk: the next read starts with it
                    }
                    Err(batch::BatchError::Truncated { needed, .. })
                        if (needed as u64) <= file_bytes - at =>
                    {
                        chunk = needed;
                        break;
                    }
                    // The zeroed end of the last block written before a crash: not damage.
                    Err(_) if rest.iter().all(|&b| b == 0) => return Ok(found.with_producers(producers)),
                    Err(e) => {
                        found.damage = Some(format!("at byte {at}: {e}"));
                        return Ok(found.with_producers(producers));
                    }
                };
                let header = match batch::validate(&rest[..total]) {
                    Ok(h) => h,
                    Err(e) => {
                        found.damage = Some(format!("at byte {at}: {e}"));
                        return Ok(found.with_producers(producers));
                    }
                };
                if header.base_offset() != found.next_offset {
                    found.damage = Some(format!(
                        "at byte {at}: batch offset {} where {} was expected",
                        header.base_offset(),
                        found.next_offset
                    ));
                    return Ok(found.with_producers(producers));
                }
                if header.producer_id.get() >= 0 {
                    let kept = producers.entry(header.producer_id.get()).or_default();
                    kept.push_back(ProducerBatch {
                        producer_id: header.producer_id.get(),
                        epoch: header.producer_epoch.get(),
                        base_sequence: header.base_sequence.get(),
                        records: header.records_count.get(),
                        base_offset: header.base_offset(),
                    });
                    if kept.len() > PRODUCER_BATCHES_KEPT {
                        kept.pop_front();
                    }
                }
                found.index.on_append(
                    (header.base_offset() - self.base_offset) as u32,
                    at as u32,
                    total as u64,
                    header.max_timestamp.get(),
                    index_interval_bytes,
                );
                found.valid_bytes += total as u64;
                found.next_offset = header.last_offset() + 1;
                rest = &rest[total..];
                progressed = true;
            }
        }
        Ok(found.with_producers(producers))
    }
}

/// Batches picked out of a read for a fetch.
#[derive(Debug)]
pub struct Picked {
    pub bytes: Bytes,
    /// Where in the segment the next batch starts, and its offset.
    pub end_position: u64,
    pub next_offset: i64,
}

pub enum Pick {
    Found(Picked),
    /// Nothing wanted was whole in the read: read again `skip` bytes further on, at least
    /// `needs` bytes (0: as much as before).
    Further {
        skip: usize,
        needs: usize,
    },
    /// Nothing wanted is stored at or after the read.
    End,
}

/// Picks out of `buf`, the result of asking for `asked` bytes at `position`, the batches whose
/// last offset is at least `offset`, up to `max_bytes` (the first one always whole), stopping
/// before `end_offset`.
pub fn pick(buf: Bytes, position: u64, asked: usize, offset: i64, max_bytes: usize, end_offset: i64) -> Pick {
    if buf.is_empty() {
        return Pick::End;
    }
    let mut batches = batch::Batches::new(&buf);
    let mut start = None;
    let mut stop = 0;
    let mut next_offset = offset;
    for (pos, header, bytes) in batches.by_ref() {
        if header.base_offset() >= end_offset {
            break;
        }
        if header.last_offset() < offset {
            continue;
        }
        let begin = *start.get_or_insert(pos);
        if pos + bytes.len() - begin > max_bytes && pos > begin {
            break;
        }
        stop = pos + bytes.len();
        next_offset = header.last_offset() + 1;
    }
    if let Some(start) = start {
        let end_position = position + stop as u64;
        return Pick::Found(Picked { bytes: buf.slice(start..stop), end_position, next_offset });
    }
    // Move past the batches before `offset` and, when the next batch is larger than the read,
    // read all of it.
    let skip = batches.position();
    match batch::frame_length(&buf[skip..]) {
        Err(batch::BatchError::Truncated { needed, .. }) if buf.len() == asked => {
            Pick::Further { skip, needs: needed }
        }
        _ if skip > 0 && buf.len() == asked => Pick::Further { skip, needs: 0 },
        _ => Pick::End,
    }
}

async fn read_file(file: &DmaFile, path: &Path, position: u64, len: usize) -> Result<Bytes, LogError> {
    read_buf::release_returned();
    let aligned = file.align_up(position + len as u64) - file.align_down(position);
    let data = file.read_at(position, len).await.map_err(|e| LogError::io("read", path, e))?;
    Ok(read_buf::into_bytes(data, read_buf::charge_for(aligned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(42, "log"), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.index"), None);
    }
}
