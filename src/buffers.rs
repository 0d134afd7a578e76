//! The memory batches live in between the socket and the fetch cache. The router reads request
//! frames into it, and the shard keeps large batches in its cache as slices of those frames and
//! copies small ones into it. Either way it is taken at the rate data arrives and held as long
//! as the cache keeps the batches. Memory fresh from the kernel costs a fault and a zeroing per
//! page on first touch; on a VM whose balloon hands freed memory back to the host it costs far
//! more (2.2-2.7 ms per MiB measured here: as long as receiving it; tuning.md). So
//! busy buffers fill chunks of one pool, touched once at start-up and never given back.
//!
//! A `ChunkBuf` fills its current chunk front to back, and its filled bytes are cut off as
//! `Bytes` that share the chunk; the chunk goes back to the pool when its last piece is dropped.
//! Bytes past the last cut are written only by the buffer's owner, never shared.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Size of a pooled chunk. Anything larger to fill gets a chunk of its own size.
pub const POOL_CHUNK_BYTES: usize = 4 << 20;
/// A buffer starts with a chunk this small, from the system allocator, and moves to pooled
/// chunks (or as large from the system allocator) once it needs a second one. One whose pieces are all dropped before it fills up (a
/// connection whose requests are answered and forgotten) keeps reusing its small chunk.
pub const SMALL_CHUNK_BYTES: usize = 64 << 10;
/// Alignment of chunks from the system allocator (a cache line).
const SMALL_ALIGN_BYTES: usize = 64;

/// The process's pool: one mapping cut into `POOL_CHUNK_BYTES` slots.
struct Pool {
    base: NonNull<u8>,
    slots: usize,
    /// Slots never handed out yet start at `next`; given-back ones wait in `free`.
    next: AtomicUsize,
    free: Mutex<Vec<usize>>,
}

// SAFETY: the pool only hands out disjoint slots of its mapping, which lives as long as the
// process; which slot is whose is kept under the mutex and the atomic.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

static POOL: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("cannot map {bytes} bytes for receive buffers: {source}")]
pub struct PoolError {
    bytes: usize,
    source: std::io::Error,
}

/// Maps the process's pool (`bytes`, rounded down to whole chunks; 0 for none) and touches
/// every page of it, so that no request waits for a page fault. Call once, before any
/// buffer; later calls change nothing. Returns how long the touching took.
pub fn reserve_pool(bytes: usize) -> Result<Duration, PoolError> {
    if bytes < POOL_CHUNK_BYTES || POOL.get().is_some() {
        return Ok(Duration::ZERO);
    }
    let started = Instant::now();
    let pool = Pool::new(bytes / POOL_CHUNK_BYTES)?;
    let _ = POOL.set(pool);
    Ok(started.elapsed())
}

impl Pool {
    fn new(slots: usize) -> Result<Pool, PoolError> {
        let len = slots * POOL_CHUNK_BYTES;
        let base = map_anonymous(len).map_err(|source| PoolError { bytes: len, source })?;
        let p = base.as_ptr().cast::<libc::c_void>();
        // SAFETY: advice on our own mapping. Huge pages are a hint (fewer TLB misses);
        // MADV_POPULATE_WRITE faults the whole range in one call, and on kernels without it
        // (before 5.14) a write to each page does the same.
        unsafe {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            if libc::madvise(p, len, libc::MADV_POPULATE_WRITE) != 0 {
                let bytes = p.cast::<u8>();
                for offset in (0..len).step_by(4096) {
                    bytes.add(offset).write_volatile(0);
                }
            }
        }
        Ok(Pool { base, slots, next: AtomicUsize::new(0), free: Mutex::new(Vec::new()) })
    }

    fn take(&self) -> Option<usize> {
        if let Some(slot) = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop() {
            return Some(slot);
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed);
        (slot < self.slots).then_some(slot)
    }

