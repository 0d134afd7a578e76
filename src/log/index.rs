//! Sparse indexes of one segment, kept in memory and written in Kafka's file formats:
//! `.index` maps a relative offset to a byte position (8 bytes an entry), `.timeindex` maps a
//! timestamp to a relative offset (12 bytes an entry). docs/format.md has the byte layout.

/// `.index` entry: the batch starting at `position` holds offsets from `base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

/// `.timeindex` entry: `timestamp` is the largest timestamp of the batches before offset
/// `base + relative_offset` in this segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

pub const OFFSET_ENTRY_BYTES: usize = 8;
pub const TIME_ENTRY_BYTES: usize = 12;

/// Both indexes of a segment plus the bookkeeping that decides when the next entry is due.
#[derive(Debug, Default, Clone)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    bytes_since_entry: u64,
    max_timestamp: i64,
}

impl SegmentIndex {
    pub fn new() -> Self {
        SegmentIndex { max_timestamp: -1, ..Default::default() }
    }

    /// Records a batch appended at `position` (segment-relative). An offset entry is added every
    /// `interval_bytes`; with it a time entry `(max timestamp so far, this offset)` when the max
    /// timestamp has grown since the last one, as Kafka does, so both stay sparse.
    pub fn on_append(
        &mut self,
        relative_offset: u32,
        position: u32,
        batch_bytes: u64,
        max_timestamp: i64,
        interval_bytes: u64,
    ) {
        let max_before = self.max_timestamp;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if self.offsets.is_empty() || self.bytes_since_entry >= interval_bytes {
            self.offsets.push(OffsetEntry { relative_offset, position });
            self.bytes_since_entry = 0;
            if self.times.last().is_none_or(|t| t.timestamp < max_before) && max_before >= 0 {
                self.times.push(TimeEntry { timestamp: max_before, relative_offset });
            }
        }
        self.bytes_since_entry += batch_bytes;
    }

    /// Largest timestamp seen in this segment (-1 when none).
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Position of the last indexed batch whose relative offset is at most `relative_offset`.
    pub fn floor_position(&self, relative_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// Relative offset from which to scan for the first batch whose max timestamp reaches
    /// `timestamp`: every batch before it is known to be below `timestamp`.
    pub fn scan_start(&self, timestamp: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < timestamp);
        if i == 0 {
            0
        } else {
            self.times[i - 1].relative_offset
        }
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for e in &self.offsets {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    /// The `.timeindex` of a sealed segment: its entries plus a last one that covers every batch
    /// (`next_relative_offset` is one past the segment's last offset), so a loaded index knows the
    /// segment's max timestamp without reading it.
    pub fn encode_times(&self, next_relative_offset: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.times.len() + 1) * TIME_ENTRY_BYTES);
        let mut entries = self.times.clone();
        if self.max_timestamp >= 0 && entries.last().is_none_or(|t| t.timestamp < self.max_timestamp) {
            entries.push(TimeEntry { timestamp: self.max_timestamp, relative_offset: next_relative_offset });
        }
        for e in &entries {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Loads index files written by `encode_*`, rejecting anything that cannot belong to a
    /// segment of `segment_bytes` bytes: a partial entry, an offset or position that goes
    /// backwards, a position past the end. `None` means the index must be rebuilt.
    pub fn decode(offsets: &[u8], times: &[u8], segment_bytes: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(OFFSET_ENTRY_BYTES) || !times.len().is_multiple_of(TIME_ENTRY_BYTES)
        {
            return None;
        }
        let mut index = SegmentIndex::new();
        for e in offsets.chunks_exact(OFFSET_ENTRY_BYTES) {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
                position: u32::from_be_bytes([e[4], e[5], e[6], e[7]]),
            };
            if let Some(last) = index.offsets.last() {
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position {
                    return None;
                }
            }
            if u64::from(entry.position) >= segment_bytes.max(1) {
                return None;
            }
            index.offsets.push(entry);
        }
        for e in times.chunks_exact(TIME_ENTRY_BYTES) {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&e[..8]);
            let entry = TimeEntry {
                timestamp: i64::from_be_bytes(ts),
                relative_offset: u32::from_be_bytes([e[8], e[9], e[10], e[11]]),
            };
            if let Some(last) = index.times.last() {
                if entry.timestamp < last.timestamp || entry.relative_offset < last.relative_offset {
                    return None;
                }
            }
            index.max_timestamp = entry.timestamp;
            index.times.push(entry);
        }
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_sparse_by_interval() {
        let mut ix = SegmentIndex::new();
        let mut pos = 0;
        for i in 0..10u32 {
            ix.on_append(i, pos, 1000, 100 + i64::from(i), 4096);
            pos += 1000;
        }
        // First batch always, then one every >= 4096 bytes.
        let offsets: Vec<u32> = ix.offsets.iter().map(|e| e.relative_offset).collect();
        assert_eq!(offsets, vec![0, 5]);
        assert_eq!(ix.floor_position(4), 0);
        assert_eq!(ix.floor_position(7), 5000);
        assert_eq!(ix.max_timestamp(), 109);
    }

    #[test]
    fn time_scan_start_never_skips_a_batch_reaching_the_timestamp() {
        let mut ix = SegmentIndex::new();
        // (relative offset, max timestamp); every batch is indexed (interval 0).
        let batches = [(0, 10), (5, 20), (9, 15), (12, 30)];
        for (i, (rel, ts)) in batches.iter().enumerate() {
            ix.on_append(*rel, i as u32 * 100, 100, *ts, 0);
        }
        for target in [5, 10, 11, 20, 25, 30, 31] {
            let first = batches.iter().find(|(_, ts)| *ts >= target).map(|(r, _)| *r).unwrap_or(99);
            assert!(ix.scan_start(target) <= first, "target {target}");
        }
        assert_eq!(ix.scan_start(25), 9);
    }

    #[test]
    fn files_round_trip_and_damage_is_detected() {
        let mut ix = SegmentIndex::new();
        ix.on_append(0, 0, 5000, 10, 4096);
        ix.on_append(3, 5000, 5000, 20, 4096);
        let (o, t) = (ix.encode_offsets(), ix.encode_times(5));
        let back = SegmentIndex::decode(&o, &t, 10_000).unwrap();
        assert_eq!(back.offsets, ix.offsets);
        assert_eq!(back.max_timestamp(), 20);
        assert!(SegmentIndex::decode(&o[..5], &t, 10_000).is_none());
        assert!(SegmentIndex::decode(&o, &t, 4_000).is_none());
        let mut swapped = o.clone();
        swapped.rotate_left(8);
        assert!(SegmentIndex::decode(&swapped, &t, 10_000).is_none());
    }
}
