"""Reading (and deliberately damaging) pinion's on-disk segments, which hold Kafka
RecordBatch v2 bytes exactly as Kafka writes them:

  baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 |
  attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
  producerId i64 | producerEpoch i16 | baseSequence i32 | recordCount i32 | records...

The CRC (CRC-32C) covers everything from `attributes` to the end of the batch.
"""

import struct
from dataclasses import dataclass
from pathlib import Path

from kafka.record.util import calc_crc32c

HEADER_LEN = 61        # bytes before the first record
CRC_POS = 17           # offset of the crc field inside a batch
ATTRIBUTES_POS = 21
COMPRESSION = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


@dataclass
class Batch:
    start: int          # file position of the batch
    end: int            # file position just past it
    base_offset: int
    last_offset: int
    record_count: int
    magic: int
    attributes: int
    crc_ok: bool

    @property
    def compression(self):
        return COMPRESSION.get(self.attributes & 0x7, "?")


def read_batches(path):
    """Complete batches from the start of a segment file. Stops at the first position
    that is not a complete batch: the end of the data, zero fill, or a torn write."""
    data = Path(path).read_bytes()
    batches, pos = [], 0
    while pos + HEADER_LEN <= len(data):
        base_offset, length = struct.unpack_from(">qi", data, pos)
        end = pos + 12 + length
        if length < HEADER_LEN - 12 or end > len(data):
            break
        magic = data[pos + 16]
        (crc,) = struct.unpack_from(">I", data, pos + CRC_POS)
        (attributes, last_delta) = struct.unpack_from(">hi", data, pos + ATTRIBUTES_POS)
        (count,) = struct.unpack_from(">i", data, pos + 57)
        batches.append(Batch(pos, end, base_offset, base_offset + last_delta, count, magic,
                             attributes, calc_crc32c(data[pos + ATTRIBUTES_POS:end]) == crc))
        pos = end
    return batches


def segment_files(partition_dir):
    """The partition's .log segments in offset order (names are 20-digit base offsets)."""
    return sorted(Path(partition_dir).glob("*.log"))


def truncate_inside_last_batch(log_path, cut=7):
    """Cut `cut` bytes off the end of the last complete batch (and drop anything after
    it, e.g. zero fill). Returns the damaged Batch."""
    last = read_batches(log_path)[-1]
    with open(log_path, "r+b") as f:
        f.truncate(last.end - cut)
    return last


def flip_byte_in_last_batch(log_path, records_pos=None):
    """Invert one byte in the records area (after the CRC-covered header) of the last
    batch, so only its CRC can reveal the damage. Returns the damaged Batch."""
    last = read_batches(log_path)[-1]
    pos = records_pos if records_pos is not None else (last.start + HEADER_LEN + last.end) // 2
    assert last.start + HEADER_LEN <= pos < last.end
    with open(log_path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0xFF]))
    return last
