//! The memory batches live in between the socket and the fetch cache. The router reads request
//! frames into it, and the shard keeps large batches in its cache as slices of those frames and
//! copies small ones into it. Either way it is taken at the rate data arrives and held as long
//! as the cache keeps the batches. Memory fresh from the kernel costs a fault and a zeroing per
//! page on first touch; on a VM whose balloon hands freed memory back to the host it costs far
//! more (2.2-2.7 ms per MiB measured here: as long as receiving it; tuning.md). So large
//! chunks come from one pool, touched once at start-up and never given back; only when it is
//! empty does a buffer take one from the system allocator.
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

use crate::alloc::map_anonymous;

/// Size of a pooled chunk. Anything larger to fill gets a chunk of its own size.
pub const POOL_CHUNK_BYTES: usize = 4 << 20;
/// A buffer starts with a chunk this small, from the system allocator (see `ChunkBuf` for when
/// it takes a pooled one).
pub const SMALL_CHUNK_BYTES: usize = 64 << 10;
/// Alignment of chunks from the system allocator (a cache line).
const SMALL_ALIGN_BYTES: usize = 64;

/// The process's pool: one mapping cut into `POOL_CHUNK_BYTES` slots.
struct Pool {
    base: NonNull<u8>,
    slots: usize,
    /// Slots not in use, lowest last.
    free: Mutex<Vec<usize>>,
}

// SAFETY: the pool only hands out disjoint slots of its mapping, which lives as long as the
// process; which slots are free is kept under the mutex.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

static POOL: OnceLock<Pool> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("cannot map {bytes} bytes for receive buffers: {source}")]
pub struct PoolError {
    bytes: usize,
    source: std::io::Error,
}

/// Maps the process's pool (`bytes`, rounded down to whole chunks) and touches every page of
/// it, so that no request waits for a page fault. Call once, before any buffer. Returns the
/// bytes mapped and how long the touching took, or `None` when no pool was made (too small,
/// or made already).
pub fn reserve_pool(bytes: usize) -> Result<Option<(usize, Duration)>, PoolError> {
    let slots = bytes / POOL_CHUNK_BYTES;
    if slots == 0 || POOL.get().is_some() {
        return Ok(None);
    }
    let started = Instant::now();
    let _ = POOL.set(Pool::new(slots)?);
    Ok(Some((slots * POOL_CHUNK_BYTES, started.elapsed())))
}

impl Pool {
    fn new(slots: usize) -> Result<Pool, PoolError> {
        let len = slots * POOL_CHUNK_BYTES;
        let base = map_anonymous(len).map_err(|source| PoolError { bytes: len, source })?;
        let p = base.as_ptr().cast::<libc::c_void>();
        // SAFETY: advice on our own mapping. Huge pages are a hint (fewer TLB misses);
        // MADV_POPULATE_WRITE faults the whole range in one call, and on kernels without it
        // (EINVAL, before 5.14) a write to each page does the same. Short of memory, it fails
        // and the pages are touched as used instead.
        unsafe {
            libc::madvise(p, len, libc::MADV_HUGEPAGE);
            if libc::madvise(p, len, libc::MADV_POPULATE_WRITE) != 0
                && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL)
            {
                let bytes = p.cast::<u8>();
                for offset in (0..len).step_by(4096) {
                    bytes.add(offset).write_volatile(0);
                }
            }
        }
        Ok(Pool { base, slots, free: Mutex::new((0..slots).rev().collect()) })
    }

    fn take(&self) -> Option<usize> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
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

/// One chunk of memory. Its first `initialized` bytes hold values (written since, or zero pages
/// of the pool); past them, a chunk from the system allocator holds none yet, and is written
/// through a pointer or zeroed before it is lent out as `&mut [u8]` (`ChunkBuf::spare_mut`).
struct Chunk {
    ptr: NonNull<u8>,
    capacity: usize,
    source: Source,
    /// Changed only by the buffer that owns the chunk; atomic because the chunk is shared.
    initialized: AtomicUsize,
}

