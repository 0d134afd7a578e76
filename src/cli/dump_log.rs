//! `pinion dump-log FILE...`: kafka-dump-log.sh, offline. A segment (`.log`) is read batch by
//! batch with the broker's own checks (`protocol::batch::validate`) and offset continuity; index
//! files (`.index`, `.timeindex`) are listed entry by entry, checked against pinion's load rules
//! (`log::index::SegmentIndex::decode`) and, when the segment is next to them, against it.
//! docs/format.md describes every byte.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use kafka_protocol::records::RecordBatchDecoder;
use serde_json::{json, Value};

use super::output::{bytes_json, format_timestamp, print_json, print_text, Table};
use super::{CliResult, Failure};
use crate::log::index::{SegmentIndex, OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use crate::protocol::batch::{self, BatchHeader, HEADER_BYTES, LOG_OVERHEAD};
use crate::protocol::records;

#[derive(Args, Debug)]
pub struct DumpLogArgs {
    /// Segment files (.log) or their index files (.index, .timeindex).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Also print every record of every batch: offset, timestamp, key, value, headers.
    #[arg(long, alias = "print-data-log")]
    pub records: bool,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// What a dump found wrong in one file.
struct Dumped {
    doc: Value,
    text: String,
    problems: usize,
}

pub fn run(args: DumpLogArgs) -> CliResult {
    let mut docs = Vec::new();
    let mut text = String::new();
    let mut damaged = Vec::new();
    for path in &args.files {
        let kind = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let dumped = match kind {
            "log" => dump_segment(path, args.records)?,
            "index" => dump_offset_index(path)?,
            "timeindex" => dump_time_index(path)?,
            _ => return Err(Failure(format!("{}: not a .log, .index or .timeindex file", path.display()))),
        };
        if dumped.problems > 0 {
            damaged.push(format!("{} ({} problem(s))", path.display(), dumped.problems));
        }
        docs.push(dumped.doc);
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&dumped.text);
    }
    if args.json {
        print_json(&Value::Array(docs));
    } else {
        print_text(&text);
    }
    match damaged.len() {
        0 => Ok(()),
        _ => Err(Failure(format!("damage found in {}", damaged.join(", ")))),
    }
}

fn open(path: &Path) -> Result<(File, u64), Failure> {
    let file = File::open(path).map_err(|e| Failure(format!("cannot open {}: {e}", path.display())))?;
    let len = file.metadata().map_err(|e| Failure(format!("cannot stat {}: {e}", path.display())))?.len();
    Ok((file, len))
}

/// The base offset in a segment or index file name (20 digits), if it has one.
fn base_offset_of(path: &Path) -> Option<i64> {
    let stem = path.file_stem()?.to_str()?;
    crate::log::segment::parse_file_name(&format!("{stem}.log"))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

fn compression_name(attributes: i16) -> &'static str {
    match attributes & 0x07 {
        0 => "none",
        1 => "gzip",
        2 => "snappy",
        3 => "lz4",
        4 => "zstd",
        _ => "unknown",
    }
}

/// One batch as found in the segment.
struct BatchView {
    position: u64,
    header: BatchHeader,
    size: usize,
    /// Why the batch fails the broker's checks, if it does.
    problem: Option<String>,
    records: Option<Result<Vec<RecordView>, String>>,
}

struct RecordView {
    offset: i64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<(String, Option<Bytes>)>,
}

fn dump_segment(path: &Path, with_records: bool) -> Result<Dumped, Failure> {
    let (file, file_len) = open(path)?;
    let io = |e: std::io::Error| Failure(format!("reading {}: {e}", path.display()));
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let base_offset = base_offset_of(path);
    let mut expected_offset = base_offset;
    let mut batches: Vec<BatchView> = Vec::new();
    let mut trailing: Option<(u64, u64, bool, String)> = None; // (position, bytes, all zeros, why)
    let mut position = 0u64;
    while position < file_len {
        let mut prefix = [0u8; LOG_OVERHEAD];
        let got = read_full(&mut reader, &mut prefix).map_err(io)?;
        let length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        let total = LOG_OVERHEAD as u64 + length.max(0) as u64;
        let whole = got == LOG_OVERHEAD
            && length >= (HEADER_BYTES - LOG_OVERHEAD) as i32
            && position + total <= file_len;
        if !whole {
            // Zero padding after the last batch is normal in an active segment (docs/format.md
            // §5.4); anything else is a torn or damaged batch.
            let mut rest = prefix[..got].to_vec();
            reader.read_to_end(&mut rest).map_err(io)?;
            let zeros = rest.iter().all(|&b| b == 0);
            let why = if zeros {
                "zero padding".to_string()
            } else {
                match batch::frame_length(&rest) {
                    Err(e) => format!("not a whole batch: {e}"),
                    Ok(_) => "not a whole batch".to_string(),
                }
            };
            trailing = Some((position, file_len - position, zeros, why));
            break;
        }
        let mut bytes = vec![0u8; total as usize];
        bytes[..LOG_OVERHEAD].copy_from_slice(&prefix);
        read_full(&mut reader, &mut bytes[LOG_OVERHEAD..]).map_err(io)?;
        let header = *BatchHeader::peek(&bytes).map_err(|e| Failure(e.to_string()))?;
        let mut problem = batch::validate(&bytes).err().map(|e| e.to_string());
        let expected = expected_offset.unwrap_or(header.base_offset());
        if problem.is_none() && header.base_offset() != expected {
            problem = Some(format!("base offset {} where {expected} was expected", header.base_offset()));
        }
        expected_offset = Some(header.last_offset() + 1);
        let records = with_records.then(|| batch_records(&bytes, &header, problem.is_none()));
        batches.push(BatchView { position, header, size: bytes.len(), problem, records });
        position += total;
    }

    let problems = batches.iter().filter(|b| b.problem.is_some()).count()
        + usize::from(trailing.as_ref().is_some_and(|t| !t.2));
    let text = segment_text(path, base_offset, file_len, &batches, &trailing, with_records);
    let doc = json!({
        "file": path.display().to_string(),
        "kind": "segment",
        "base_offset": base_offset,
        "bytes": file_len,
        "batches": batches.iter().map(batch_json).collect::<Vec<_>>(),
        "trailing": trailing.as_ref().map(|(position, bytes, zeros, why)| json!({
            "position": position, "bytes": bytes, "zero_padding": zeros, "reason": why,
        })),
        "problems": problems,
    });
    Ok(Dumped { doc, text, problems })
}

/// The records of a batch: decoded by the kafka-protocol crate (any compression) when the batch
/// is valid; read without the CRC check when it is not and is uncompressed, to show the damage.
fn batch_records(bytes: &[u8], header: &BatchHeader, valid: bool) -> Result<Vec<RecordView>, String> {
    let base = header.base_offset();
    if valid {
        let set =
            RecordBatchDecoder::decode(&mut Bytes::copy_from_slice(bytes)).map_err(|e| e.to_string())?;
        return Ok(set
            .records
            .into_iter()
            .map(|r| RecordView {
                offset: r.offset,
                timestamp_ms: r.timestamp,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            })
            .collect());
    }
    let first_timestamp = header.first_timestamp.get();
    records::read_records(bytes).map_err(|e| format!("records not readable: {e}")).map(|list| {
        list.into_iter()
            .map(|r| RecordView {
                offset: base + i64::from(r.offset_delta),
                timestamp_ms: first_timestamp + r.timestamp_delta,
                key: r.key,
                value: r.value,
                headers: r.headers,
            })
            .collect()
    })
}

fn batch_json(b: &BatchView) -> Value {
    let h = &b.header;
    let attributes = h.attributes.get();
    let mut doc = json!({
        "position": b.position,
        "base_offset": h.base_offset(),
        "last_offset": h.last_offset(),
        "records_count": h.records_count.get(),
        "first_timestamp": h.first_timestamp.get(),
        "max_timestamp": h.max_timestamp.get(),
        "timestamp_type": if attributes & 0x08 != 0 { "LogAppendTime" } else { "CreateTime" },
        "compression": compression_name(attributes),
        "transactional": attributes & 0x10 != 0,
        "control": attributes & 0x20 != 0,
        "producer_id": h.producer_id.get(),
        "producer_epoch": h.producer_epoch.get(),
        "base_sequence": h.base_sequence.get(),
        "partition_leader_epoch": h.partition_leader_epoch.get(),
        "magic": h.magic,
        "crc": h.crc.get(),
        "size": b.size,
        "valid": b.problem.is_none(),
        "problem": b.problem,
    });
    if let Some(records) = &b.records {
        doc["records"] = match records {
            Ok(list) => Value::Array(
                list.iter()
                    .map(|r| {
                        let headers: serde_json::Map<String, Value> =
                            r.headers.iter().map(|(k, v)| (k.clone(), bytes_json(v.as_deref()))).collect();
                        json!({
                            "offset": r.offset,
                            "timestamp": r.timestamp_ms,
                            "key": bytes_json(r.key.as_deref()),
                            "value": bytes_json(r.value.as_deref()),
                            "headers": headers,
                        })
                    })
                    .collect(),
            ),
            Err(e) => json!({ "error": e }),
        };
    }
    doc
}

fn segment_text(
    path: &Path,
    base_offset: Option<i64>,
    file_len: u64,
    batches: &[BatchView],
    trailing: &Option<(u64, u64, bool, String)>,
    with_records: bool,
) -> String {
    let mut text = format!(
        "Dumping {} (segment, base offset {}, {file_len} bytes)\n",
        path.display(),
        base_offset.map_or_else(|| "unknown".into(), |b| b.to_string())
    );
    let mut table = Table::new(&[
        "POSITION",
        "BASE-OFFSET",
        "LAST-OFFSET",
        "COUNT",
        "FIRST-TIMESTAMP",
        "MAX-TIMESTAMP",
        "COMPRESSION",
        "SIZE",
        "CRC",
    ]);
    for b in batches {
        let h = &b.header;
        let crc_ok = b.problem.as_deref().is_none_or(|p| !p.contains("CRC"));
        table.row(vec![
            b.position.to_string(),
            h.base_offset().to_string(),
            h.last_offset().to_string(),
            h.records_count.get().to_string(),
            format_timestamp(h.first_timestamp.get()),
            format_timestamp(h.max_timestamp.get()),
            compression_name(h.attributes.get()).to_string(),
            b.size.to_string(),
            if crc_ok { "valid".into() } else { "INVALID".into() },
        ]);
    }
    if table.is_empty() {
        text.push_str("(no batches)\n");
    } else {
        text.push_str(&table.render());
    }
    if with_records {
        for b in batches {
            text.push_str(&format!("\nRECORDS of the batch at position {}\n", b.position));
            match &b.records {
                Some(Ok(list)) => {
                    let mut records = Table::new(&["OFFSET", "TIMESTAMP", "KEY", "VALUE", "HEADERS"]);
                    for r in list {
                        let headers = r
                            .headers
                            .iter()
                            .map(|(k, v)| format!("{k}={}", show_bytes(v.as_deref())))
                            .collect::<Vec<_>>()
                            .join(",");
                        records.row(vec![
                            r.offset.to_string(),
                            format_timestamp(r.timestamp_ms),
                            show_bytes(r.key.as_deref()),
                            show_bytes(r.value.as_deref()),
                            if headers.is_empty() { "-".into() } else { headers },
                        ]);
                    }
                    text.push_str(&records.render());
                }
                Some(Err(e)) => text.push_str(&format!("(cannot show records: {e})\n")),
                None => {}
            }
        }
    }
    let records: i64 = batches.iter().map(|b| i64::from(b.header.records_count.get())).sum();
    let offsets = match (batches.first(), batches.last()) {
        (Some(first), Some(last)) => {
            format!(", offsets {}-{}", first.header.base_offset(), last.header.last_offset())
        }
        _ => String::new(),
    };
    text.push_str(&format!("\n{} batches, {records} records{offsets}\n", batches.len()));
    for b in batches {
        if let Some(p) = &b.problem {
            text.push_str(&format!(
                "DAMAGED: batch at position {} (offset {}): {p}\n",
                b.position,
                b.header.base_offset()
            ));
        }
    }
    if let Some((position, bytes, zeros, why)) = trailing {
        if *zeros {
            text.push_str(&format!(
                "{bytes} bytes of zero padding after the last batch (position {position})\n"
            ));
        } else {
            text.push_str(&format!("DAMAGED: {bytes} bytes at position {position}: {why}\n"));
        }
    }
    text
}

/// Bytes for a table cell: text with control characters escaped, or `base64:...`.
fn show_bytes(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => s
                .chars()
                .flat_map(|c| if c.is_control() { c.escape_default().collect() } else { vec![c] })
                .collect(),
            Err(_) => format!("base64:{}", super::output::base64(b)),
        },
    }
}