    fn give_back(&self, slot: usize) {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).push(slot);
    }

    fn slot_ptr(&self, slot: usize) -> NonNull<u8> {
        assert!(slot < self.slots);
        // SAFETY: inside the mapping, which is `slots` chunks long.
        unsafe { NonNull::new_unchecked(self.base.as_ptr().add(slot * POOL_CHUNK_BYTES)) }
    }
}

/// One chunk of memory. Every byte of it is initialized (zeroed when new, or written since),
/// so the unfilled part can be lent out as `&mut [u8]`.
struct Chunk {
    ptr: NonNull<u8>,
    capacity: usize,
    source: Source,
}

enum Source {
    /// A slot of a pool, given back when the chunk is dropped.
    Pool(&'static Pool, usize),
    /// The system allocator (small chunks: zeroing them costs little).
    Heap,
    /// A mapping of its own (large chunks: the kernel zeroes each page when first touched, so
    /// no page is touched before it is filled).
    Mapping,
}

// SAFETY: a chunk's bytes are written only through `ChunkBuf::spare_mut`, by the one owner of
// the buffer filling it, and only past every byte a `Piece` refers to; pieces only read.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    /// A small chunk from the system allocator, to start a buffer with.
    fn small() -> Chunk {
        let layout = Self::heap_layout(SMALL_CHUNK_BYTES);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Chunk { ptr, capacity: SMALL_CHUNK_BYTES, source: Source::Heap }
    }

    /// A chunk of at least `bytes` for a buffer that has filled one already: from `pool` when
    /// one is given, has a chunk free, and that chunk is big enough; else a mapping as big.
    fn busy(bytes: usize, pool: Option<&'static Pool>) -> Chunk {
        if let Some(pool) = pool.filter(|_| bytes <= POOL_CHUNK_BYTES) {
            if let Some(slot) = pool.take() {
                return Chunk {
                    ptr: pool.slot_ptr(slot),
                    capacity: POOL_CHUNK_BYTES,
                    source: Source::Pool(pool, slot),
                };
            }
        }
        let capacity = bytes.max(POOL_CHUNK_BYTES);
        let ptr = map_anonymous(capacity)
            .unwrap_or_else(|_| std::alloc::handle_alloc_error(Self::heap_layout(capacity)));
        Chunk { ptr, capacity, source: Source::Mapping }
    }

    fn heap_layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, SMALL_ALIGN_BYTES).expect("chunk size overflows a layout")
    }

    #[cfg(test)]
    fn pooled(&self) -> bool {
        matches!(self.source, Source::Pool(..))
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        match self.source {
            Source::Pool(pool, slot) => pool.give_back(slot),
            // SAFETY: allocated in `Chunk::small` with this layout.
            Source::Heap => unsafe {
                std::alloc::dealloc(self.ptr.as_ptr(), Self::heap_layout(self.capacity))
            },
            // SAFETY: mapped in `Chunk::busy` with this length; no piece refers to it any more.
            Source::Mapping => unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.capacity);
            },
        }
    }
}

/// A private anonymous mapping of `len` bytes: zero pages, backed only once touched.
fn map_anonymous(len: usize) -> std::io::Result<NonNull<u8>> {
    // SAFETY: a fresh mapping; nothing else refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast::<u8>()).expect("mmap returned a null mapping"))
}

/// Bytes cut off a chunk, kept alive by the `Bytes` made from them.
struct Piece {
    chunk: Arc<Chunk>,
    start: usize,
    len: usize,
}

impl AsRef<[u8]> for Piece {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: [start, start + len) was filled before the piece was cut and is never
        // written again while the chunk is shared (see `Chunk`).
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.start), self.len) }
    }
}

/// A buffer filled front to back (a connection's received bytes, a shard's copied batches),
/// whose filled bytes are cut off as `Bytes` that share its chunk.
pub struct ChunkBuf {
    /// Where chunks come from once the buffer outgrows small ones.
    pool: Option<&'static Pool>,
    chunk: Arc<Chunk>,
    /// First byte not yet cut off.
    start: usize,
    /// End of the bytes received.
    end: usize,
}

