//! Reading ahead for consumers that read from disk, and the share of read memory each fetch gets.
//!
//! A consumer keeps one fetch in flight, so without help the disk idles while a response travels
//! to it and the next fetch comes back: the page cache's read-ahead fills that gap for a broker
//! that reads through it, and direct I/O has none. So when a fetch read a partition from disk
//! and the segment holds more, the shard starts reading the next stretch at once, where the
//! next fetch will start. A fetch that asks for that offset takes the read, done or under way.
//!
//! Reads made ahead are kept per shard, newest last, and the oldest are dropped (cancelled if
//! still under way) once they hold more than the limit (a quarter of the I/O memory), so what a
//! consumer that stops, or jumps elsewhere, leaves behind stays within it.
//!
//! A fetch may read as much from disk as may be read ahead ([`FetchReads`]): one response on its
//! way while the next is read, together within the half of the I/O memory that reads may hold
//! (`read_buf`). Consumers reading from disk at the same time (on different connections) share
//! that: each of n may read a fetch of an n-th of it, and read as much ahead; a fetch's first read
//! is allowed whatever its size, so that every fetch moves its consumer on. A fetch of more
//! partitions than its share covers (32 partitions of 1 MiB each, say) reads the first of them
//! and leaves the rest, empty, for the fetches after it, as Kafka may when `max_bytes` runs out.
//! It starts reading ahead for those it left, in order, so the next fetch finds them read and
//! starts there: the partitions take turns, and the memory in flight stays within what the I/O
//! memory holds, rather than spilling into fresh heap memory that costs a page fault per page.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::Task;

use super::segment::Segment;

/// A consumer that has not read from disk for this long no longer counts among those sharing
/// the read memory.
const READER_IDLE: Duration = Duration::from_secs(1);

pub struct ReadAhead {
    reads: RefCell<VecDeque<Ahead>>,
    limit_bytes: usize,
    /// Fetches that found their read made ahead.
    taken: Cell<u64>,
    /// The connections that read from disk lately.
    readers: RefCell<Vec<Reader>>,
}

struct Reader {
    connection: u64,
    /// When it last read from disk.
    at: Instant,
    /// Where its next fetch with no read made ahead starts taking its partitions, moved on by
    /// one each time, so that none of them is always last.
    turn: usize,
}

struct Ahead {
    /// Weak, so that a segment deleted meanwhile (retention, a deleted topic) is not kept open
    /// by a read made ahead of it; only the read itself holds it, while it runs.
    segment: Weak<Segment>,
    /// The offset the read starts at, and its position in the segment.
    offset: i64,
    position: u64,
    len: usize,
    /// `None` when the read failed; the fetch then reads for itself.
    read: Task<Option<Bytes>>,
}

impl Ahead {
    fn is_for(&self, segment: &Rc<Segment>, offset: i64) -> bool {
        // The weak reference keeps the segment's allocation, so its address is not reused.
        self.offset == offset && std::ptr::eq(self.segment.as_ptr(), Rc::as_ptr(segment))
    }
}

/// A read made ahead, taken by the fetch it was made for.
pub struct Taken {
    pub position: u64,
    pub len: usize,
    read: Task<Option<Bytes>>,
}

impl Taken {
    /// The bytes read at `position`, `len` of them or fewer where the segment ended.
    pub async fn bytes(self) -> Option<Bytes> {
        self.read.await
    }
}

impl ReadAhead {
    /// Reads made ahead hold at most `limit_bytes`; 0 turns reading ahead off.
    pub fn new(limit_bytes: usize) -> ReadAhead {
        ReadAhead {
            reads: RefCell::new(VecDeque::new()),
            limit_bytes,
            taken: Cell::new(0),
            readers: RefCell::new(Vec::new()),
        }
    }

    /// Whether a read is made ahead for a fetch of `offset` in `segment`.
    pub fn has(&self, segment: &Rc<Segment>, offset: i64) -> bool {
        self.reads.borrow().iter().any(|a| a.is_for(segment, offset))
    }

    /// Where a fetch on `connection` starts taking its partitions (then all of them in turn,
    /// wrapping around): at the first whose read is made ahead after one whose is not (where its
    /// previous fetch left off); at the first when all are made ahead; with none made ahead,
    /// where the connection's turn has come to, which moves on with each such fetch.
    pub fn first(&self, made_ahead: &[bool], connection: u64) -> usize {
        let count = made_ahead.len();
        if let Some(i) = (0..count).find(|&i| made_ahead[i] && !made_ahead[(i + count - 1) % count]) {
            return i;
        }
        if count == 0 || made_ahead.iter().any(|&m| m) {
            return 0;
        }
        let mut readers = self.readers.borrow_mut();
        let Some(reader) = readers.iter_mut().find(|r| r.connection == connection) else { return 0 };
        reader.turn = reader.turn.wrapping_add(1);
        reader.turn % count
    }

