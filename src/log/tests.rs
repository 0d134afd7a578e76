//! The partition log against real files: append and read, close and reopen, segment roll,
//! crash recovery (torn, corrupt and zero-padded tails, damaged indexes) and the time lookups.
//!
//! Every test runs on its own glommio executor, in a directory under `target/` (direct I/O
//! needs a disk filesystem, not tmpfs).

use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::index::{OFFSET_ENTRY_BYTES, TIME_ENTRY_BYTES};
use super::read_ahead::ReadAhead;
use super::Read;
use super::{segment, PartitionLog, RecoveryReport};
use crate::metadata::configs::LogConfig;
use crate::protocol::batch::tests::make_batch;
use crate::protocol::batch::{self, BatchHeader, Chunk, HEADER_BYTES};

/// Runs `f` to completion on a fresh executor thread and returns its output; a panic inside
/// fails the test.
pub(super) fn run<T, F, Fut>(f: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .spawn(f)
        .expect("start executor")
        .join()
        .expect("test body panicked")
}

/// Runs `f` on every case, each on its own thread, so that their fsyncs overlap.
fn run_each<C: Send>(cases: Vec<C>, f: impl Fn(C) + Sync) {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = cases.into_iter().map(|c| s.spawn(move || f(c))).collect();
        for h in handles {
            h.join().expect("case panicked");
        }
    });
}

/// A fresh directory under `target/`: direct I/O needs a disk filesystem, not tmpfs.
pub(crate) fn test_dir() -> tempfile::TempDir {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&root).unwrap();
    tempfile::Builder::new().prefix("log-test-").tempdir_in(root).unwrap()
}

fn config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig { segment_bytes, index_interval_bytes, ..LogConfig::default() }
}

async fn open(dir: &Path, config: &LogConfig) -> (PartitionLog, RecoveryReport) {
    PartitionLog::open(dir.to_path_buf(), config.clone()).await.expect("open log")
}

/// A valid batch of `records` records of `payload_len` bytes each, whose payload bytes depend
/// on `base`, so a batch read from the wrong place does not compare equal.
fn make(base: i64, records: i32, timestamp: i64, payload_len: usize) -> Bytes {
    let payload = vec![(base % 251) as u8 ^ 0x5a; payload_len];
    Bytes::from(make_batch(base, records, timestamp, &payload))
}

fn header(b: &[u8]) -> &BatchHeader {
    BatchHeader::peek(b).expect("batch header")
}

/// Appends one batch per `(records, timestamp)` in a single call, with offsets continuing the
/// log as the shard assigns them, and records them in `all`. Every third call writes through
/// the O_DSYNC handle, and every other batch comes as a producer sends it (base offset 0, the
/// log's offset beside it), so each test mixes both kinds of write and of batch in one file.
async fn append(log: &PartitionLog, all: &mut Vec<Bytes>, specs: &[(i32, i64)], payload_len: usize) {
    let durable = all.len() % 3 == 1;
    let mut next = log.next_offset();
    let mut group = Vec::new();
    let mut chunks = Vec::new();
    for &(records, timestamp) in specs {
        let b = make(next, records, timestamp, payload_len);
        if (all.len() + group.len()).is_multiple_of(2) {
            let mut sent = b.to_vec();
            batch::set_base_offset(&mut sent, 0);
            chunks.push(Chunk::received(Bytes::from(sent), next));
        } else {
            chunks.push(Chunk::stored(b.clone()));
        }
        next += i64::from(records);
        group.push(b);
    }
    log.append(&chunks, durable).await.expect("append");
    assert_eq!(log.next_offset(), next);
    all.extend(group);
}

fn stored(batches: &[Bytes]) -> Vec<Chunk> {
    batches.iter().cloned().map(Chunk::stored).collect()
}

/// Splits a read result into its batches, each of which must be whole and valid.
fn split(buf: &[u8]) -> Vec<&[u8]> {
    let mut it = batch::Batches::new(buf);
    let out: Vec<&[u8]> = it.by_ref().map(|(_, _, b)| b).collect();
    assert_eq!(it.position(), buf.len(), "a read must return whole batches only");
    for b in &out {
        batch::validate(b).expect("valid batch");
    }
    out
}

/// Index in `all` of the batch holding `offset`.
fn containing(all: &[Bytes], offset: i64) -> usize {
    all.iter().position(|b| header(b).last_offset() >= offset && header(b).base_offset() <= offset).unwrap()
}

/// `got` must be `all[first..first + n]` laid end to end, for some n >= 1.
fn assert_run(all: &[Bytes], got: &[u8], first: usize) {
    let batches = split(got);
    assert!(!batches.is_empty(), "at least one batch");
    for (k, b) in batches.iter().enumerate() {
        assert!(first + k < all.len(), "read returned more batches than were appended");
        assert_eq!(*b, &all[first + k][..], "batch {} differs", first + k);
    }
}

/// Every offset reads back from the batch that holds it, and reading on from the end of each
/// result walks the whole log.
async fn assert_reads(log: &PartitionLog, all: &[Bytes]) {
    let end = log.next_offset();
    for offset in 0..end {
        let got = log
            .read(offset, 1 << 30, end, None)
            .await
            .unwrap()
            .batches()
            .expect("data at every offset below the end");
        assert_run(all, &got, containing(all, offset));
    }
    let mut walked = Vec::new();
    let mut offset = 0;
    while let Some(got) = log.read(offset, 1, end, None).await.unwrap().batches() {
        let batches = split(&got);
        assert_eq!(batches.len(), 1, "max_bytes 1 returns exactly one batch");
        offset = header(batches[0]).last_offset() + 1;
        walked.extend_from_slice(&got);
    }
    assert_eq!(offset, end);
    assert_eq!(walked, all.concat());
    assert!(log.read(end, 1 << 20, end, None).await.unwrap().batches().is_none());
}

/// `(base offset, path)` of the files with this extension, by base offset.
fn files(dir: &Path, extension: &str) -> Vec<(i64, PathBuf)> {
    let mut out: Vec<(i64, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .map(|p| {
            let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
            assert_eq!(stem.len(), 20, "{}", p.display());
            (stem.parse().unwrap(), p)
        })
        .collect();
    out.sort();
    out
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// The batches stored in the segment starting at `base`, given the segments' base offsets.
fn segment_batches<'a>(all: &'a [Bytes], bases: &[i64], base: i64) -> Vec<&'a Bytes> {
    let next_base = bases.iter().copied().find(|&b| b > base).unwrap_or(i64::MAX);
    all.iter().filter(|b| (base..next_base).contains(&header(b).base_offset())).collect()
}