enum Source {
    /// A slot of a pool, given back when the chunk is dropped.
    Pool(&'static Pool, usize),
    /// The system allocator: small chunks (kept for reuse once dropped, `SMALL_KEPT`), and
    /// large ones when the pool has none.
    Heap,
}

// SAFETY: a chunk's bytes are written only by the one owner of the buffer filling it: past
// every byte a `Piece` refers to (`spare_mut`, `spare_ptr`), or anywhere when no piece shares
// it (the move to its front in `reserve`); pieces only read.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

/// Most small chunks kept for reuse once dropped (4 MiB of them).
const SMALL_KEPT_MAX: usize = 64;

/// Small chunks dropped and kept for the next buffer that needs one, each with how many of its
/// bytes hold values. Handed back to the system allocator, their memory is not reused for the
/// next small chunk: small allocations that live as long as the cache keeps a batch settle in
/// it, and each new chunk then faults in fresh pages. Measured at 10,000 records/s of small
/// batches: about 3,000 page faults a second, and resident memory growing by about the fetch
/// cache's budget before it levelled off.
static SMALL_KEPT: Kept = Kept::new(SMALL_KEPT_MAX);

/// Chunks kept for reuse: their addresses and how many of their bytes hold values.
struct Kept {
    max: usize,
    chunks: Mutex<Vec<(usize, usize)>>,
}

impl Kept {
    const fn new(max: usize) -> Kept {
        Kept { max, chunks: Mutex::new(Vec::new()) }
    }

    /// Keeps a chunk unless `max` are kept already; false if it was not kept.
    fn keep(&self, ptr: NonNull<u8>, initialized: usize) -> bool {
        let mut chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        let room = chunks.len() < self.max;
        if room {
            chunks.push((ptr.as_ptr() as usize, initialized));
        }
        room
    }

    fn take(&self) -> Option<(NonNull<u8>, usize)> {
        let (addr, initialized) = self.chunks.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some((NonNull::new(addr as *mut u8)?, initialized))
    }
}

impl Chunk {
    /// A small chunk to start a buffer with: one kept from before, or a new one from the system
    /// allocator.
    fn small() -> Chunk {
        match SMALL_KEPT.take() {
            Some((ptr, initialized)) => Chunk {
                ptr,
                capacity: SMALL_CHUNK_BYTES,
                source: Source::Heap,
                initialized: AtomicUsize::new(initialized),
            },
            None => Chunk::heap(SMALL_CHUNK_BYTES),
        }
    }

    /// A chunk of at least `bytes` for a buffer that has filled one already: from `pool` when
    /// one is given, has a chunk free, and that chunk is big enough; else as big from the
    /// system allocator.
    fn busy(bytes: usize, pool: Option<&'static Pool>) -> Chunk {
        if let Some(pool) = pool.filter(|_| bytes <= POOL_CHUNK_BYTES) {
            if let Some(slot) = pool.take() {
                return Chunk {
                    ptr: pool.slot_ptr(slot),
                    capacity: POOL_CHUNK_BYTES,
                    source: Source::Pool(pool, slot),
                    initialized: AtomicUsize::new(POOL_CHUNK_BYTES),
                };
            }
        }
        Chunk::heap(bytes.max(POOL_CHUNK_BYTES))
    }

    /// Memory of the system allocator, not zeroed: a page is touched only when filled.
    fn heap(capacity: usize) -> Chunk {
        let layout = Self::heap_layout(capacity);
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { std::alloc::alloc(layout) };
        let ptr = NonNull::new(p).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        Chunk { ptr, capacity, source: Source::Heap, initialized: AtomicUsize::new(0) }
    }

    fn heap_layout(capacity: usize) -> Layout {
        Layout::from_size_align(capacity, SMALL_ALIGN_BYTES).expect("chunk size overflows a layout")
    }

    fn initialized(&self) -> usize {
        self.initialized.load(Ordering::Relaxed)
    }

    fn set_initialized(&self, bytes: usize) {
        debug_assert!(bytes <= self.capacity);
        self.initialized.fetch_max(bytes, Ordering::Relaxed);
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
            Source::Heap => {
                if self.capacity == SMALL_CHUNK_BYTES && SMALL_KEPT.keep(self.ptr, self.initialized()) {
                    return;
                }
                // SAFETY: allocated in `Chunk::heap` with this layout; no piece refers to it.
                unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::heap_layout(self.capacity)) }
            }
        }
    }
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
    /// Where large chunks come from.
    pool: Option<&'static Pool>,
    /// Whether its pieces are kept (a shard's copies, which the cache holds): then every chunk
    /// after the first comes from the pool. A connection's pieces mostly go once answered, so it
    /// takes a pooled chunk only for what a small one cannot hold.
    keeps_pieces: bool,
    chunk: Arc<Chunk>,
    /// A small chunk set aside while a pooled one is in use, to return to when idle.
    small: Option<Arc<Chunk>>,
    /// First byte not yet cut off.
    start: usize,
    /// End of the bytes received.
    end: usize,
}