    /// The reads of one fetch on `connection`, allowed `max_bytes` in all and at most its share
    /// of the limit (when reading ahead is on): the limit split among the connections reading
    /// from disk lately, this one included.
    pub fn fetch(&self, max_bytes: usize, connection: u64) -> FetchReads<'_> {
        let now = Instant::now();
        let mut readers = self.readers.borrow_mut();
        readers.retain(|r| now.duration_since(r.at) < READER_IDLE);
        let others = readers.iter().filter(|r| r.connection != connection).count();
        let share = self.limit_bytes / (others + 1);
        let allowed = if self.limit_bytes == 0 { max_bytes } else { max_bytes.min(share) };
        FetchReads {
            ahead: self,
            connection,
            share,
            allowed,
            left: Cell::new(allowed),
            started: Cell::new(false),
            deferred: RefCell::new(Vec::new()),
        }
    }

    /// Notes that `connection` reads from disk now.
    pub(super) fn reading(&self, connection: u64) {
        let now = Instant::now();
        let mut readers = self.readers.borrow_mut();
        match readers.iter_mut().find(|r| r.connection == connection) {
            Some(r) => r.at = now,
            None => readers.push(Reader { connection, at: now, turn: 0 }),
        }
    }

    /// The read made ahead for a fetch of `offset` in `segment`, if there is one.
    fn take(&self, segment: &Rc<Segment>, offset: i64) -> Option<Taken> {
        let mut reads = self.reads.borrow_mut();
        let i = reads.iter().position(|a| a.is_for(segment, offset))?;
        let ahead = reads.remove(i)?;
        self.taken.set(self.taken.get() + 1);
        Some(Taken { position: ahead.position, len: ahead.len, read: ahead.read })
    }

    /// Starts reading `len` bytes at `position` of `segment`, where `offset` begins, for the
    /// fetch that will ask for it. Drops the oldest reads made ahead to stay within the limit.
    fn start(&self, segment: Rc<Segment>, offset: i64, position: u64, len: usize) {
        if len == 0 || len > self.limit_bytes {
            return;
        }
        let mut reads = self.reads.borrow_mut();
        if reads.iter().any(|a| a.is_for(&segment, offset)) {
            return;
        }
        let mut held: usize = reads.iter().map(|a| a.len).sum();
        while held + len > self.limit_bytes {
            let Some(oldest) = reads.pop_front() else { break };
            held -= oldest.len;
        }
        let weak = Rc::downgrade(&segment);
        let read = glommio::spawn_local(async move { segment.read(position, len).await.ok() });
        reads.push_back(Ahead { segment: weak, offset, position, len, read });
    }

    /// Reads made ahead and not yet taken.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.reads.borrow().len()
    }

    /// Fetches that found their read made ahead.
    #[cfg(test)]
    pub fn taken(&self) -> u64 {
        self.taken.get()
    }
}

/// One fetch's reads from disk on a shard (see the module's documentation). Its partitions'
/// reads are decided in the order they are asked for (`ReadAhead::order`).
pub struct FetchReads<'a> {
    ahead: &'a ReadAhead,
    connection: u64,
    /// This fetch's share of the limit: no read is made ahead for it that is larger.
    share: usize,
    /// What it may read, its share or less when it asks for less: as much may be read ahead
    /// for the partitions it leaves.
    allowed: usize,
    /// Bytes this fetch may still read.
    left: Cell<usize>,
    /// Whether this fetch has read anything: its first read is allowed whatever its size, so
    /// that every fetch moves its consumer on.
    started: Cell<bool>,
    /// Reads left for later fetches, in the order they were left.
    deferred: RefCell<Vec<Deferred>>,
}

struct Deferred {
    segment: Rc<Segment>,
    offset: i64,
    position: u64,
    len: usize,
}

impl FetchReads<'_> {
    /// The read made ahead for `offset` in `segment`, counted against this fetch.
    pub fn take(&self, segment: &Rc<Segment>, offset: i64) -> Option<Taken> {
        let taken = self.ahead.take(segment, offset)?;
        self.left.set(self.left.get().saturating_sub(taken.len));
        self.start();
        Some(taken)
    }

    /// Whether this fetch may read `len` bytes at `position` of `segment` for `offset`; if not,
    /// the read is left for a later fetch.
    pub fn allow(&self, segment: &Rc<Segment>, offset: i64, position: u64, len: usize) -> bool {
        if self.started.get() && len > self.left.get() {
            self.deferred.borrow_mut().push(Deferred { segment: segment.clone(), offset, position, len });
            return false;
        }
        self.left.set(self.left.get().saturating_sub(len));
        self.start();
        true
    }

    /// This fetch reads from disk: its connection counts among those sharing the memory.
    fn start(&self) {
        if !self.started.replace(true) {
            self.ahead.reading(self.connection);
        }
    }

    /// After a read that ended at `position` in `segment`, where `offset` starts: reads `len`
    /// bytes there ahead for the next fetch, unless this fetch left partitions for later (their
    /// turn comes first, and `read_ahead_deferred` reads ahead for them) or the read is larger
    /// than its share (with more consumers than the limit has room for, the oldest read made
    /// ahead, dropped first, is the next one to be taken: every read would be wasted).
    pub fn read_on(&self, segment: Rc<Segment>, offset: i64, position: u64, len: usize) {
        if len <= self.share && self.deferred.borrow().is_empty() {
            self.ahead.start(segment, offset, position, len);
        }
    }

    /// Starts reading ahead for the reads left to later fetches, in the order they were left,
    /// as far as this fetch was allowed to read. Called once this fetch's own reads are decided:
    /// the reads it makes and those it starts ahead fit the memory together, and the disk then
    /// has the next fetch's reads queued behind this one's.
    pub fn read_ahead_deferred(&self) {
        let mut room = self.allowed;
        for d in self.deferred.borrow().iter() {
            if d.len > room {
                break;
            }
            room -= d.len;
            self.ahead.start(d.segment.clone(), d.offset, d.position, d.len);
        }
    }
}