/// Checks a sealed segment's `.index` and `.timeindex` against the batches it holds.
fn assert_index_files(dir: &Path, base: i64, batches: &[&Bytes]) {
    let offsets = std::fs::read(dir.join(segment::file_name(base, "index"))).unwrap();
    let times = std::fs::read(dir.join(segment::file_name(base, "timeindex"))).unwrap();
    assert_eq!(offsets.len() % OFFSET_ENTRY_BYTES, 0);
    assert_eq!(times.len() % TIME_ENTRY_BYTES, 0);
    if batches.is_empty() {
        assert!(offsets.is_empty() && times.is_empty());
        return;
    }
    // Every offset entry points at the start of the batch with that relative base offset.
    let mut starts = Vec::new();
    let mut pos = 0u32;
    for b in batches {
        starts.push(((header(b).base_offset() - base) as u32, pos));
        pos += b.len() as u32;
    }
    let entries: Vec<(u32, u32)> = offsets
        .chunks_exact(OFFSET_ENTRY_BYTES)
        .map(|e| {
            (u32::from_be_bytes(e[..4].try_into().unwrap()), u32::from_be_bytes(e[4..].try_into().unwrap()))
        })
        .collect();
    assert_eq!(entries.first(), Some(&(0, 0)), "the first batch is always indexed");
    for e in &entries {
        assert!(starts.contains(e), "index entry {e:?} is not a batch start");
    }
    // A time entry (t, r): t is the largest timestamp of the batches before offset base + r.
    let max_before = |relative: u32| {
        batches
            .iter()
            .filter(|b| header(b).base_offset() < base + i64::from(relative))
            .map(|b| header(b).max_timestamp.get())
            .max()
    };
    let entries: Vec<(i64, u32)> = times
        .chunks_exact(TIME_ENTRY_BYTES)
        .map(|e| {
            (i64::from_be_bytes(e[..8].try_into().unwrap()), u32::from_be_bytes(e[8..].try_into().unwrap()))
        })
        .collect();
    for w in entries.windows(2) {
        assert!(w[0].0 < w[1].0 && w[0].1 <= w[1].1, "time entries grow: {entries:?}");
    }
    for &(t, r) in &entries {
        assert_eq!(Some(t), max_before(r), "time entry ({t}, {r})");
    }
    let max = batches.iter().map(|b| header(b).max_timestamp.get()).max();
    assert_eq!(entries.last().map(|e| e.0), max, "the last time entry holds the segment's max timestamp");
}

#[test]
fn empty_log_opens_reads_and_reopens() {
    run(|| async {
        let dir = test_dir();
        let cfg = LogConfig::default();
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(report.rebuilt_indexes, 0);
        assert_eq!((log.next_offset(), log.log_start_offset()), (0, 0));
        assert!(log.read(0, 1 << 20, 0, None).await.unwrap().batches().is_none());
        assert!(log.max_timestamp().await.unwrap().is_none());
        assert!(log.offset_for_timestamp(0).await.unwrap().is_none());
        let names = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(dir.path()), ["00000000000000000000.log"], "nothing else is left behind");
        log.close().await.unwrap();
        drop(log);
        assert_eq!(
            names(dir.path()),
            ["00000000000000000000.index", "00000000000000000000.log", "00000000000000000000.timeindex"]
        );
        assert_eq!(file_len(&dir.path().join("00000000000000000000.index")), 0);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(log.next_offset(), 0);
        let mut all = Vec::new();
        append(&log, &mut all, &[(2, 10)], 20).await;
        assert_reads(&log, &all).await;
    });
}

#[test]
fn appended_batches_read_back_from_any_offset() {
    run(|| async {
        let dir = test_dir();
        let (log, _) = open(dir.path(), &config(1 << 30, 256)).await;
        let mut all = Vec::new();
        append_each(&log, &mut all, 0..12, |i| (1 + i % 4, 1000 + i64::from(i)), 40).await;
        let end = log.next_offset();
        assert_eq!(end, all.iter().map(|b| header(b).offset_count()).sum::<i64>());

        // From offset 0 with room for everything: the whole log in one piece.
        assert_eq!(log.read(0, 1 << 20, end, None).await.unwrap().batches().unwrap(), all.concat());

        // From inside a multi-record batch: that whole batch first.
        let multi = all.iter().position(|b| header(b).records_count.get() >= 3).unwrap();
        let inside = header(&all[multi]).base_offset() + 2;
        let got = log.read(inside, 1 << 20, end, None).await.unwrap().batches().unwrap();
        assert_eq!(got, all[multi..].concat());

        // max_bytes smaller than one batch still returns that batch, whole.
        for max_bytes in [0, 1, HEADER_BYTES, all[multi].len() - 1] {
            let got = log.read(inside, max_bytes, end, None).await.unwrap().batches().unwrap();
            assert_eq!(got, all[multi], "max_bytes {max_bytes}");
        }
        // Further batches only while they fit.
        let two = all[0].len() + all[1].len();
        assert_eq!(log.read(0, two - 1, end, None).await.unwrap().batches().unwrap(), all[0]);
        assert_eq!(log.read(0, two, end, None).await.unwrap().batches().unwrap(), all[..2].concat());

        // end_offset bounds what is returned.
        let stop = header(&all[5]).base_offset();
        assert_eq!(log.read(0, 1 << 20, stop, None).await.unwrap().batches().unwrap(), all[..5].concat());

        // At and beyond the end: nothing.
        assert!(log.read(end, 1 << 20, end, None).await.unwrap().batches().is_none());
        assert!(log.read(end + 100, 1 << 20, end + 200, None).await.unwrap().batches().is_none());

        assert_reads(&log, &all).await;
    });
}

#[test]
fn many_small_appends_rewrite_the_partial_block() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 512);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        for i in 0..60 {
            append(&log, &mut all, &[(1 + i % 3, i64::from(i))], 7 + 13 * (i as usize % 5)).await;
            if i % 7 == 0 {
                log.sync().await.unwrap();
            }
        }
        assert_reads(&log, &all).await;
        log.close().await.unwrap();
        assert_eq!(file_len(&files(dir.path(), "log")[0].1), all.iter().map(|b| b.len() as u64).sum::<u64>());
        drop(log);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_reads(&log, &all).await;
    });
}

#[test]
fn close_and_reopen_keep_offsets_indexes_and_data() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 300);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        append_each(&log, &mut all, 0..20, |i| (1 + i % 5, 5000 + 10 * i64::from(i)), 30).await;
        let end = log.next_offset();
        let mut before = Vec::new();
        for offset in 0..end {
            before.push(log.read(offset, 700, end, None).await.unwrap().batches());
        }
        log.close().await.unwrap();
        drop(log);

        let data_bytes: u64 = all.iter().map(|b| b.len() as u64).sum();
        let (base, path) = files(dir.path(), "log").remove(0);
        assert_eq!(base, 0);
        assert_eq!(file_len(&path), data_bytes, "close cuts the zero padding");
        let index = dir.path().join(segment::file_name(0, "index"));
        let timeindex = dir.path().join(segment::file_name(0, "timeindex"));
        assert!(file_len(&index) >= 2 * OFFSET_ENTRY_BYTES as u64, "sparse, but more than one entry");
        assert!(file_len(&timeindex) >= TIME_ENTRY_BYTES as u64);
        assert_index_files(dir.path(), 0, &all.iter().collect::<Vec<_>>());

        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(report.rebuilt_indexes, 0);
        assert_eq!(log.next_offset(), end);
        for offset in 0..end {
            assert_eq!(
                log.read(offset, 700, end, None).await.unwrap().batches(),
                before[offset as usize],
                "offset {offset}"
            );
        }
        assert_reads(&log, &all).await;

        // Appending after a reopen continues the unaligned tail left by the seal.
        append(&log, &mut all, &[(3, 9000), (1, 9001)], 50).await;
        assert_reads(&log, &all).await;
        log.close().await.unwrap();
        drop(log);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_reads(&log, &all).await;
        assert_index_files(dir.path(), 0, &all.iter().collect::<Vec<_>>());
    });
}