impl ChunkBuf {
    /// A connection's receive buffer, on the process's pool if it has one.
    pub fn for_connection() -> Self {
        ChunkBuf::new(POOL.get(), false)
    }

    /// A buffer for copies that are kept, on the process's pool if it has one.
    pub fn for_copies() -> Self {
        ChunkBuf::new(POOL.get(), true)
    }

    fn new(pool: Option<&'static Pool>, keeps_pieces: bool) -> Self {
        ChunkBuf { pool, keeps_pieces, chunk: Arc::new(Chunk::small()), small: None, start: 0, end: 0 }
    }

    /// The bytes filled and not yet cut off.
    pub fn filled(&self) -> &[u8] {
        // SAFETY: [start, end) was written by the owner and is not lent out mutably.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.start), self.end - self.start) }
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    /// Room for at least `min` bytes after the filled ones. When the chunk is short of that, the
    /// filled bytes move: to its front if no piece shares it and it is not an oversized chunk
    /// that a smaller one would now do for, or else to a new chunk with room for `target`
    /// (at least `min`): a small one if that fits and the pieces are not kept, else from the
    /// pool (see `Chunk::busy`).
    pub fn reserve(&mut self, min: usize, target: usize) {
        let (capacity, filled) = (self.chunk.capacity, self.len());
        if capacity - self.end >= min {
            return;
        }
        let needed = filled + target.max(min);
        let oversized = capacity > POOL_CHUNK_BYTES && needed <= POOL_CHUNK_BYTES;
        if Arc::get_mut(&mut self.chunk).is_some() && capacity >= filled + min && !oversized {
            // SAFETY: no piece shares the chunk; `copy` handles the overlap.
            unsafe {
                let p = self.chunk.ptr.as_ptr();
                std::ptr::copy(p.add(self.start), p, filled);
            }
        } else {
            let chunk = if needed <= SMALL_CHUNK_BYTES && !self.keeps_pieces {
                self.small_chunk()
            } else {
                let chunk = Arc::new(Chunk::busy(needed, self.pool));
                // Keep a small chunk that nothing else holds, to come back to.
                if self.chunk.capacity == SMALL_CHUNK_BYTES && Arc::strong_count(&self.chunk) == 1 {
                    self.small = Some(self.chunk.clone());
                }
                chunk
            };
            // SAFETY: the new chunk holds at least `needed` bytes and is not the old one (a
            // small chunk set aside is never the current one).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.chunk.ptr.as_ptr().add(self.start),
                    chunk.ptr.as_ptr(),
                    filled,
                )
            };
            chunk.set_initialized(filled);
            self.chunk = chunk;
        }
        self.start = 0;
        self.end = filled;
    }

    /// When nothing is filled and no piece holds the current chunk, goes back from a large
    /// chunk to a small one, so that an idle connection holds 64 KiB, not a pool slot.
    pub fn shrink_when_idle(&mut self) {
        let large = self.chunk.capacity > SMALL_CHUNK_BYTES;
        if large && self.len() == 0 && Arc::strong_count(&self.chunk) == 1 {
            self.chunk = self.small_chunk();
            self.start = 0;
            self.end = 0;
        }
    }

    /// The small chunk set aside, if nothing else holds it, or a new one.
    fn small_chunk(&mut self) -> Arc<Chunk> {
        match self.small.take() {
            Some(small) if Arc::strong_count(&small) == 1 => small,
            _ => Arc::new(Chunk::small()),
        }
    }

    /// Bytes that can be filled before the chunk must change.
    pub fn spare_len(&self) -> usize {
        self.chunk.capacity - self.end
    }

    /// The next `len` unfilled bytes (zeroed first where they hold nothing yet), to fill;
    /// `commit` says how much was.
    pub fn spare_mut(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.spare_len(), "asked past the chunk");
        let (p, want_end) = (self.chunk.ptr.as_ptr(), self.end + len);
        let initialized = self.chunk.initialized();
        if initialized < want_end {
            // SAFETY: inside the chunk, past every piece; nothing else writes it.
            unsafe { std::ptr::write_bytes(p.add(initialized), 0, want_end - initialized) };
            self.chunk.set_initialized(want_end);
        }
        // SAFETY: past `end` nothing is shared (pieces lie before `start`); the bytes hold
        // values (above); `&mut self` keeps this the only borrow.
        unsafe { std::slice::from_raw_parts_mut(p.add(self.end), len) }
    }

    /// Where the unfilled bytes start, to be written through (at most `spare_len` of them)
    /// before `commit`.
    pub fn spare_ptr(&mut self) -> *mut u8 {
        // SAFETY: `end` is within the chunk.
        unsafe { self.chunk.ptr.as_ptr().add(self.end) }
    }

    /// Counts the next `n` unfilled bytes, just written, as filled.
    pub fn commit(&mut self, n: usize) {
        assert!(n <= self.spare_len(), "committed past the chunk");
        self.end += n;
        self.chunk.set_initialized(self.end);
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
        let len = bytes.len();
        self.reserve(len, len);
        // SAFETY: `reserve` made room for `len` bytes past the filled ones.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.spare_ptr(), len) };
        self.commit(len);
        // SAFETY: the last `len` filled bytes, just written and not yet cut off or shared.
        edit(unsafe { std::slice::from_raw_parts_mut(self.chunk.ptr.as_ptr().add(self.end - len), len) });
        self.split_to(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_chunks_come_back_with_their_values_up_to_the_limit() {
        let kept = Kept::new(2);
        let (a, b, c) = (
            NonNull::<u8>::dangling(),
            NonNull::new(8 as *mut u8).unwrap(),
            NonNull::new(16 as *mut u8).unwrap(),
        );
        assert!(kept.keep(a, 100));
        assert!(kept.keep(b, 0));
        assert!(!kept.keep(c, 5), "a third chunk goes back to the allocator");
        assert_eq!(kept.take(), Some((b, 0)));
        assert_eq!(kept.take(), Some((a, 100)));
        assert_eq!(kept.take(), None);
    }

    fn slot_of(buf: &ChunkBuf) -> Option<usize> {
        match buf.chunk.source {
            Source::Pool(_, slot) => Some(slot),
            _ => None,
        }
    }

    fn fill(buf: &mut ChunkBuf, bytes: &[u8]) {
        buf.reserve(bytes.len(), bytes.len());
        buf.spare_mut(bytes.len()).copy_from_slice(bytes);
        buf.commit(bytes.len());
    }

    #[test]
    fn frames_keep_their_bytes_while_the_buffer_moves_on() {
        let mut buf = ChunkBuf::for_connection();
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
        let mut buf = ChunkBuf::for_connection();
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
        let mut buf = ChunkBuf::new(Some(pool), false);
        fill(&mut buf, &[1u8; 100]);
        assert!(!buf.chunk.pooled(), "a connection starts on a small chunk");
        fill(&mut buf, &vec![2u8; SMALL_CHUNK_BYTES]);
        assert_eq!(slot_of(&buf), Some(0));
        let first = buf.split_to(100 + SMALL_CHUNK_BYTES);
        // The chunk is shared by `first`, so the next frame that does not fit goes to slot 1,
        // and once both are taken, to a chunk from the system allocator.
        fill(&mut buf, &vec![3u8; POOL_CHUNK_BYTES - 10]);
        assert_eq!(slot_of(&buf), Some(1));
        let second = buf.split_to(POOL_CHUNK_BYTES - 10);
        fill(&mut buf, &vec![4u8; SMALL_CHUNK_BYTES + 1]);
        assert!(matches!(buf.chunk.source, Source::Heap), "the pool is empty");
        assert_eq!(buf.chunk.capacity, POOL_CHUNK_BYTES);
        assert!(first[100..].iter().all(|&b| b == 2) && second.iter().all(|&b| b == 3));
        drop((first, second));
        let mut free = pool.free.lock().unwrap().clone();
        free.sort();
        assert_eq!(free, vec![0, 1], "both slots came back when their last frames went");
        // And they are handed out again.
        let third = buf.split_to(SMALL_CHUNK_BYTES + 1);
        fill(&mut buf, &vec![5u8; POOL_CHUNK_BYTES]);
        assert!(buf.chunk.pooled());
        assert!(third.iter().all(|&b| b == 4));
    }

    #[test]
    fn small_frames_stay_in_small_chunks_and_an_idle_connection_gives_its_pooled_one_back() {
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(1).unwrap()));
        let mut buf = ChunkBuf::new(Some(pool), false);
        // Small frames kept alive (requests in flight) fill small chunk after small chunk.
        let kept: Vec<Bytes> = (0..100)
            .map(|_| {
                fill(&mut buf, &[6u8; 1000]);
                buf.split_to(1000)
            })
            .collect();
        assert!(!buf.chunk.pooled(), "small frames do not take pool slots");
        // A large frame does; once it is gone and nothing is filled, the slot goes back.
        fill(&mut buf, &vec![7u8; SMALL_CHUNK_BYTES * 2]);
        assert!(buf.chunk.pooled());
        drop(buf.split_to(SMALL_CHUNK_BYTES * 2));
        buf.shrink_when_idle();
        assert!(!buf.chunk.pooled());
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        assert!(kept.iter().all(|b| b.iter().all(|&x| x == 6)));
    }

    #[test]
    fn a_large_frame_moves_once_then_fills_in_place() {
        let mut buf = ChunkBuf::new(None, false);
        let whole = 3 * POOL_CHUNK_BYTES;
        let step = 256 << 10;
        let mut moves = 0;
        let mut at = buf.chunk.ptr;
        while buf.len() < whole {
            let rest = whole - buf.len();
            buf.reserve(rest.min(step), rest);
            if buf.chunk.ptr != at {
                moves += 1;
                at = buf.chunk.ptr;
            }
            let n = rest.min(step);
            buf.spare_mut(n).fill(8);
            buf.commit(n);
        }
        assert_eq!(moves, 1, "room for the whole frame is made once");
        assert!(buf.split_to(whole).iter().all(|&b| b == 8));
    }

    #[test]
    fn small_pieces_that_are_kept_move_the_buffer_to_the_pool() {
        // A shard's copies of small batches: each cut off and kept in the cache.
        let pool: &'static Pool = Box::leak(Box::new(Pool::new(1).unwrap()));
        let mut buf = ChunkBuf::new(Some(pool), true);
        let mut kept = Vec::new();
        for i in 0..(SMALL_CHUNK_BYTES / 1000 + 1) {
            kept.push(buf.push_edited(&[7u8; 1000], |b| b[0] = i as u8));
        }
        assert!(buf.chunk.pooled(), "the small chunk filled up while shared");
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == i as u8 && b[1..].iter().all(|&x| x == 7)));
    }

    #[test]
    fn memory_of_the_system_allocator_is_zeroed_only_where_lent_before_it_is_written() {
        let mut buf = ChunkBuf::new(None, false);
        // A fresh one, not a small chunk kept from an earlier buffer (whose bytes hold values).
        buf.chunk = Arc::new(Chunk::heap(SMALL_CHUNK_BYTES));
        assert_eq!(buf.chunk.initialized(), 0);
        // Written through the pointer (as recv does), then counted.
        // SAFETY: 3 bytes of room past the filled ones.
        unsafe { std::ptr::copy_nonoverlapping(b"abc".as_ptr(), buf.spare_ptr(), 3) };
        buf.commit(3);
        assert_eq!(buf.chunk.initialized(), 3);
        // Lent out as a slice: zeroed first, and only as far as asked.
        assert!(buf.spare_mut(5).iter().all(|&b| b == 0));
        assert_eq!(buf.chunk.initialized(), 8);
        assert_eq!(buf.filled(), b"abc");
        // A large chunk from the system allocator starts with nothing initialized past the
        // bytes moved into it.
        buf.reserve(SMALL_CHUNK_BYTES * 2, SMALL_CHUNK_BYTES * 2);
        assert_eq!(buf.chunk.initialized(), 3);
        assert_eq!(buf.filled(), b"abc");
    }

    #[test]
    fn a_frame_larger_than_a_pooled_chunk_gets_its_own() {
        let mut buf = ChunkBuf::for_connection();
        let huge = vec![3u8; POOL_CHUNK_BYTES + 1];
        fill(&mut buf, &huge);
        let frame = buf.split_to(huge.len());
        assert_eq!(frame.len(), huge.len());
        assert!(frame.iter().all(|&b| b == 3));
    }
}
