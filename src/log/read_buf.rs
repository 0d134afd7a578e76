//! Disk reads handed on without a copy.
//!
//! glommio reads into buffers of its own whose reference count is not atomic, so one may only be
//! released on the thread that read it. A fetch response, though, is written by the router, which
//! runs on another thread unless the shard shares its executor. [`into_bytes`] wraps the read as
//! `Bytes` all the same: the last reference dropped on the reading thread releases the buffer
//! there and then; one dropped anywhere else is queued back to that thread, which releases it the
//! next time it reads or takes a request ([`release_returned`]). If the reading thread has gone,
//! the buffer is left to the process's exit rather than released where it must not be.
//!
//! The buffers come from the executor's I/O memory (`--io-memory-mib`), which the writes need
//! too; once that is spent glommio falls back to fresh heap memory, which costs a page fault per
//! page. So reads held by slow sockets may keep only part of it ([`set_budget`]); past that, a
//! read is copied out and its buffer released at once, as every read once was.

use std::cell::Cell;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use glommio::io::ReadResult;

/// Bytes of read buffers a thread lets others hold unless told otherwise.
const DEFAULT_BUDGET_BYTES: usize = 8 << 20;

/// One thread's reads out on loan.
struct Returns {
    queue: Mutex<Queue>,
    /// Set when the queue has entries: a cheap check before taking the lock.
    pending: AtomicBool,
    /// Allocator bytes taken by reads not yet released.
    held: AtomicUsize,
}

struct Queue {
    reads: Vec<ForeignRead>,
    /// The owning thread has gone: nothing more may be queued.
    closed: bool,
}

/// A read dropped on another thread, waiting in its own thread's queue.
struct ForeignRead {
    _read: ReadResult,
    charge: usize,
}

// SAFETY: a `ForeignRead` only moves into its owning thread's queue, which only that thread
// empties; no other thread touches the read's reference count.
unsafe impl Send for ForeignRead {}

/// The reading thread's end of its queue; dropping it (at thread exit) empties and closes it.
struct Home {
    returns: Arc<Returns>,
    budget: Cell<usize>,
}

impl Home {
    fn release(&self, reads: Vec<ForeignRead>) {
        let charge: usize = reads.iter().map(|r| r.charge).sum();
        drop(reads);
        self.returns.held.fetch_sub(charge, Ordering::Relaxed);
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let reads = {
            let mut queue = self.returns.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.closed = true;
            std::mem::take(&mut queue.reads)
        };
        self.release(reads);
    }
}