#[test]
fn segments_roll_at_segment_bytes_and_recover() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1000, 100);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        // Several append calls, some with many batches that cross a segment boundary.
        for round in 0..5i64 {
            append_each(
                &log,
                &mut all,
                0..6,
                |i| (1 + (i + round as i32) % 3, 100 * round + i64::from(i)),
                25 + 10 * round as usize,
            )
            .await;
        }
        let end = log.next_offset();
        assert_reads(&log, &all).await;
        // A read stops at the end of its segment.
        let second_base = log.segments.borrow()[1].base_offset;
        let got = log.read(0, 1 << 30, end, None).await.unwrap().batches().unwrap();
        let in_first: Vec<Bytes> =
            all.iter().filter(|b| header(b).base_offset() < second_base).cloned().collect();
        assert_eq!(got, in_first.concat());
        log.close().await.unwrap();
        drop(log);

        let logs = files(dir.path(), "log");
        assert!(logs.len() >= 4, "expected several segments, got {}", logs.len());
        let bases: Vec<i64> = logs.iter().map(|(b, _)| *b).collect();
        for (base, path) in &logs {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(name, format!("{base:020}.log"));
            let held = segment_batches(&all, &bases, *base);
            assert!(!held.is_empty());
            assert_eq!(header(held[0]).base_offset(), *base, "a segment is named by its first offset");
            let bytes: u64 = held.iter().map(|b| b.len() as u64).sum();
            assert_eq!(file_len(path), bytes, "sealed segments are cut to their data");
            assert!(bytes <= cfg.segment_bytes);
            assert_index_files(dir.path(), *base, &held);
        }
        // Rolled exactly when the next batch would not fit.
        for w in bases.windows(2) {
            let held = segment_batches(&all, &bases, w[0]);
            let bytes: u64 = held.iter().map(|b| b.len() as u64).sum();
            let next = all.iter().find(|b| header(b).base_offset() == w[1]).unwrap();
            assert!(bytes + next.len() as u64 > cfg.segment_bytes);
        }

        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(report.rebuilt_indexes, 0);
        assert_eq!(log.next_offset(), end);
        assert_reads(&log, &all).await;

        // Appends after reopen go on rolling.
        append_each(&log, &mut all, 0..8, |i| (2, 1000 + i64::from(i)), 60).await;
        assert!(files(dir.path(), "log").len() > logs.len());
        assert_reads(&log, &all).await;
    });
}

/// Appends `count` batches to a fresh log in one segment, closes it, and returns the batches
/// and the path of the segment.
async fn closed_log(dir: &Path, cfg: &LogConfig, count: i32) -> (Vec<Bytes>, PathBuf) {
    let (log, _) = open(dir, cfg).await;
    let mut all = Vec::new();
    append_each(&log, &mut all, 0..count, |i| (1 + i % 4, 700 + i64::from(i)), 90).await;
    log.close().await.unwrap();
    drop(log);
    let path = files(dir, "log").remove(0).1;
    (all, path)
}

fn start_of(all: &[Bytes], i: usize) -> u64 {
    all[..i].iter().map(|b| b.len() as u64).sum()
}

#[test]
fn torn_tail_is_cut_at_the_last_whole_batch() {
    let last_len = make(0, 4, 0, 90).len() as u64;
    run_each(vec![batch::LOG_OVERHEAD as u64, 40, HEADER_BYTES as u64 + 3, last_len - 1], |cut| {
        run(move || async move {
            let dir = test_dir();
            let cfg = config(1 << 30, 512);
            let (mut all, path) = closed_log(dir.path(), &cfg, 8).await;
            let last = all.len() - 1;
            let last_start = start_of(&all, last);
            assert_eq!(all[last].len() as u64, last_len);
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(last_start + cut).unwrap();
            drop(f);

            let (log, report) = open(dir.path(), &cfg).await;
            let (bytes, why) = report.truncated.clone().expect("a torn batch is reported");
            assert_eq!(bytes, cut, "cut {cut}: {why}");
            assert_eq!(file_len(&path), last_start);
            let lost = all.pop().unwrap();
            assert_eq!(log.next_offset(), header(&lost).base_offset());
            assert_reads(&log, &all).await;

            // The log goes on from there.
            append(&log, &mut all, &[(2, 5), (3, 6)], 11).await;
            assert_reads(&log, &all).await;
            log.close().await.unwrap();
            drop(log);
            let (log, report) = open(dir.path(), &cfg).await;
            assert!(report.truncated.is_none());
            assert_reads(&log, &all).await;
        })
    });
}

fn flip_byte(path: &Path, at: u64) {
    let f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 0xff;
    f.write_all_at(&b, at).unwrap();
}

#[test]
fn corrupt_last_batch_is_dropped() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 512);
        let (mut all, path) = closed_log(dir.path(), &cfg, 6).await;
        let last = all.len() - 1;
        let last_start = start_of(&all, last);
        flip_byte(&path, last_start + HEADER_BYTES as u64 + 5);

        let (log, report) = open(dir.path(), &cfg).await;
        let (bytes, why) = report.truncated.clone().expect("corruption is reported");
        assert_eq!(bytes, all[last].len() as u64);
        assert!(why.contains("CRC"), "{why}");
        let lost = all.pop().unwrap();
        assert_eq!(log.next_offset(), header(&lost).base_offset());
        assert_eq!(file_len(&path), last_start);
        assert_reads(&log, &all).await;
        append(&log, &mut all, &[(1, 1)], 3).await;
        assert_reads(&log, &all).await;
    });
}

#[test]
fn corruption_inside_the_active_segment_drops_the_rest() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 512);
        let (mut all, path) = closed_log(dir.path(), &cfg, 7).await;
        let size = file_len(&path);
        let bad = 3;
        let bad_start = start_of(&all, bad);
        // The last byte of batch 3, covered by its CRC.
        flip_byte(&path, start_of(&all, bad + 1) - 1);

        let (log, report) = open(dir.path(), &cfg).await;
        let (bytes, _) = report.truncated.clone().expect("corruption is reported");
        assert_eq!(bytes, size - bad_start);
        all.truncate(bad);
        assert_eq!(log.next_offset(), header(all.last().unwrap()).last_offset() + 1);
        assert_reads(&log, &all).await;
    });
}