/// The segment next to an index file, if it is there.
fn sibling_segment(path: &Path) -> Option<PathBuf> {
    let segment = path.with_extension("log");
    segment.exists().then_some(segment)
}

fn read_index(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure(format!("cannot read {}: {e}", path.display())))
}

fn dump_offset_index(path: &Path) -> Result<Dumped, Failure> {
    let bytes = read_index(path)?;
    let base = base_offset_of(path);
    let segment = sibling_segment(path);
    let (starts, segment_len) = match &segment {
        Some(p) => {
            let (file, len) = open(p)?;
            (Some(batch_starts(file, len)), len)
        }
        None => (None, u64::MAX),
    };
    let mut problems = 0;
    let mut table = Table::new(&["RELATIVE-OFFSET", "OFFSET", "POSITION", "SEGMENT-CHECK"]);
    let mut entries = Vec::new();
    for e in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
        let relative = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
        let position = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
        let offset = base.map(|b| b + i64::from(relative));
        let check = match (&starts, offset) {
            (Some(starts), Some(offset)) => Some(check_entry(starts, position, offset)),
            _ => None,
        };
        if check.as_ref().is_some_and(|c| c != "ok") {
            problems += 1;
        }
        table.row(vec![
            relative.to_string(),
            offset.map_or_else(|| "-".into(), |o| o.to_string()),
            position.to_string(),
            check.clone().unwrap_or_else(|| "-".into()),
        ]);
        entries.push(
            json!({ "relative_offset": relative, "offset": offset, "position": position, "check": check }),
        );
    }
    let partial = bytes.len() % OFFSET_ENTRY_BYTES;
    let loads = SegmentIndex::decode(&bytes, &[], segment_len).is_some();
    if !loads {
        problems += 1;
    }
    let mut text = format!(
        "Dumping {} (offset index, base offset {}, {} entries)\n",
        path.display(),
        base.map_or_else(|| "unknown".into(), |b| b.to_string()),
        entries.len()
    );
    text.push_str(&if table.is_empty() { "(no entries)\n".to_string() } else { table.render() });
    text.push_str(&index_verdict(loads, partial, OFFSET_ENTRY_BYTES, Some(segment.is_some())));
    let doc = json!({
        "file": path.display().to_string(),
        "kind": "offset_index",
        "base_offset": base,
        "entries": entries,
        "partial_entry_bytes": partial,
        "loads": loads,
        "segment": segment.map(|s| s.display().to_string()),
        "problems": problems,
    });
    Ok(Dumped { doc, text, problems })
}

