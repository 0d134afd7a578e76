//! Reading ahead for consumers that read from disk.
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

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use bytes::Bytes;
use glommio::Task;

use super::segment::Segment;

pub struct ReadAhead {
    reads: RefCell<VecDeque<Ahead>>,
    limit_bytes: usize,
    /// Fetches that found their read made ahead.
    taken: Cell<u64>,
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
        ReadAhead { reads: RefCell::new(VecDeque::new()), limit_bytes, taken: Cell::new(0) }
    }

    /// The read made ahead for a fetch of `offset` in `segment`, if there is one.
    pub fn take(&self, segment: &Rc<Segment>, offset: i64) -> Option<Taken> {
        let mut reads = self.reads.borrow_mut();
        let i = reads.iter().position(|a| a.is_for(segment, offset))?;
        let ahead = reads.remove(i)?;
        self.taken.set(self.taken.get() + 1);
        Some(Taken { position: ahead.position, len: ahead.len, read: ahead.read })
    }

    /// Starts reading `len` bytes at `position` of `segment`, where `offset` begins, for the
    /// fetch that will ask for it. Drops the oldest reads made ahead to stay within the limit.
    pub fn start(&self, segment: Rc<Segment>, offset: i64, position: u64, len: usize) {
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