#[test]
fn damaged_or_missing_sealed_indexes_are_rebuilt() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1000, 0);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        append_each(&log, &mut all, 0..40, |i| (1 + i % 2, [30, 10, 20][i as usize % 3] + i64::from(i)), 40)
            .await;
        let end = log.next_offset();
        let mut lookups = Vec::new();
        for target in 0..80 {
            lookups.push(log.offset_for_timestamp(target).await.unwrap());
        }
        log.close().await.unwrap();
        drop(log);

        let logs = files(dir.path(), "log");
        assert!(logs.len() >= 6, "{} segments", logs.len());
        let index = |i: usize| dir.path().join(segment::file_name(logs[i].0, "index"));
        let timeindex = |i: usize| dir.path().join(segment::file_name(logs[i].0, "timeindex"));
        // Missing .index.
        std::fs::remove_file(index(0)).unwrap();
        // A partial entry.
        let f = std::fs::OpenOptions::new().write(true).open(index(1)).unwrap();
        f.set_len(OFFSET_ENTRY_BYTES as u64 + 3).unwrap();
        drop(f);
        // Entries out of order.
        let mut swapped = std::fs::read(index(2)).unwrap();
        assert!(swapped.len() >= 2 * OFFSET_ENTRY_BYTES);
        swapped.rotate_left(OFFSET_ENTRY_BYTES);
        std::fs::write(index(2), swapped).unwrap();
        // A position past the end of the segment.
        let mut far = std::fs::read(index(3)).unwrap();
        let n = far.len();
        far[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        std::fs::write(index(3), far).unwrap();
        // Missing .timeindex.
        std::fs::remove_file(timeindex(4)).unwrap();

        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(report.rebuilt_indexes, 5);
        assert_eq!(log.next_offset(), end);
        assert_reads(&log, &all).await;
        for (target, want) in lookups.iter().enumerate() {
            assert_eq!(&log.offset_for_timestamp(target as i64).await.unwrap(), want, "target {target}");
        }
        log.close().await.unwrap();
        drop(log);
        // The last segment is always scanned, so its index files are not needed; and rebuilt
        // indexes were written back, so nothing needs rebuilding now.
        let last = logs.len() - 1;
        std::fs::remove_file(index(last)).unwrap();
        std::fs::remove_file(timeindex(last)).unwrap();
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(report.rebuilt_indexes, 0);
        assert_reads(&log, &all).await;
        for (target, want) in lookups.iter().enumerate() {
            assert_eq!(&log.offset_for_timestamp(target as i64).await.unwrap(), want, "target {target}");
        }
    });
}

#[test]
fn zero_padding_after_the_data_is_not_damage() {
    run_each(vec![1u64, 7, 11, 12, 100, 4095, 4096 + 100], |zeros| {
        run(move || async move {
            let dir = test_dir();
            let cfg = config(1 << 30, 512);
            let (mut all, path) = closed_log(dir.path(), &cfg, 5).await;
            let size = file_len(&path);
            let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.set_len(size + zeros).unwrap();
            drop(f);

            let (log, report) = open(dir.path(), &cfg).await;
            assert!(report.truncated.is_none(), "{zeros} zeros: {:?}", report.truncated);
            assert_eq!(file_len(&path), size, "the padding is cut");
            assert_eq!(log.next_offset(), header(all.last().unwrap()).last_offset() + 1);
            assert_reads(&log, &all).await;
            append(&log, &mut all, &[(2, 1)], 9).await;
            assert_reads(&log, &all).await;
        })
    });
}

#[test]
fn crash_after_aligned_write_recovers_everything_written() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 512);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        append(&log, &mut all, &[(3, 1), (1, 2), (2, 3)], 77).await;
        log.sync().await.unwrap();
        append(&log, &mut all, &[(1, 4)], 5).await;
        log.sync().await.unwrap();
        // No close: the file keeps the zeroed end of its last block, as after a crash.
        drop(log);
        let path = files(dir.path(), "log").remove(0).1;
        let data_bytes: u64 = all.iter().map(|b| b.len() as u64).sum();
        assert!(file_len(&path) > data_bytes, "direct writes pad the last block");
        assert_eq!(file_len(&path) % 512, 0);

        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none(), "{:?}", report.truncated);
        assert_eq!(file_len(&path), data_bytes);
        assert_reads(&log, &all).await;
        append(&log, &mut all, &[(2, 5)], 5).await;
        assert_reads(&log, &all).await;
    });
}

/// Appends a batch for each `i` in `range`, of `spec(i)` = (records, timestamp), as `append`
/// does.
async fn append_each(
    log: &PartitionLog,
    all: &mut Vec<Bytes>,
    range: std::ops::Range<i32>,
    spec: impl Fn(i32) -> (i32, i64),
    payload_len: usize,
) {
    let specs: Vec<(i32, i64)> = range.map(spec).collect();
    append(log, all, &specs, payload_len).await;
}

/// Appends `batches` (each `(records, payload bytes)`) in one durable write each.
async fn append_durable(log: &PartitionLog, all: &mut Vec<Bytes>, batches: &[(i32, usize)]) {
    for &(records, payload_len) in batches {
        let b = make(log.next_offset(), records, 1, payload_len);
        log.append(&[Chunk::stored(b.clone())], true).await.expect("durable append");
        all.push(b);
    }
}

#[test]
fn small_durable_writes_keep_zeros_ahead_that_recovery_and_close_cut_off() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 4096);
        let (log, _) = open(dir.path(), &cfg).await;
        log.set_zero_ahead(256 << 10);
        let mut all = Vec::new();
        append_durable(&log, &mut all, &[(1, 900), (2, 300), (1, 1000)]).await;
        log.active().zeros_landed().await;
        let path = files(dir.path(), "log").remove(0).1;
        let data_bytes: u64 = all.iter().map(|b| b.len() as u64).sum();
        let zeroed = log.active().zeroed_to.get();
        assert!(zeroed >= data_bytes + (32 << 10), "zeros written ahead: {zeroed} after {data_bytes} bytes");
        assert_eq!(file_len(&path), zeroed);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk[data_bytes as usize..].iter().all(|&b| b == 0), "only zeros past the data");

        // The next durable writes land inside the zeros: the file does not grow.
        append_durable(&log, &mut all, &[(3, 700), (1, 50)]).await;
        assert_eq!(file_len(&path), zeroed, "a write over the zeros does not extend the file");
        assert_reads(&log, &all).await;

        // Writes that keep reaching the zeros soon get bigger steps, up to the configured bytes.
        for _ in 0..40 {
            append_durable(&log, &mut all, &[(2, 20_000)]).await;
            log.active().zeros_landed().await;
        }
        let step = log.active().zero_step.get().0;
        assert!(step > 64 << 10 && step <= 256 << 10, "step {step}");
        let ahead = log.active().zeroed_to.get() - log.active().size_bytes.get();
        assert!(ahead <= 256 << 10 && file_len(&path) == log.active().zeroed_to.get(), "{ahead} ahead");

        // A crash leaves the zeros; recovery cuts them off without calling it damage.
        drop(log);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none(), "{:?}", report.truncated);
        let data_bytes: u64 = all.iter().map(|b| b.len() as u64).sum();
        assert_eq!(file_len(&path), data_bytes);
        assert_reads(&log, &all).await;

        // Zeros again, then a clean close leaves exactly the data.
        append_durable(&log, &mut all, &[(1, 10), (1, 20)]).await;
        assert!(file_len(&path) > data_bytes + 4096, "zeros written ahead again");
        log.close().await.unwrap();
        assert_eq!(file_len(&path), all.iter().map(|b| b.len() as u64).sum::<u64>());
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_reads(&log, &all).await;
    });
}