/// Position -> base offset of every batch of a segment, found by hopping from one batch's
/// length to the next (only the first 12 bytes of each batch are read).
fn batch_starts(file: File, len: u64) -> std::collections::BTreeMap<u64, i64> {
    let mut reader = BufReader::with_capacity(64 << 10, file);
    let mut starts = std::collections::BTreeMap::new();
    let mut position = 0u64;
    let mut prefix = [0u8; LOG_OVERHEAD];
    while position + HEADER_BYTES as u64 <= len {
        if reader.seek(SeekFrom::Start(position)).is_err() || reader.read_exact(&mut prefix).is_err() {
            break;
        }
        let length = i32::from_be_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]);
        if length < (HEADER_BYTES - LOG_OVERHEAD) as i32 {
            break;
        }
        let mut base = [0u8; 8];
        base.copy_from_slice(&prefix[..8]);
        starts.insert(position, i64::from_be_bytes(base));
        position += LOG_OVERHEAD as u64 + length as u64;
    }
    starts
}

/// Whether a batch with base offset `offset` starts at `position` of the segment.
fn check_entry(starts: &std::collections::BTreeMap<u64, i64>, position: u32, offset: i64) -> String {
    match starts.get(&u64::from(position)) {
        Some(&found) if found == offset => "ok".into(),
        Some(found) => format!("the batch there starts at offset {found}"),
        None => "no batch starts at this position".into(),
    }
}