thread_local! {
    static HOME: Home = Home {
        returns: Arc::new(Returns {
            queue: Mutex::new(Queue { reads: Vec::new(), closed: false }),
            pending: AtomicBool::new(false),
            held: AtomicUsize::new(0),
        }),
        budget: Cell::new(DEFAULT_BUDGET_BYTES),
    };
    /// This thread's number, never given to another thread: it tells where a buffer is dropped.
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

fn thread_number() -> u64 {
    THREAD.with(|n| *n)
}

/// How many bytes of this thread's read buffers may be out at once.
pub fn set_budget(bytes: usize) {
    HOME.with(|h| h.budget.set(bytes));
}

/// Bytes the I/O memory's allocator takes for an aligned read of `len` bytes: a power of two,
/// at least a page.
pub fn charge_for(aligned_len: u64) -> usize {
    (aligned_len.next_power_of_two() as usize).max(4096)
}

/// Wraps a completed read as `Bytes` that may travel to any thread, or copies it out when this
/// thread's budget is spent. `charge` is what the read took from the allocator (`charge_for`).
pub fn into_bytes(read: ReadResult, charge: usize) -> Bytes {
    if read.is_empty() {
        return Bytes::new();
    }
    HOME.with(|h| {
        let held = h.returns.held.load(Ordering::Relaxed);
        if held + charge > h.budget.get() {
            return Bytes::copy_from_slice(&read);
        }
        h.returns.held.fetch_add(charge, Ordering::Relaxed);
        Bytes::from_owner(SharedRead {
            read: ManuallyDrop::new(read),
            charge,
            thread: thread_number(),
            returns: h.returns.clone(),
        })
    })
}

/// Releases the buffers other threads have finished with. Called by the reading thread.
pub fn release_returned() {
    HOME.with(|h| {
        if !h.returns.pending.load(Ordering::Acquire) {
            return;
        }
        let reads = {
            let mut queue = h.returns.queue.lock().unwrap_or_else(|e| e.into_inner());
            h.returns.pending.store(false, Ordering::Release);
            std::mem::take(&mut queue.reads)
        };
        h.release(reads);
    });
}

/// Bytes of this thread's read buffers not yet released.
#[cfg(test)]
pub fn held() -> usize {
    HOME.with(|h| h.returns.held.load(Ordering::Relaxed))
}

/// The owner behind the `Bytes`: the read, and the thread it must be released on.
struct SharedRead {
    read: ManuallyDrop<ReadResult>,
    charge: usize,
    thread: u64,
    returns: Arc<Returns>,
}

// SAFETY: from other threads only the buffer's bytes are read (`as_ref`), which nothing writes
// once the read has completed and which this reference keeps alive; the reference count is
// touched only on the owning thread (`drop` below).
unsafe impl Send for SharedRead {}

impl AsRef<[u8]> for SharedRead {
    fn as_ref(&self) -> &[u8] {
        &self.read
    }
}

impl Drop for SharedRead {
    fn drop(&mut self) {
        // SAFETY: `read` is taken once, here, and not used again.
        let read = unsafe { ManuallyDrop::take(&mut self.read) };
        if self.thread == thread_number() {
            drop(read);
            self.returns.held.fetch_sub(self.charge, Ordering::Relaxed);
            return;
        }
        let mut queue = self.returns.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.closed {
            // The owning thread has gone, and its allocator is not this thread's to touch:
            // the memory is left to the process's exit.
            std::mem::forget(read);
            return;
        }
        queue.reads.push(ForeignRead { _read: read, charge: self.charge });
        self.returns.pending.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use glommio::io::DmaFile;

    use super::*;
    use crate::log::tests::{run as on_executor, test_dir};

    /// A file of `len` bytes, each its position modulo 251, in a fresh test directory.
    fn data_file(len: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = test_dir();
        let path = dir.path().join("data");
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, bytes).unwrap();
        (dir, path)
    }

    fn expected(position: usize, len: usize) -> Vec<u8> {
        (position..position + len).map(|i| (i % 251) as u8).collect()
    }

    /// Reads `len` bytes at `position` as the segment does.
    async fn read(file: &DmaFile, position: u64, len: usize) -> Bytes {
        let aligned = file.align_up(position + len as u64) - file.align_down(position);
        let data = file.read_at(position, len).await.unwrap();
        into_bytes(data, charge_for(aligned))
    }

    #[test]
    fn reads_are_lent_within_the_budget_and_copied_past_it() {
        let (_dir, path) = data_file(64 << 10);
        on_executor(move || async move {
            let file = DmaFile::open(&path).await.unwrap();
            set_budget(2 * 4096);
            let a = read(&file, 100, 3000).await;
            let b = read(&file, 8192, 4096).await;
            assert_eq!(held(), 2 * 4096, "both reads lent");
            let c = read(&file, 20_000, 3000).await;
            assert_eq!(held(), 2 * 4096, "the third read is a copy");
            assert_eq!(&a[..], &expected(100, 3000)[..]);
            assert_eq!(&b[..], &expected(8192, 4096)[..]);
            assert_eq!(&c[..], &expected(20_000, 3000)[..]);
            let slice = a.slice(10..20);
            drop(a);
            assert_eq!(held(), 2 * 4096, "a slice keeps the buffer");
            assert_eq!(&slice[..], &expected(110, 10)[..]);
            drop((slice, b, c));
            assert_eq!(held(), 0);
        });
    }

    #[test]
    fn a_read_dropped_on_another_thread_is_released_by_its_own() {
        let (_dir, path) = data_file(64 << 10);
        on_executor(move || async move {
            let file = DmaFile::open(&path).await.unwrap();
            let bytes = read(&file, 5000, 40_000).await;
            let charge = held();
            assert_eq!(charge, 64 << 10);
            let seen = std::thread::spawn(move || {
                let seen = bytes.slice(1000..1100).to_vec();
                drop(bytes);
                seen
            })
            .join()
            .unwrap();
            assert_eq!(seen, expected(6000, 100));
            assert_eq!(held(), charge, "still held until its own thread releases it");
            release_returned();
            assert_eq!(held(), 0);
        });
    }

    #[test]
    fn reads_still_queued_when_their_thread_ends_are_released_then() {
        let (_dir, path) = data_file(16 << 10);
        let returns = on_executor(move || async move {
            let file = DmaFile::open(&path).await.unwrap();
            let bytes = read(&file, 0, 10_000).await;
            std::thread::spawn(move || drop(bytes)).join().unwrap();
            let returns = HOME.with(|h| h.returns.clone());
            assert_eq!(returns.queue.lock().unwrap().reads.len(), 1);
            returns
        });
        let queue = returns.queue.lock().unwrap();
        assert!(queue.closed, "the thread's end closes its queue");
        assert!(queue.reads.is_empty(), "and releases what was queued");
        assert_eq!(returns.held.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_read_outliving_its_thread_stays_readable_and_is_left_alone() {
        let (_dir, path) = data_file(16 << 10);
        let bytes = on_executor(move || async move {
            let file = DmaFile::open(&path).await.unwrap();
            read(&file, 0, 10_000).await
        });
        // The reading thread has gone; its queue is closed, so this drop leaves the memory be.
        assert_eq!(&bytes[..], &expected(0, 10_000)[..]);
        drop(bytes);
    }
}
