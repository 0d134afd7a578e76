//! The consumer's loss and order checks, apart from any I/O so that they are unit tested: every
//! batch of a partition must start where the previous one ended, hold as many records as its
//! offsets span and pass its CRC; in end-to-end mode every (producer, partition) sequence of
//! stamped values must count up by one.

use anyhow::{bail, Result};

use crate::batch::{crc_ok, BatchView, Stamp};

/// Where one partition's next batch must start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetCheck {
    pub partition: i32,
    pub next_offset: i64,
}

impl OffsetCheck {
    /// Checks that a batch's header continues the partition, and moves past it.
    pub fn take(&mut self, view: &BatchView) -> Result<()> {
        let (partition, expected) = (self.partition, self.next_offset);
        if view.base_offset != expected {
            let what = if view.base_offset < expected { "duplicate" } else { "gap" };
            bail!(
                "partition {partition}: {what}: a batch starts at offset {} where {expected} was expected",
                view.base_offset
            );
        }
        if view.records_count != view.last_offset_delta + 1 {
            bail!(
                "partition {partition}: the batch at offset {} holds {} records for {} offsets",
                view.base_offset,
                view.records_count,
                view.last_offset_delta + 1
            );
        }
        self.next_offset = view.next_offset();
        Ok(())
    }
}

/// Checks a whole batch's stored CRC against its bytes.
pub fn check_crc(partition: i32, view: &BatchView, batch: &[u8]) -> Result<()> {
    if !crc_ok(batch) {
        bail!("partition {partition}: the batch at offset {} fails its CRC check", view.base_offset);
    }
    Ok(())
}

/// The next sequence number expected from every producer in every partition.
pub struct SequenceCheck {
    partitions: usize,
    next: Vec<u64>,
}

impl SequenceCheck {
    pub fn new(producers: usize, partitions: usize) -> SequenceCheck {
        SequenceCheck { partitions, next: vec![0; producers * partitions] }
    }

    /// Checks the stamp of one value read from `partition`.
    pub fn take(&mut self, partition: i32, stamp: &Stamp) -> Result<()> {
        if stamp.partition != partition as u32 {
            bail!("partition {partition}: a record stamped for partition {} arrived here", stamp.partition);
        }
        let slot = stamp.producer as usize * self.partitions + partition as usize;
        let Some(expected) = self.next.get_mut(slot) else {
            bail!("partition {partition}: a record from unknown producer {}", stamp.producer);
        };
        if stamp.sequence != *expected {
            let what = if stamp.sequence < *expected { "duplicate" } else { "gap" };
            bail!(
                "partition {partition}: {what}: producer {} record {} arrived where {} was expected",
                stamp.producer,
                stamp.sequence,
                *expected
            );
        }
        *expected += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Compression;
    use crate::batch::{BatchBuilder, Batches};

    /// A stored batch of `count` records at `base_offset`, as a broker returns it.
    fn stored(base_offset: i64, count: usize) -> Vec<u8> {
        let mut b = BatchBuilder::new(Compression::None);
        let mut buf = Vec::new();
        b.begin(&mut buf, 0);
        for _ in 0..count {
            b.append(&mut buf, 0, b"", b"value");
        }
        b.finish(&mut buf).unwrap();
        // The broker rewrites the base offset, which the CRC does not cover.
        buf[..8].copy_from_slice(&base_offset.to_be_bytes());
        buf
    }

    fn check(c: &mut OffsetCheck, batch: &[u8]) -> Result<()> {
        let (view, whole) = Batches::new(batch).next_batch().unwrap().unwrap();
        c.take(&view)?;
        check_crc(c.partition, &view, whole)
    }

    #[test]
    fn contiguous_batches_pass() {
        let mut c = OffsetCheck { partition: 0, next_offset: 10 };
        check(&mut c, &stored(10, 3)).unwrap();
        check(&mut c, &stored(13, 1)).unwrap();
        assert_eq!(c.next_offset, 14);
    }

    #[test]
    fn gaps_and_duplicates_fail() {
        let mut c = OffsetCheck { partition: 2, next_offset: 10 };
        let gap = check(&mut c, &stored(11, 1)).unwrap_err().to_string();
        assert!(gap.contains("gap"), "{gap}");
        let dup = check(&mut c, &stored(9, 1)).unwrap_err().to_string();
        assert!(dup.contains("duplicate"), "{dup}");
        assert_eq!(c.next_offset, 10, "a failed batch does not move the check");
    }

    #[test]
    fn corruption_fails() {
        let mut c = OffsetCheck { partition: 0, next_offset: 0 };
        let mut batch = stored(0, 2);
        let last = batch.len() - 3;
        batch[last] ^= 0x40;
        assert!(check(&mut c, &batch).unwrap_err().to_string().contains("CRC"));
    }

    #[test]
    fn record_count_must_match_offsets() {
        let mut c = OffsetCheck { partition: 0, next_offset: 0 };
        let mut batch = stored(0, 2);
        batch[57..61].copy_from_slice(&3i32.to_be_bytes()); // recordsCount says 3 for 2 offsets
        assert!(check(&mut c, &batch).unwrap_err().to_string().contains("holds 3 records"));
    }

    #[test]
    fn sequences_count_up_per_producer_and_partition() {
        let mut s = SequenceCheck::new(2, 4);
        let stamp = |producer, partition, sequence| Stamp { send_ns: 0, producer, partition, sequence };
        s.take(1, &stamp(0, 1, 0)).unwrap();
        s.take(1, &stamp(1, 1, 0)).unwrap();
        s.take(1, &stamp(0, 1, 1)).unwrap();
        s.take(3, &stamp(0, 3, 0)).unwrap();
        assert!(s.take(1, &stamp(0, 1, 3)).unwrap_err().to_string().contains("gap"));
        assert!(s.take(1, &stamp(1, 1, 0)).unwrap_err().to_string().contains("duplicate"));
        assert!(s.take(2, &stamp(0, 1, 2)).unwrap_err().to_string().contains("stamped for partition 1"));
        assert!(s.take(1, &stamp(7, 1, 0)).unwrap_err().to_string().contains("unknown producer"));
    }
}
