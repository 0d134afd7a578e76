//! Idempotent-producer state of one partition: for each producer id, its epoch and the last few
//! batches' sequence ranges, so a retried batch is recognised and answered with its original
//! offset instead of being written twice. Pure logic, no I/O.

use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer: Kafka lets a producer have at most 5 in flight.
const RECENT_BATCHES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSeq {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// Records in the batch.
    pub count: i32,
}

impl BatchSeq {
    fn last_seq(&self) -> i32 {
        // Sequences wrap at i32::MAX, as in Kafka.
        ((i64::from(self.first_seq) + i64::from(self.count) - 1) % (i64::from(i32::MAX) + 1)) as i32
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// New and in order: append it.
    Append,
    /// Already written at this base offset: answer with it, write nothing.
    Duplicate {
        base_offset: i64,
    },
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    StaleEpoch {
        current: i16,
        got: i16,
    },
}

#[derive(Debug, Default)]
struct Producer {
    epoch: i16,
    /// (first sequence, last sequence, base offset) of recent batches, oldest first.
    recent: VecDeque<(i32, i32, i64)>,
}

#[derive(Debug, Default)]
pub struct Producers {
    by_id: HashMap<i64, Producer>,
}

impl Producers {
    pub fn check(&self, b: &BatchSeq) -> Check {
        let Some(p) = self.by_id.get(&b.producer_id) else {
            // Unknown (new, or its state was not kept across a restart): accept, as Kafka does
            // for a producer whose state has expired.
            return Check::Append;
        };
        if b.epoch < p.epoch {
            return Check::StaleEpoch { current: p.epoch, got: b.epoch };
        }
        if b.epoch > p.epoch {
            return Check::Append; // a bumped epoch starts its sequences again
        }
        if let Some(&(_, _, base_offset)) =
            p.recent.iter().find(|(first, last, _)| *first == b.first_seq && *last == b.last_seq())
        {
            return Check::Duplicate { base_offset };
        }
        let expected = match p.recent.back() {
            Some(&(_, last, _)) => {
                if last == i32::MAX {
                    0
                } else {
                    last + 1
                }
            }
            None => return Check::Append,
        };
        if b.first_seq == expected {
            Check::Append
        } else {
            Check::OutOfOrder { expected, got: b.first_seq }
        }
    }

    /// Records an appended batch.
    pub fn record(&mut self, b: &BatchSeq, base_offset: i64) {
        let p = self.by_id.entry(b.producer_id).or_default();
        if b.epoch != p.epoch {
            p.epoch = b.epoch;
            p.recent.clear();
        }
        p.recent.push_back((b.first_seq, b.last_seq(), base_offset));
        if p.recent.len() > RECENT_BATCHES {
            p.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(first: i32, count: i32) -> BatchSeq {
        BatchSeq { producer_id: 7, epoch: 0, first_seq: first, count }
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut p = Producers::default();
        assert_eq!(p.check(&seq(0, 3)), Check::Append);
        p.record(&seq(0, 3), 100);
        assert_eq!(p.check(&seq(3, 2)), Check::Append);
        p.record(&seq(3, 2), 103);
        assert_eq!(p.check(&seq(0, 3)), Check::Duplicate { base_offset: 100 });
        assert_eq!(p.check(&seq(3, 2)), Check::Duplicate { base_offset: 103 });
        assert_eq!(p.check(&seq(9, 1)), Check::OutOfOrder { expected: 5, got: 9 });
    }

    #[test]
    fn epochs_fence_older_producers_and_reset_sequences() {
        let mut p = Producers::default();
        p.record(&BatchSeq { producer_id: 7, epoch: 2, first_seq: 0, count: 1 }, 0);
        let old = BatchSeq { producer_id: 7, epoch: 1, first_seq: 1, count: 1 };
        assert_eq!(p.check(&old), Check::StaleEpoch { current: 2, got: 1 });
        let bumped = BatchSeq { producer_id: 7, epoch: 3, first_seq: 0, count: 1 };
        assert_eq!(p.check(&bumped), Check::Append);
    }

    #[test]
    fn sequences_wrap() {
        let mut p = Producers::default();
        p.record(&seq(i32::MAX - 1, 2), 0);
        assert_eq!(p.check(&seq(0, 1)), Check::Append);
    }
}
