//! What the load threads share with the reporter: a clock, counters, latency histograms (one
//! per thread, drained by the reporter), the record budget, and the stop and failure flags.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;

/// Latencies are kept in microseconds, from 1 µs to an hour, with 3 significant digits.
pub const LATENCY_MAX_US: u64 = 3_600_000_000;
/// Errors printed in full; the rest are only counted.
const ERRORS_PRINTED_MAX: u64 = 10;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds")
}

/// Monotonic nanoseconds since the start of the run, and the wall clock for record timestamps.
pub struct Clock {
    epoch: Instant,
    wall_ms_at_epoch: i64,
}

impl Clock {
    fn new() -> Clock {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
        Clock { epoch: Instant::now(), wall_ms_at_epoch: wall.as_millis() as i64 }
    }

    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub fn wall_ms(&self, ns: u64) -> i64 {
        self.wall_ms_at_epoch + (ns / 1_000_000) as i64
    }
}

#[derive(Default)]
pub struct Counters {
    pub records: AtomicU64,
    /// Bytes of record values.
    pub payload_bytes: AtomicU64,
    /// Bytes of whole record batches: what the broker stores and sends.
    pub batch_bytes: AtomicU64,
}

impl Counters {
    pub fn add(&self, records: u64, payload_bytes: u64, batch_bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.payload_bytes.fetch_add(payload_bytes, Ordering::Relaxed);
        self.batch_bytes.fetch_add(batch_bytes, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            records: self.records.load(Ordering::Relaxed),
            payload_bytes: self.payload_bytes.load(Ordering::Relaxed),
            batch_bytes: self.batch_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Snapshot {
    pub records: u64,
    pub payload_bytes: u64,
    pub batch_bytes: u64,
}

impl Snapshot {
    pub fn minus(self, earlier: Snapshot) -> Snapshot {
        Snapshot {
            records: self.records - earlier.records,
            payload_bytes: self.payload_bytes - earlier.payload_bytes,
            batch_bytes: self.batch_bytes - earlier.batch_bytes,
        }
    }
}

/// One thread's latency histogram; the reporter swaps its contents out every interval.
pub type LatencyCell = Arc<Mutex<Histogram<u64>>>;

/// One measured flow (produce acks, or consumed records) with its latency histograms.
#[derive(Default)]
pub struct Flow {
    pub counters: Counters,
    /// When the last records were counted (ns on the run's clock): the end of the window.
    pub last_ns: AtomicU64,
    cells: Mutex<Vec<LatencyCell>>,
}

impl Flow {
    /// Counts records acknowledged or consumed at `now_ns`.
    pub fn add(&self, records: u64, payload_bytes: u64, batch_bytes: u64, now_ns: u64) {
        self.counters.add(records, payload_bytes, batch_bytes);
        self.last_ns.fetch_max(now_ns, Ordering::Relaxed);
    }

    pub fn new_cell(&self) -> LatencyCell {
        let cell = Arc::new(Mutex::new(new_histogram()));
        self.cells.lock().expect("cells lock").push(cell.clone());
        cell
    }

    /// Moves every thread's samples into `into` and empties the threads' histograms.
    pub fn drain_into(&self, into: &mut Histogram<u64>) {
        for cell in self.cells.lock().expect("cells lock").iter() {
            let mut h = cell.lock().expect("latency lock");
            into.add(&*h).expect("same histogram bounds");
            h.reset();
        }
    }
}

pub struct Stats {
    pub clock: Clock,
    pub produced: Flow,
    pub consumed: Flow,
    /// How long each batch waited from its first record's due time until its request was
    /// written: the generator's own lateness plus waiting for a free request slot.
    pub send_wait: Flow,
    /// Records producers may still generate; unlimited until the warm-up ends.
    budget: AtomicI64,
    /// Set when generation must end (duration over, or a failure).
    pub stop: AtomicBool,
    /// Set when an error ended the run.
    pub failed: AtomicBool,
    /// Set when every producer has finished and drained its requests.
    pub producers_done: AtomicBool,
    pub errors: AtomicU64,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            clock: Clock::new(),
            produced: Flow::default(),
            consumed: Flow::default(),
            send_wait: Flow::default(),
            budget: AtomicI64::new(i64::MAX),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            producers_done: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        })
    }

    /// Limits generation from now on to `records` more records.
    pub fn set_budget(&self, records: u64) {
        self.budget.store(records.min(i64::MAX as u64) as i64, Ordering::SeqCst);
    }

    /// Takes up to `want` records from the budget; 0 means it is spent.
    pub fn take_budget(&self, want: u64) -> u64 {
        let want = want.min(i64::MAX as u64) as i64;
        let before = self.budget.fetch_sub(want, Ordering::Relaxed);
        before.clamp(0, want) as u64
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Counts an error (which makes the run fail) and prints the first few.
    pub fn error(&self, message: impl FnOnce() -> String) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < ERRORS_PRINTED_MAX {
            eprintln!("pinion-bench: ERROR: {}", message());
        } else if n == ERRORS_PRINTED_MAX {
            eprintln!("pinion-bench: ERROR: more errors follow; only counting them from now on");
        }
    }

    /// An error that ends the run: every thread winds down.
    pub fn fail(&self, message: impl FnOnce() -> String) {
        self.error(message);
        self.failed.store(true, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    pub fn error_count(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

/// Microseconds between two clock readings, clamped into the histogram's range.
pub fn latency_us(from_ns: u64, to_ns: u64) -> u64 {
    (to_ns.saturating_sub(from_ns) / 1000).clamp(1, LATENCY_MAX_US)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_never_grants_more_than_set() {
        let stats = Stats::new();
        assert_eq!(stats.take_budget(10), 10);
        stats.set_budget(25);
        assert_eq!(stats.take_budget(10), 10);
        assert_eq!(stats.take_budget(10), 10);
        assert_eq!(stats.take_budget(10), 5);
        assert_eq!(stats.take_budget(10), 0);
        assert_eq!(stats.take_budget(1), 0);
    }

    #[test]
    fn drained_cells_are_empty() {
        let flow = Flow::default();
        let cell = flow.new_cell();
        cell.lock().unwrap().record(100).unwrap();
        let mut total = new_histogram();
        flow.drain_into(&mut total);
        assert_eq!(total.len(), 1);
        flow.drain_into(&mut total);
        assert_eq!(total.len(), 1);
    }
}