#[test]
fn large_durable_writes_and_plain_writes_get_no_zeros_ahead() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(1 << 30, 4096);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        append_durable(&log, &mut all, &[(4, 200 << 10), (4, 100 << 10), (1, 300 << 10)]).await;
        let plain = make(log.next_offset(), 1, 1, 700);
        log.append(&[Chunk::stored(plain.clone())], false).await.unwrap();
        all.push(plain);
        log.active().zeros_landed().await;
        let path = files(dir.path(), "log").remove(0).1;
        let data_bytes: u64 = all.iter().map(|b| b.len() as u64).sum();
        let len = file_len(&path);
        assert!(len >= data_bytes && len < data_bytes + 4096, "only the last block's padding: {len}");
        assert_eq!(log.active().zeroed_to.get(), 0);
        assert_reads(&log, &all).await;
    });
}

#[test]
fn segments_rolled_while_zeros_are_written_are_cut_to_their_data() {
    run(|| async {
        let dir = test_dir();
        let cfg = config(20 << 10, 4096);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        // Each roll comes right after a durable write started zeros past it.
        // Every other time, the zeros land first, to check that none go past segment.bytes.
        for i in 0..12 {
            append_durable(&log, &mut all, &[(2, 3000)]).await;
            if i % 2 == 1 {
                log.active().zeros_landed().await;
                let active = files(dir.path(), "log").pop().unwrap().1;
                assert!(file_len(&active) <= 20 << 10, "no zeros past segment.bytes");
            }
        }
        let bases: Vec<i64> = files(dir.path(), "log").iter().map(|(b, _)| *b).collect();
        assert!(bases.len() >= 3, "rolled: {bases:?}");
        for (base, path) in files(dir.path(), "log").iter().take(bases.len() - 1) {
            let bytes: u64 = segment_batches(&all, &bases, *base).iter().map(|b| b.len() as u64).sum();
            assert_eq!(file_len(path), bytes, "sealed segment {base} holds exactly its batches");
        }
        assert_reads(&log, &all).await;
        drop(log);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_reads(&log, &all).await;
    });
}

/// What `offset_for_timestamp` must answer: the first batch whose max timestamp reaches
/// `target`, as (base offset, max timestamp).
fn first_reaching(all: &[Bytes], target: i64) -> Option<(i64, i64)> {
    all.iter().map(|b| (header(b).base_offset(), header(b).max_timestamp.get())).find(|&(_, ts)| ts >= target)
}

async fn assert_time_lookups(log: &PartitionLog, all: &[Bytes], when: &str) {
    let stamps: Vec<i64> = all.iter().map(|b| header(b).max_timestamp.get()).collect();
    // Every timestamp, its neighbours, and values outside the range.
    let mut targets: Vec<i64> = stamps.iter().flat_map(|&t| [t - 1, t, t + 1]).collect();
    targets.extend([i64::MIN, -1, 0, i64::MAX]);
    for target in targets {
        let got = log.offset_for_timestamp(target).await.unwrap();
        assert_eq!(got, first_reaching(all, target), "{when}: target {target}");
    }
    let max = log.max_timestamp().await.unwrap().map(|(_, ts)| ts);
    assert_eq!(max, stamps.iter().max().copied(), "{when}");
}

const INCREASING: [i64; 12] = [1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070, 1080, 1090, 1100, 1110];
const NON_MONOTONIC: [i64; 18] =
    [500, 300, 800, 200, 800, 650, 100, 900, 400, 850, 950, 120, 700, 960, 10, 955, 300, 940];

#[test]
fn offset_for_timestamp_finds_the_first_batch_reaching_it() {
    let mut cases = Vec::new();
    for timestamps in [&INCREASING[..], &NON_MONOTONIC[..]] {
        // One segment or several; every batch indexed or only some.
        for cfg in [config(1 << 30, 0), config(1 << 30, 4096), config(700, 0), config(700, 150)] {
            cases.push((timestamps, cfg));
        }
    }
    run_each(cases, |(timestamps, cfg)| {
        run(move || async move {
            let dir = test_dir();
            let (log, _) = open(dir.path(), &cfg).await;
            let mut all = Vec::new();
            for (i, &ts) in timestamps.iter().enumerate() {
                append(&log, &mut all, &[(1 + i as i32 % 3, ts)], 30).await;
            }
            assert_time_lookups(&log, &all, "written").await;
            log.close().await.unwrap();
            drop(log);
            let (log, report) = open(dir.path(), &cfg).await;
            assert!(report.truncated.is_none());
            assert_eq!(report.rebuilt_indexes, 0);
            assert_time_lookups(&log, &all, "reopened").await;
            // Sealed segments' indexes rebuilt by a scan answer the same.
            log.close().await.unwrap();
            drop(log);
            for (base, _) in files(dir.path(), "log") {
                let _ = std::fs::remove_file(dir.path().join(segment::file_name(base, "timeindex")));
            }
            let (log, _) = open(dir.path(), &cfg).await;
            assert_time_lookups(&log, &all, "rebuilt").await;
        })
    });
}

/// `max_timestamp` is documented to return the offset of the batch holding the largest
/// timestamp, but returns the base offset of the segment holding it.
#[test]
fn max_timestamp_is_the_offset_of_the_batch_holding_it() {
    run(|| async {
        let dir = test_dir();
        let (log, _) = open(dir.path(), &LogConfig::default()).await;
        let mut all = Vec::new();
        append(&log, &mut all, &[(2, 100), (3, 300), (1, 200)], 10).await;
        assert_eq!(log.max_timestamp().await.unwrap(), Some((header(&all[1]).base_offset(), 300)));
    });
}