impl Default for ChunkBuf {
    /// A buffer on the process's pool, if it has one.
    fn default() -> Self {
        ChunkBuf::new(POOL.get())
    }
}

impl ChunkBuf {
    fn new(pool: Option<&'static Pool>) -> Self {
        ChunkBuf { pool, chunk: Arc::new(Chunk::small()), start: 0, end: 0 }
    }

    /// The bytes filled and not yet cut off.
    pub fn filled(&self) -> &[u8] {
        // SAFETY: [start, end) was written by the owner and is not lent out mutably.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.start), self.end - self.start) }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Room for at least `more` bytes after the filled ones. When the chunk is short: moves the
    /// filled bytes to its front if no piece shares it, or else to a new chunk big enough for
    /// both (see `Chunk::busy`).
    pub fn reserve(&mut self, more: usize) {
        if self.chunk.capacity - self.end >= more {
            return;
        }
        let filled = self.len();
        let needed = filled + more;
        if Arc::get_mut(&mut self.chunk).is_some() && self.chunk.capacity >= needed {
            // SAFETY: no piece shares the chunk; `copy` handles the overlap.
            unsafe {
                let p = self.chunk.ptr.as_ptr();
                std::ptr::copy(p.add(self.start), p, filled);
            }
        } else {
            let chunk = Chunk::busy(needed, self.pool);
            // SAFETY: the new chunk holds at least `needed` bytes; the chunks do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.chunk.ptr.as_ptr().add(self.start),
                    chunk.ptr.as_ptr(),
                    filled,
                )
            };
            self.chunk = Arc::new(chunk);
        }
        self.start = 0;
        self.end = filled;
    }

    /// The unfilled rest of the chunk, to fill; `commit` says how much was.
    pub fn spare_mut(&mut self) -> &mut [u8] {
        let spare = self.chunk.capacity - self.end;
        // SAFETY: past `end` nothing is shared (pieces lie before `start`); the bytes are
        // initialized (see `Chunk`); `&mut self` keeps this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.end), spare) }
    }

    /// Counts the first `n` bytes of `spare_mut` as filled.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.chunk.capacity - self.end, "committed past the chunk");
        self.end += n;
    }

    /// Drops the first `n` filled bytes.
    pub fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advanced past the filled bytes");
        self.start += n;
    }

    /// Cuts off the first `n` filled bytes as `Bytes` that share the chunk.
    pub fn split_to(&mut self, n: usize) -> Bytes {
        assert!(n <= self.len(), "split past the filled bytes");
        let piece = Piece { chunk: self.chunk.clone(), start: self.start, len: n };
        self.start += n;
        Bytes::from_owner(piece)
    }

    /// Appends `bytes`, lets `edit` change them in place, and cuts them off.
    pub fn push_edited(&mut self, bytes: &[u8], edit: impl FnOnce(&mut [u8])) -> Bytes {
        self.reserve(bytes.len());
        let spare = &mut self.spare_mut()[..bytes.len()];
        spare.copy_from_slice(bytes);
        edit(spare);
        self.commit(bytes.len());
        self.split_to(bytes.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_of(buf: &ChunkBuf) -> Option<usize> {
        match buf.chunk.source {
            Source::Pool(_, slot) => Some(slot),
            _ => None,
        }
    }

    fn fill(buf: &mut ChunkBuf, bytes: &[u8]) {
        buf.reserve(bytes.len());
        buf.spare_mut()[..bytes.len()].copy_from_slice(bytes);
        buf.commit(bytes.len());
    }

    #[test]
    fn frames_keep_their_bytes_while_the_buffer_moves_on() {
        let mut buf = ChunkBuf::default();
        fill(&mut buf, b"helloworld");
        let hello = buf.split_to(5);
        // More than the small chunk holds: the unsplit rest moves to a new chunk.
        let big = vec![7u8; SMALL_CHUNK_BYTES * 2];
        fill(&mut buf, &big);
        assert_eq!(buf.len(), 5 + big.len());
        assert_eq!(&buf.filled()[..5], b"world");
        buf.advance(5);
        let rest = buf.split_to(big.len());
        assert_eq!(&hello[..], b"hello");
        assert!(rest.iter().all(|&b| b == 7));
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn an_unshared_chunk_is_reused_in_place() {
        let mut buf = ChunkBuf::default();
        fill(&mut buf, &[1u8; SMALL_CHUNK_BYTES - 10]);
        drop(buf.split_to(SMALL_CHUNK_BYTES - 20));
        let before = buf.chunk.ptr;
        fill(&mut buf, &[2u8; 100]);
        assert_eq!(buf.chunk.ptr, before, "no frame shares the chunk, so it is reused");
        assert_eq!(&buf.filled()[..10], &[1u8; 10]);
        assert_eq!(&buf.filled()[10..], &[2u8; 100]);
    }

    #[test]
    fn a_busy_connection_reads_into_pooled_chunks_that_come_back() {
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(2).unwrap()));
        let mut buf = ChunkBuf::new(Some(pool));
        fill(&mut buf, &[1u8; 100]);
        assert!(!buf.chunk.pooled(), "a connection starts on a small chunk");
        fill(&mut buf, &vec![2u8; SMALL_CHUNK_BYTES]);
        assert_eq!(slot_of(&buf), Some(0));
        let first = buf.split_to(100 + SMALL_CHUNK_BYTES);
        // The chunk is shared by `first`, so the next frame that does not fit goes to slot 1,
        // and once both are taken, to the system allocator.
        fill(&mut buf, &vec![3u8; POOL_CHUNK_BYTES - 10]);
        assert_eq!(slot_of(&buf), Some(1));
        let second = buf.split_to(POOL_CHUNK_BYTES - 10);
        fill(&mut buf, &vec![4u8; SMALL_CHUNK_BYTES]);
        assert!(!buf.chunk.pooled(), "the pool is empty");
        assert_eq!(buf.chunk.capacity, POOL_CHUNK_BYTES, "as large from the system allocator");
        assert!(first[100..].iter().all(|&b| b == 2) && second.iter().all(|&b| b == 3));
        drop((first, second));
        let mut free = pool.free.lock().unwrap().clone();
        free.sort();
        assert_eq!(free, vec![0, 1], "both slots came back when their last frames went");
        // And they are handed out again: to this buffer, once its chunk is shared and full.
        let third = buf.split_to(SMALL_CHUNK_BYTES);
        fill(&mut buf, &vec![5u8; POOL_CHUNK_BYTES]);
        assert!(buf.chunk.pooled());
        assert!(third.iter().all(|&b| b == 4));
    }

    #[test]
    fn small_pieces_that_are_kept_move_the_buffer_to_the_pool() {
        // A shard's copies of small batches: each cut off and kept in the cache.
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(1).unwrap()));
        let mut buf = ChunkBuf::new(Some(pool));
        let mut kept = Vec::new();
        for i in 0..(SMALL_CHUNK_BYTES / 1000 + 1) {
            kept.push(buf.push_edited(&[7u8; 1000], |b| b[0] = i as u8));
        }
        assert!(buf.chunk.pooled(), "the small chunk filled up while shared");
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == i as u8 && b[1..].iter().all(|&x| x == 7)));
    }

    #[test]
    fn a_frame_larger_than_a_pooled_chunk_gets_its_own() {
        let mut buf = ChunkBuf::default();
        let huge = vec![3u8; POOL_CHUNK_BYTES + 1];
        fill(&mut buf, &huge);
        let frame = buf.split_to(huge.len());
        assert_eq!(frame.len(), huge.len());
        assert!(frame.iter().all(|&b| b == 3));
    }
}