/// `segment_checked`: whether entries could be checked against the segment (`None`: the kind of
/// index has nothing to check there).
fn index_verdict(loads: bool, partial: usize, entry_bytes: usize, segment_checked: Option<bool>) -> String {
    let mut text = String::new();
    if partial > 0 {
        text.push_str(&format!(
            "DAMAGED: {partial} bytes of a partial {entry_bytes}-byte entry at the end\n"
        ));
    }
    text.push_str(if loads {
        "The index passes pinion's load checks.\n"
    } else {
        "DAMAGED: the index fails pinion's load checks; the broker would rebuild it at start-up.\n"
    });
    if segment_checked == Some(false) {
        text.push_str("(no segment next to it: entries not checked against batches)\n");
    }
    text
}

fn dump_time_index(path: &Path) -> Result<Dumped, Failure> {
    let bytes = read_index(path)?;
    let base = base_offset_of(path);
    let mut table = Table::new(&["TIMESTAMP", "TIMESTAMP-MS", "RELATIVE-OFFSET", "OFFSET"]);
    let mut entries = Vec::new();
    for e in bytes.chunks_exact(TIME_ENTRY_BYTES) {
        let timestamp = i64::from_be_bytes([e[0], e[1], e[2], e[3], e[4], e[5], e[6], e[7]]);
        let relative = u32::from_be_bytes([e[8], e[9], e[10], e[11]]);
        let offset = base.map(|b| b + i64::from(relative));
        table.row(vec![
            format_timestamp(timestamp),
            timestamp.to_string(),
            relative.to_string(),
            offset.map_or_else(|| "-".into(), |o| o.to_string()),
        ]);
        entries.push(json!({ "timestamp": timestamp, "relative_offset": relative, "offset": offset }));
    }
    let partial = bytes.len() % TIME_ENTRY_BYTES;
    let loads = SegmentIndex::decode(&[], &bytes, u64::MAX).is_some();
    let problems = usize::from(!loads);
    let mut text = format!(
        "Dumping {} (time index, base offset {}, {} entries)\n",
        path.display(),
        base.map_or_else(|| "unknown".into(), |b| b.to_string()),
        entries.len()
    );
    text.push_str(&if table.is_empty() { "(no entries)\n".to_string() } else { table.render() });
    text.push_str(&index_verdict(loads, partial, TIME_ENTRY_BYTES, None));
    let doc = json!({
        "file": path.display().to_string(),
        "kind": "time_index",
        "base_offset": base,
        "entries": entries,
        "partial_entry_bytes": partial,
        "loads": loads,
        "problems": problems,
    });
    Ok(Dumped { doc, text, problems })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::records::build_batch;

    /// A segment path in a fresh directory under target/ (a disk, like the broker's data).
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let dir = crate::log::tests::test_dir();
        let path = dir.path().join("00000000000000000000.log");
        (dir, path)
    }

    /// (key, value) of one record.
    type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

    fn segment_with(batches: &[(i64, &[KeyValue])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (base, records) in batches {
            let mut b = build_batch(records, 1_700_000_000_000).to_vec();
            batch::set_base_offset(&mut b, *base);
            out.extend(b);
        }
        out
    }

    #[test]
    fn a_clean_segment_lists_every_batch_and_its_padding() {
        let (_dir, path) = scratch();
        let mut data =
            segment_with(&[(0, &[(None, Some(b"a")), (None, Some(b"b"))]), (2, &[(Some(b"k"), Some(b"c"))])]);
        data.extend([0u8; 100]);
        std::fs::write(&path, &data).unwrap();
        let dumped = dump_segment(&path, true).unwrap();
        assert_eq!(dumped.problems, 0, "{}", dumped.text);
        let batches = dumped.doc["batches"].as_array().unwrap();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1]["base_offset"], 2);
        assert_eq!(batches[1]["records"][0]["key"], "k");
        assert_eq!(dumped.doc["trailing"]["zero_padding"], true);
        assert!(dumped.text.contains("100 bytes of zero padding"));
    }

    #[test]
    fn a_flipped_byte_and_a_gap_are_flagged() {
        let (_dir, path) = scratch();
        let mut data = segment_with(&[
            (0, &[(None, Some(b"hello"))]),
            (1, &[(None, Some(b"world"))]),
            (5, &[(None, Some(b"gap"))]),
        ]);
        let second = data.len() / 3 + HEADER_BYTES + 3;
        data[second] ^= 0xff;
        std::fs::write(&path, &data).unwrap();
        let dumped = dump_segment(&path, true).unwrap();
        assert_eq!(dumped.problems, 2, "{}", dumped.text);
        let batches = dumped.doc["batches"].as_array().unwrap();
        assert_eq!(batches[0]["valid"], true);
        assert_eq!(batches[1]["valid"], false);
        assert!(batches[1]["problem"].as_str().unwrap().contains("CRC"));
        assert!(batches[2]["problem"].as_str().unwrap().contains("expected"));
        assert!(dumped.text.contains("INVALID"));
    }

    #[test]
    fn index_entries_are_checked_against_the_segment() {
        let (_dir, path) = scratch();
        let data = segment_with(&[(0, &[(None, Some(b"a"))]), (1, &[(None, Some(b"b"))])]);
        let second_position = (data.len() / 2) as u32;
        std::fs::write(&path, &data).unwrap();
        let mut index = Vec::new();
        for (rel, pos) in [(0u32, 0u32), (1, second_position)] {
            index.extend(rel.to_be_bytes());
            index.extend(pos.to_be_bytes());
        }
        let index_path = path.with_extension("index");
        std::fs::write(&index_path, &index).unwrap();
        let dumped = dump_offset_index(&index_path).unwrap();
        assert_eq!(dumped.problems, 0, "{}", dumped.text);
        index[7] = 1; // the second entry now points inside the first batch
        std::fs::write(&index_path, &index).unwrap();
        let dumped = dump_offset_index(&index_path).unwrap();
        assert!(dumped.problems > 0, "{}", dumped.text);
    }
}