#[test]
fn an_empty_segment_opened_first_leaves_disk_reads_working() {
    let dir = test_dir();
    let (full, empty) = (dir.path().join("t-0"), dir.path().join("t-1"));
    let all = {
        let full = full.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        run(move || async move {
            let (log, _) = open(&full, &LogConfig::default()).await;
            let mut all = Vec::new();
            append(&log, &mut all, &[(2, 1), (3, 2)], 50).await;
            log.close().await.unwrap();
            tx.send(all).unwrap();
        });
        rx.recv().unwrap()
    };
    // A new thread opens a brand-new, empty partition before one with data (as a shard does
    // when a topic is created, or at start-up when a partition never received a record).
    run(move || async move {
        let (new, _) = open(&empty, &LogConfig::default()).await;
        let (old, report) = open(&full, &LogConfig::default()).await;
        assert!(report.truncated.is_none());
        assert_reads(&old, &all).await;
        let mut fresh = Vec::new();
        append(&new, &mut fresh, &[(1, 3)], 5).await;
        assert_reads(&new, &fresh).await;
    });
}

#[test]
fn one_append_larger_than_the_largest_write() {
    run(|| async {
        let dir = test_dir();
        let cfg = LogConfig::default();
        let (log, _) = open(dir.path(), &cfg).await;
        // (records, payload bytes per record): batches of 512 KiB, one of 5 MiB (more than a
        // recovery scan reads at once) and one of 9 MiB (more than one write): 21 MiB in one call.
        let mut shapes = vec![(8, 64 << 10); 14];
        shapes.insert(6, (80, 64 << 10));
        shapes.insert(11, (1, 9 << 20));
        let mut all = Vec::new();
        let mut next = 0;
        for (i, &(records, payload)) in shapes.iter().enumerate() {
            all.push(make(next, records, i as i64, payload));
            next += i64::from(records);
        }
        let total: usize = all.iter().map(|b| b.len()).sum();
        assert!(total > 2 * super::WRITE_BYTES_MAX);
        log.append(&stored(&all), true).await.unwrap();
        assert_eq!(log.next_offset(), next);

        let check = |log: PartitionLog, all: Vec<Bytes>| async move {
            assert_eq!(log.read(0, 32 << 20, next, None).await.unwrap().batches().unwrap(), all.concat());
            for (i, b) in all.iter().enumerate() {
                let last = header(b).last_offset();
                assert_eq!(log.read(last, 1, next, None).await.unwrap().batches().unwrap(), *b, "batch {i}");
            }
            assert!(log.read(next, 1 << 20, next, None).await.unwrap().batches().is_none());
            log
        };
        let log = check(log, all.clone()).await;
        log.close().await.unwrap();
        drop(log);
        assert_eq!(files(dir.path(), "log").len(), 1);
        assert_eq!(file_len(&files(dir.path(), "log")[0].1), total as u64);
        let (log, report) = open(dir.path(), &cfg).await;
        assert!(report.truncated.is_none());
        assert_eq!(log.next_offset(), next);
        check(log, all).await;
    });
}

#[test]
fn retention_deletes_old_sealed_segments_and_moves_the_log_start() {
    run(|| async {
        let dir = test_dir();
        let mut cfg = config(1000, 100);
        let (log, _) = open(dir.path(), &cfg).await;
        let mut all = Vec::new();
        // Timestamps 100..: old enough for any retention below.
        append_each(&log, &mut all, 0..30, |i| (2, 100 + i64::from(i)), 40).await;
        let segments = files(dir.path(), "log").len();
        assert!(segments >= 3, "several segments to work with");

        // Nothing is old or big enough yet: nothing goes.
        assert_eq!(log.apply_retention(1_000).await.unwrap(), 0);

        // retention.bytes: keep at least this many bytes, deleting whole segments only.
        cfg.retention_bytes = 1500;
        log.set_config(cfg.clone());
        let deleted = log.apply_retention(1_000).await.unwrap();
        assert!(deleted >= 1);
        let kept: u64 = files(dir.path(), "log").iter().map(|(_, p)| file_len(p)).sum();
        assert!(kept >= 1500, "{kept} bytes kept");
        let start = log.log_start_offset();
        assert_eq!(start, files(dir.path(), "log")[0].0, "log start is the first segment kept");
        assert!(log.read(start, 1 << 20, log.next_offset(), None).await.unwrap().batches().is_some());

        // retention.ms: every sealed segment is older than this; the active one stays.
        cfg.retention_bytes = -1;
        cfg.retention_ms = 10;
        log.set_config(cfg);
        log.apply_retention(1_000_000).await.unwrap();
        let left = files(dir.path(), "log");
        assert_eq!(left.len(), 1, "only the active segment is left");
        assert_eq!(log.log_start_offset(), left[0].0);
        assert!(!dir.path().join(segment::file_name(0, "index")).exists());

        // A restart agrees on where the log starts.
        log.close().await.unwrap();
        drop(log);
        let (again, _) = open(dir.path(), &config(1000, 100)).await;
        assert_eq!(again.log_start_offset(), left[0].0);
    });
}

/// A batch from an idempotent producer: producer id, epoch and first sequence set, CRC redone.
fn idempotent(base: i64, records: i32, producer_id: i64, epoch: i16, sequence: i32) -> Bytes {
    let mut b = make_batch(base, records, 1000, b"p");
    b[43..51].copy_from_slice(&producer_id.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&sequence.to_be_bytes());
    batch::seal_crc(&mut b);
    Bytes::from(b)
}

#[test]
fn recovery_reports_the_last_batches_of_each_idempotent_producer() {
    run(|| async {
        let dir = test_dir();
        let (log, _) = open(dir.path(), &LogConfig::default()).await;
        let mut batches = Vec::new();
        for i in 0..8 {
            batches.push(idempotent(i64::from(i) * 2, 2, 7, 0, i * 2));
        }
        batches.push(idempotent(16, 1, 9, 3, 0));
        batches.push(make(17, 1, 1000, 10)); // not idempotent: not reported
        log.append(&stored(&batches), false).await.unwrap();
        drop(log); // a crash: no close
        let (_, report) = open(dir.path(), &LogConfig::default()).await;
        let p7: Vec<_> = report.producer_batches.iter().filter(|b| b.producer_id == 7).collect();
        assert_eq!(p7.len(), 5, "the last five batches of a producer are enough to spot a retry");
        assert_eq!((p7[0].base_offset, p7[0].base_sequence), (6, 6));
        assert_eq!((p7[4].base_offset, p7[4].base_sequence, p7[4].records), (14, 14, 2));
        let p9: Vec<_> = report.producer_batches.iter().filter(|b| b.producer_id == 9).collect();
        assert_eq!(p9.len(), 1);
        assert_eq!((p9[0].epoch, p9[0].base_offset), (3, 16));
        assert_eq!(report.producer_batches.len(), 6);
    });
}

// ---------------------------------------------------------------- reading ahead

/// Reads from `offset` to `end` in steps of `max_bytes`, as a consumer with one fetch in flight
/// does. Each step must be whole batches, in order from the one holding its offset, within
/// `max_bytes` unless it is one batch. Returns every step's result.
async fn walk(
    log: &PartitionLog,
    all: &[Bytes],
    mut offset: i64,
    end: i64,
    max_bytes: usize,
    ahead: Option<&ReadAhead>,
) -> Vec<Bytes> {
    let mut steps = Vec::new();
    loop {
        let fetch = ahead.map(|a| a.fetch(usize::MAX, 0));
        let Some(got) = log.read(offset, max_bytes, end, fetch.as_ref()).await.unwrap().batches() else {
            break;
        };
        assert_run(all, &got, containing(all, offset));
        let batches = split(&got);
        assert!(
            got.len() <= max_bytes || batches.len() == 1,
            "{} bytes for max_bytes {max_bytes}",
            got.len()
        );
        offset = header(batches.last().unwrap()).last_offset() + 1;
        steps.push(got);
    }
    assert_eq!(offset, end, "the walk reaches the end");
    steps
}

#[test]
fn reads_made_ahead_return_the_log_as_plain_reads_do() {
    run(|| async {
        let dir = test_dir();
        // Small segments, so the walk crosses from one to the next.
        let (log, _) = open(dir.path(), &config(64 << 10, 4096)).await;
        let mut all = Vec::new();
        for round in 0..8 {
            append_each(&log, &mut all, 0..6, |i| (1 + (i + round) % 3, 1000 + i64::from(i)), 2000).await;
        }
        assert!(log.sealed_segments() >= 2, "the log rolled");
        let end = log.next_offset();
        let ahead = ReadAhead::new(1 << 20);
        let mut taken = 0;
        for max_bytes in [1, 9000, 30 << 10] {
            let plain = walk(&log, &all, 0, end, max_bytes, None).await;
            let with = walk(&log, &all, 0, end, max_bytes, Some(&ahead)).await;
            assert_eq!(with.concat(), plain.concat(), "max_bytes {max_bytes}");
            assert_eq!(with.concat(), all.concat());
            // Every step after the first in a segment found its read made ahead; the last step
            // of a segment started none, since what follows is in the next segment.
            let segments = log.sealed_segments() as u64 + 1;
            assert_eq!(ahead.taken() - taken, with.len() as u64 - segments, "max_bytes {max_bytes}");
            taken = ahead.taken();
            assert_eq!(ahead.pending(), 0);
        }
        // From inside a batch: the read made ahead starts where the first answer ended.
        let multi = all.iter().position(|b| header(b).records_count.get() >= 2).unwrap();
        let inside = header(&all[multi]).base_offset() + 1;
        let steps = walk(&log, &all, inside, end, 9000, Some(&ahead)).await;
        assert_eq!(steps.concat(), all[multi..].concat());
        assert!(ahead.taken() > taken);
    });
}

#[test]
fn reads_made_ahead_keep_to_the_fetch_and_see_later_appends() {
    run(|| async {
        let dir = test_dir();
        let (log, _) = open(dir.path(), &config(1 << 30, 4096)).await;
        let mut all = Vec::new();
        append(&log, &mut all, &[(2, 10), (3, 11), (1, 12), (2, 13)], 1500).await;
        let ahead = ReadAhead::new(1 << 20);
        let end = log.next_offset();
        let first = log
            .read(0, all[0].len(), end, Some(&ahead.fetch(usize::MAX, 0)))
            .await
            .unwrap()
            .batches()
            .unwrap();
        assert_eq!(first, all[0]);
        assert_eq!(ahead.pending(), 1);
        // The bound of a fetch holds for a read made ahead too.
        let next = header(&all[0]).last_offset() + 1;
        let stop = header(&all[2]).base_offset();
        assert_eq!(
            log.read(next, 1 << 20, stop, Some(&ahead.fetch(usize::MAX, 0)))
                .await
                .unwrap()
                .batches()
                .unwrap(),
            all[1]
        );
        assert_eq!(ahead.taken(), 1);

        // Appends made while a read ahead is out: whether it saw them or not, the walk on from
        // it returns every batch once, in order.
        let first = log
            .read(0, all[0].len(), end, Some(&ahead.fetch(usize::MAX, 0)))
            .await
            .unwrap()
            .batches()
            .unwrap();
        assert_eq!(first, all[0]);
        append(&log, &mut all, &[(4, 14), (1, 15), (2, 16)], 1500).await;
        let steps = walk(&log, &all, next, log.next_offset(), 5000, Some(&ahead)).await;
        assert_eq!(steps.concat(), all[1..].concat());
    });
}

/// What a consumer's fetch on connection 0 with `ahead` reads at `offset`, or a plain read
/// without it; there must be data.
async fn read_whole(
    log: &PartitionLog,
    offset: i64,
    max_bytes: usize,
    end: i64,
    ahead: Option<&ReadAhead>,
) -> Bytes {
    let fetch = ahead.map(|a| a.fetch(usize::MAX, 0));
    log.read(offset, max_bytes, end, fetch.as_ref()).await.unwrap().batches().unwrap()
}

#[test]
fn reads_made_ahead_stay_within_their_limit() {
    run(|| async {
        let dir = test_dir();
        let (log, _) = open(dir.path(), &config(1 << 30, 1024)).await;
        let mut all = Vec::new();
        append_each(&log, &mut all, 0..40, |i| (1, i64::from(i)), 1000).await;
        let end = log.next_offset();
        let max_bytes = 4096;

        let none = ReadAhead::new(max_bytes - 1);
        read_whole(&log, 0, max_bytes, end, Some(&none)).await;
        assert_eq!(none.pending(), 0, "a read larger than the limit is not made ahead");

        // Room for two: a third consumer's read drops the oldest. One record per batch, so a
        // read's next offset is its first plus the batches it returned.
        let two = ReadAhead::new(2 * max_bytes);
        let mut next = Vec::new();
        for offset in [0, 10, 20] {
            let got = read_whole(&log, offset, max_bytes, end, Some(&two)).await;
            next.push(offset + split(&got).len() as i64);
        }
        assert_eq!(two.pending(), 2);
        let (a, b) = (next[0], next[2]);
        assert_eq!(
            read_whole(&log, a, max_bytes, end, Some(&two)).await,
            read_whole(&log, a, max_bytes, end, None).await
        );
        assert_eq!(two.taken(), 0, "the oldest read made ahead was dropped");
        assert_eq!(
            read_whole(&log, b, max_bytes, end, Some(&two)).await,
            read_whole(&log, b, max_bytes, end, None).await
        );
        assert_eq!(two.taken(), 1, "the newest was kept");
    });
}

#[test]
fn a_fetch_resumes_where_the_reads_made_ahead_begin() {
    let ahead = ReadAhead::new(1 << 20);
    assert_eq!(ahead.first(&[false, false, true, true], 1), 2);
    assert_eq!(ahead.first(&[true, false, false, true], 1), 3, "a run of reads may wrap around");
    assert_eq!(ahead.first(&[true, true, true], 1), 0);
    assert_eq!(ahead.first(&[], 1), 0);
    // With none made ahead, a connection's start moves on with each of its fetches, so that no
    // partition is always last; one that has not read from disk starts at the first.
    ahead.reading(1);
    assert_eq!(ahead.first(&[false; 3], 7), 0);
    let starts: Vec<usize> = (0..4).map(|_| ahead.first(&[false; 3], 1)).collect();
    assert_eq!(starts, [1, 2, 0, 1]);
}

/// A consumer of several logs with one fetch in flight, fetching as a shard serves a fetch
/// (`Shard::fetch`): in the order the reads made ahead give, each read decided in turn, the
/// deferred ones then read ahead.
struct Consumer {
    logs: Vec<PartitionLog>,
    all: Vec<Vec<Bytes>>,
    offsets: Vec<i64>,
    got: Vec<Vec<Bytes>>,
    fetches: usize,
    /// The fetch in which each log first returned data.
    first_served: Vec<Option<usize>>,
}

impl Consumer {
    /// `count` logs of 30 batches (of 900-byte records, one or two a batch) each, in `dir`.
    async fn new(dir: &Path, count: usize) -> Consumer {
        let mut logs = Vec::new();
        let mut all = Vec::new();
        for p in 0..count {
            let (log, _) = open(&dir.join(format!("p{p}")), &config(1 << 30, 1024)).await;
            let mut batches = Vec::new();
            append_each(&log, &mut batches, 0..30, |i| (1 + i % 2, i64::from(i)), 900).await;
            logs.push(log);
            all.push(batches);
        }
        Consumer {
            logs,
            all,
            offsets: vec![0; count],
            got: vec![Vec::new(); count],
            fetches: 0,
            first_served: vec![None; count],
        }
    }

    fn done(&self) -> bool {
        self.offsets.iter().zip(&self.logs).all(|(&o, log)| o == log.next_offset())
    }

    /// One fetch of every log on `connection`; returns how many logs it read, and how many
    /// bytes. Checks that each log with data left was read or left for later (not found empty),
    /// and that the fetch moved on.
    async fn fetch(&mut self, ahead: &ReadAhead, connection: u64, max_bytes: usize) -> (usize, usize) {
        self.fetches += 1;
        assert!(self.fetches < 100, "no end in sight: {:?}", self.offsets);
        let (logs, offsets) = (&self.logs, &self.offsets);
        let made: Vec<bool> = logs.iter().zip(offsets).map(|(log, &o)| log.is_read_ahead(o, ahead)).collect();
        let first = ahead.first(&made, connection);
        let order: Vec<usize> = (0..logs.len()).map(|k| (first + k) % logs.len()).collect();
        let fetch = ahead.fetch(usize::MAX, connection);
        // A log at its end is answered without a read, as `Partition::fetch` does.
        let reads: Vec<_> = order
            .iter()
            .map(|&i| {
                (offsets[i] < logs[i].next_offset())
                    .then(|| logs[i].read(offsets[i], max_bytes, logs[i].next_offset(), Some(&fetch)))
            })
            .collect();
        fetch.read_ahead_deferred();
        let reads = reads.into_iter().map(|r| async move {
            match r {
                Some(r) => Some(r.await.unwrap()),
                None => None,
            }
        });
        let answers = futures::future::join_all(reads).await;
        let (mut served, mut bytes) = (0, 0);
        for (p, answer) in order.into_iter().zip(answers) {
            match answer {
                Some(Read::Batches(b)) => {
                    served += 1;
                    bytes += b.len();
                    self.first_served[p].get_or_insert(self.fetches);
                    self.offsets[p] = header(split(&b).last().unwrap()).last_offset() + 1;
                    self.got[p].push(b);
                }
                Some(Read::Deferred) | None => {}
                Some(Read::Nothing) => panic!("log {p} has data, and nothing was read"),
            }
        }
        assert!(served >= 1, "every fetch moves on");
        (served, bytes)
    }

    /// Every log was returned whole and in order.
    fn check(&self) {
        for p in 0..self.logs.len() {
            assert_eq!(self.got[p].concat(), self.all[p].concat(), "log {p} whole and in order");
        }
    }
}

#[test]
fn a_fetch_reads_its_share_and_the_partitions_take_turns() {
    run(|| async {
        let dir = test_dir();
        let max_bytes = 8192;
        // Room for two logs' reads in a fetch, and two read ahead.
        let ahead = ReadAhead::new(2 * max_bytes);
        let mut consumer = Consumer::new(dir.path(), 6).await;
        while !consumer.done() {
            let (served, bytes) = consumer.fetch(&ahead, 1, max_bytes).await;
            // Two logs' reads, or more near their ends, where less is left to read.
            assert!(bytes <= 2 * max_bytes, "fetch {}: {bytes} bytes from {served} logs", consumer.fetches);
        }
        consumer.check();
        // Two logs a fetch: all six had their first turn in the first three fetches.
        assert!(
            consumer.first_served.iter().all(|f| f.is_some_and(|f| f <= 3)),
            "{:?}",
            consumer.first_served
        );
        // After the first, every fetch took the reads made ahead for it.
        let fetches = consumer.fetches;
        assert!(ahead.taken() as usize >= 2 * (fetches - 2), "{} of {fetches}", ahead.taken());
    });
}

#[test]
fn consumers_reading_at_once_share_what_a_fetch_may_read() {
    run(|| async {
        let dir = test_dir();
        let max_bytes = 8192;
        // Room for four logs' reads in a fetch, and four read ahead.
        let ahead = ReadAhead::new(4 * max_bytes);
        let mut one = Consumer::new(&dir.path().join("one"), 8).await;
        let mut two = Consumer::new(&dir.path().join("two"), 8).await;
        assert_eq!(one.fetch(&ahead, 1, max_bytes).await.0, 4, "alone, a consumer reads four");
        assert_eq!(two.fetch(&ahead, 2, max_bytes).await.0, 2, "with another, two");
        // The first consumer's next fetch takes the four read ahead while it was alone.
        one.fetch(&ahead, 1, max_bytes).await;
        // From then on each fetch reads two logs' worth: together the consumers read four at a
        // time and four ahead, and neither's reads made ahead push out the other's.
        while !one.done() || !two.done() {
            for (consumer, connection) in [(&mut one, 1), (&mut two, 2)] {
                if !consumer.done() {
                    let (served, bytes) = consumer.fetch(&ahead, connection, max_bytes).await;
                    assert!(
                        bytes <= 2 * max_bytes,
                        "connection {connection}, fetch {}: {bytes} bytes from {served} logs",
                        consumer.fetches
                    );
                }
            }
        }
        one.check();
        two.check();
        let fetches = one.fetches + two.fetches;
        assert!(ahead.taken() as usize >= 2 * (fetches - 4), "{} of {fetches}", ahead.taken());
    });
}
