//! Probes of the machine's own limits, to set the broker's figures against: sequential direct-I/O
//! write and read bandwidth of a directory's disk, the latency of the smallest durable write
//! (rewrite one 4 KiB block + fdatasync, the floor under an acks=all produce), durable writes of
//! a given shape at a fixed rate, TCP bandwidth and round trips over loopback between threads,
//! and the stalls of the CPUs themselves.

use std::alloc::{self, Layout};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::args::{parse_cpu_list, DiskArgs, DurableArgs, LoopbackArgs, RoundTripArgs, StallsArgs};
use crate::produce::{pin, set_timer_slack_ns};
use crate::stats::{latency_us, new_histogram};

/// Direct I/O needs buffers, offsets and sizes aligned to the logical block size; 4 KiB covers
/// every common device.
const ALIGN_BYTES: usize = 4096;
const FSYNC_SAMPLES: usize = 2000;

/// A heap buffer aligned for direct I/O.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let layout = Layout::from_size_align(len, ALIGN_BYTES).expect("valid layout");
        // SAFETY: the layout has a non-zero size (checked by callers).
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating {len} bytes");
        AlignedBuf { ptr, layout }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: ptr holds layout.size() initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in new() with this layout.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Opens `path` for direct I/O, `create` making it fresh; with `dsync`, every write is durable
/// when it returns (O_DSYNC).
fn open_direct(path: &Path, create: bool, dsync: bool) -> Result<File> {
    let flags = if dsync { libc::O_DIRECT | libc::O_DSYNC } else { libc::O_DIRECT };
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .custom_flags(flags)
        .open(path)
        .with_context(|| format!("cannot open {} for direct I/O", path.display()))
}

fn check_io_bytes(io_bytes: usize) -> Result<()> {
    if io_bytes == 0 || !io_bytes.is_multiple_of(ALIGN_BYTES) {
        bail!("--io-bytes must be a positive multiple of {ALIGN_BYTES}");
    }
    Ok(())
}

pub fn disk(args: &DiskArgs) -> Result<Value> {
    check_io_bytes(args.io_bytes)?;
    if args.streams.is_empty() {
        bail!("--streams needs at least one count");
    }
    let mut passes = Vec::with_capacity(args.streams.len());
    for &streams in &args.streams {
        let paths: Vec<PathBuf> = (0..streams)
            .map(|i| args.dir.join(format!(".pinion-bench-disk-{}-{i}", std::process::id())))
            .collect();
        let pass = disk_pass(&paths, args);
        for path in &paths {
            let _ = std::fs::remove_file(path);
        }
        passes.push(pass?);
    }
    let best = |key: &str| {
        passes
            .iter()
            .max_by(|a, b| a[key].as_f64().unwrap_or(0.0).total_cmp(&b[key].as_f64().unwrap_or(0.0)))
            .map(|p| (p[key].clone(), p["streams"].clone()))
            .expect("at least one pass")
    };
    let ((write, write_streams), (read, read_streams)) = (best("write_gb_per_s"), best("read_gb_per_s"));
    let path = args.dir.join(format!(".pinion-bench-fsync-{}", std::process::id()));
    let fsync = fsync_probe(&path);
    let _ = std::fs::remove_file(&path);
    Ok(json!({
        "dir": args.dir.display().to_string(),
        "io_bytes": args.io_bytes,
        "total_bytes": passes[0]["total_bytes"],
        "write_gb_per_s": write,
        "write_streams": write_streams,
        "read_gb_per_s": read,
        "read_streams": read_streams,
        "passes": passes,
        "fsync_4k_ms": fsync?,
    }))
}

/// One pass: every file written by a thread of its own at once, each a fresh file that grows with
/// every write as the broker's segments do, then synced; then every file read back at once.
/// Bandwidth is all the bytes over the time from the first thread's start to the last one's end.
fn disk_pass(paths: &[PathBuf], args: &DiskArgs) -> Result<Value> {
    let per_file = args.total_bytes.div_ceil(args.io_bytes as u64 * paths.len() as u64).max(1);
    let total = per_file * args.io_bytes as u64 * paths.len() as u64;
    let each = |work: &(dyn Fn(&Path, &mut [u8]) -> Result<()> + Sync)| -> Result<f64> {
        let started = Instant::now();
        std::thread::scope(|scope| {
            let threads: Vec<_> = paths
                .iter()
                .map(|path| {
                    scope.spawn(move || {
                        let mut buf = AlignedBuf::new(args.io_bytes);
                        for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
                            *b = b'A' + (i.wrapping_mul(7919) % 26) as u8;
                        }
                        work(path, buf.as_mut_slice())
                    })
                })
                .collect();
            threads.into_iter().try_for_each(|t| t.join().expect("probe thread panicked"))
        })?;
        Ok(started.elapsed().as_secs_f64())
    };
    let offset = |i: u64| i * args.io_bytes as u64;
    let write_secs = each(&|path, buf| {
        let file = open_direct(path, true, false)?;
        for i in 0..per_file {
            file.write_all_at(buf, offset(i)).context("direct write")?;
        }
        file.sync_data().context("fdatasync")
    })?;
    let read_secs = each(&|path, buf| {
        let file = open_direct(path, false, false)?;
        for i in 0..per_file {
            file.read_exact_at(buf, offset(i)).context("direct read")?;
        }
        Ok(())
    })?;
    Ok(json!({
        "streams": paths.len(),
        "total_bytes": total,
        "write_gb_per_s": total as f64 / write_secs / 1e9,
        "read_gb_per_s": total as f64 / read_secs / 1e9,
    }))
}

/// The acks=all floor: rewrite the partly filled last block of a file and make it durable.
fn fsync_probe(path: &Path) -> Result<Value> {
    let file = open_direct(path, true, false)?;
    let mut block = AlignedBuf::new(ALIGN_BYTES);
    let mut hist = new_histogram();
    let clock = Instant::now();
    for i in 0..FSYNC_SAMPLES {
        block.as_mut_slice()[i % ALIGN_BYTES] = b'x';
        let t0 = clock.elapsed().as_nanos() as u64;
        file.write_all_at(block.as_mut_slice(), 0).context("direct write")?;
        file.sync_data().context("fdatasync")?;
        hist.record(latency_us(t0, clock.elapsed().as_nanos() as u64)).expect("in range");
    }
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({ "p50": ms(0.5), "p99": ms(0.99), "p99_9": ms(0.999), "max": hist.max() as f64 / 1000.0 }))
}

pub fn print_disk(v: &Value) {
    println!(
        "disk {}: O_DIRECT {} B sequential writes (fdatasync included) and reads, files written at once:",
        v["dir"].as_str().unwrap_or(""),
        v["io_bytes"],
    );
    for pass in v["passes"].as_array().into_iter().flatten() {
        println!(
            "  {:>3} file(s): writes {:.2} GB/s, reads {:.2} GB/s",
            pass["streams"],
            pass["write_gb_per_s"].as_f64().unwrap_or(0.0),
            pass["read_gb_per_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "  best: writes {:.2} GB/s ({} files), reads {:.2} GB/s ({} files)",
        v["write_gb_per_s"].as_f64().unwrap_or(0.0),
        v["write_streams"],
        v["read_gb_per_s"].as_f64().unwrap_or(0.0),
        v["read_streams"]
    );
    let f = &v["fsync_4k_ms"];
    println!(
        "  rewrite 4 KiB + fdatasync: p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
        f["p50"].as_f64().unwrap_or(0.0),
        f["p99"].as_f64().unwrap_or(0.0),
        f["p99_9"].as_f64().unwrap_or(0.0),
        f["max"].as_f64().unwrap_or(0.0)
    );
}

/// Durable appends at a fixed total rate: `files` threads, each appending `io_bytes` writes to
/// its own fresh O_DIRECT | O_DSYNC file on a schedule, staggered so that the writes arrive
/// evenly. This is the disk's share of an acks=all produce at that rate when every partition
/// write is its own durable append, with no broker, network or client in the way. With
/// `overwrite`, each file is first filled with zeros and synced, and the writes land on those
/// blocks instead. Latency is each write's own (issue to completion); a write that falls behind
/// its schedule is issued at once, and how far behind the slowest one fell is reported too.
pub fn durable(args: &DurableArgs) -> Result<Value> {
    check_io_bytes(args.io_bytes)?;
    if args.files == 0 || args.mb_per_s <= 0.0 || args.duration <= 0.0 {
        bail!("--files, --mb-per-s and --duration must be positive");
    }
    let files = args.files;
    let writes_per_s = args.mb_per_s * 1e6 / args.io_bytes as f64;
    let interval = Duration::from_secs_f64(files as f64 / writes_per_s);
    let writes_each = (args.duration * writes_per_s / files as f64).ceil().max(1.0) as u64;
    let paths: Vec<_> = (0..files)
        .map(|i| args.dir.join(format!(".pinion-bench-durable-{}-{i}", std::process::id())))
        .collect();
    let prepared = paths.iter().try_for_each(|path| {
        if args.overwrite {
            fill_with_zeros(path, writes_each * args.io_bytes as u64)
        } else {
            open_direct(path, true, false).map(drop)
        }
    });
    if let Err(e) = prepared {
        paths.iter().for_each(|path| drop(std::fs::remove_file(path)));
        return Err(e);
    }
    let start = Instant::now() + Duration::from_millis(10);
    let threads: Vec<_> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let (path, io_bytes) = (path.clone(), args.io_bytes);
            let first = start + interval.mul_f64(i as f64 / files as f64);
            std::thread::spawn(move || durable_writer(&path, io_bytes, first, interval, writes_each))
        })
        .collect();
    let mut hist = new_histogram();
    let mut behind = Duration::ZERO;
    let mut result = Ok(());
    for t in threads {
        match t.join().map_err(|_| anyhow::anyhow!("writer panicked")).and_then(|r| r) {
            Ok((h, b)) => {
                hist.add(&h).expect("same bounds");
                behind = behind.max(b);
            }
            Err(e) => result = Err(e),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    result?;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let bytes = hist.len() * args.io_bytes as u64;
    Ok(json!({
        "dir": args.dir.display().to_string(),
        "files": files,
        "io_bytes": args.io_bytes,
        "overwrite": args.overwrite,
        "target_mb_per_s": args.mb_per_s,
        "mb_per_s": bytes as f64 / elapsed / 1e6,
        "writes": hist.len(),
        "latency_ms": { "p50": ms(0.5), "p99": ms(0.99), "p99_9": ms(0.999), "max": hist.max() as f64 / 1000.0 },
        "most_behind_schedule_ms": behind.as_secs_f64() * 1000.0,
    }))
}

fn durable_writer(
    path: &Path,
    io_bytes: usize,
    first: Instant,
    interval: Duration,
    writes: u64,
) -> Result<(hdrhistogram::Histogram<u64>, Duration)> {
    let file = open_direct(path, false, true)?;
    let mut buf = AlignedBuf::new(io_bytes);
    buf.as_mut_slice().fill(b'd');
    let mut hist = new_histogram();
    let mut behind = Duration::ZERO;
    for n in 0..writes {
        wait_until(first + interval.mul_f64(n as f64), &mut behind);
        let issued = Instant::now();
        file.write_all_at(buf.as_mut_slice(), n * io_bytes as u64).context("durable write")?;
        hist.record((issued.elapsed().as_micros() as u64).clamp(1, hist.high())).expect("in range");
    }
    Ok((hist, behind))
}

/// Sleeps until `due`; when it has passed already, keeps in `behind` the furthest behind
/// schedule a fixed-rate probe has been.
fn wait_until(due: Instant, behind: &mut Duration) {
    let now = Instant::now();
    if now < due {
        std::thread::sleep(due - now);
    } else {
        *behind = (*behind).max(now - due);
    }
}

/// Makes `path` a fresh file of `len` bytes of zeros (rounded up to whole MiB), written with
/// direct I/O and synced, so that later writes over it change no block map or file size.
fn fill_with_zeros(path: &Path, len: u64) -> Result<()> {
    const STEP: usize = 1 << 20;
    let file = open_direct(path, true, false)?;
    let mut zeros = AlignedBuf::new(STEP);
    for i in 0..len.div_ceil(STEP as u64) {
        file.write_all_at(zeros.as_mut_slice(), i * STEP as u64).context("writing zeros")?;
    }
    file.sync_all().context("fsync")
}

pub fn print_durable(v: &Value) {
    println!(
        "disk {}: O_DSYNC {} of {} B to {} files at {:.0} MB/s (asked {:.0}): {}",
        v["dir"].as_str().unwrap_or(""),
        if v["overwrite"].as_bool().unwrap_or(false) { "overwrites" } else { "appends" },
        v["io_bytes"],
        v["files"],
        v["mb_per_s"].as_f64().unwrap_or(0.0),
        v["target_mb_per_s"].as_f64().unwrap_or(0.0),
        schedule_latency(v),
    );
}

/// A fixed-rate probe's latency percentiles and how far behind its schedule it fell, in words.
fn schedule_latency(v: &Value) -> String {
    let l = &v["latency_ms"];
    let ms = |key: &str| l[key].as_f64().unwrap_or(0.0);
    format!(
        "p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms; at most {:.1} ms behind schedule",
        ms("p50"),
        ms("p99"),
        ms("p99_9"),
        ms("max"),
        v["most_behind_schedule_ms"].as_f64().unwrap_or(0.0),
    )
}

pub fn print_loopback(v: &Value) {
    let runs: Vec<String> = v["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{:.2}", r["gb_per_s"].as_f64().unwrap_or(0.0)))
        .collect();
    println!(
        "loopback TCP: {:.2} GB/s (best of {} runs: {} GB/s)",
        v["gb_per_s"].as_f64().unwrap_or(0.0),
        runs.len(),
        runs.join(", ")
    );
}

pub fn loopback(args: &LoopbackArgs) -> Result<Value> {
    let mut runs = Vec::new();
    for _ in 0..args.runs.max(1) {
        runs.push(loopback_once(args)?);
    }
    let best = runs.iter().map(|r| r["gb_per_s"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max);
    Ok(json!({ "gb_per_s": best, "chunk_bytes": args.chunk_bytes, "runs": runs }))
}

fn loopback_once(args: &LoopbackArgs) -> Result<Value> {
    let cpus = match &args.cpus {
        Some(list) => parse_cpu_list(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let sender_cpu = cpus.first().copied();
    let receiver_cpu = cpus.get(1).or(cpus.first()).copied();
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let chunk = args.chunk_bytes.max(1);
    let receiver = std::thread::spawn(move || -> Result<(u64, Duration)> {
        pin(receiver_cpu);
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; chunk];
        let mut bytes = 0u64;
        let started = Instant::now();
        loop {
            match stream.read(&mut buf)? {
                0 => return Ok((bytes, started.elapsed())),
                n => bytes += n as u64,
            }
        }
    });
    pin(sender_cpu);
    let mut stream = TcpStream::connect(addr)?;
    let buf = vec![b'x'; chunk];
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration);
    while Instant::now() < deadline {
        stream.write_all(&buf)?;
    }
    drop(stream);
    let (bytes, elapsed) = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    Ok(json!({
        "bytes": bytes,
        "elapsed_s": elapsed.as_secs_f64(),
        "gb_per_s": bytes as f64 / elapsed.as_secs_f64() / 1e9,
    }))
}

/// Round trips at a fixed rate over loopback TCP, to an echo thread that answers each request as
/// soon as it has read it: the floor under a produce's latency at that rate with no broker work
/// at all (no parsing, no disk), only TCP, the threads' wake-ups and the CPUs' own stalls. The
/// client is shaped as the generator's producer: a writer thread sends each request at its due
/// time (at once if it is behind) and a reader thread takes the responses; latency runs from the
/// due time, so a stall delays every request due during it.
pub fn round_trip(args: &RoundTripArgs) -> Result<Value> {
    if args.rate <= 0.0 || args.duration <= 0.0 || args.request_bytes == 0 || args.response_bytes == 0 {
        bail!("--rate, --duration, --request-bytes and --response-bytes must be positive");
    }
    let client_cpus = match &args.cpus {
        Some(list) => parse_cpu_list(list).map_err(anyhow::Error::msg)?,
        None => Vec::new(),
    };
    let (writer_cpu, reader_cpu) =
        (client_cpus.first().copied(), client_cpus.get(1).or(client_cpus.first()).copied());
    let requests = (args.rate * args.duration).ceil().max(1.0) as u64;
    let interval = Duration::from_secs_f64(1.0 / args.rate);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let (server_cpu, request_bytes, response_bytes) =
        (args.server_cpu, args.request_bytes, args.response_bytes);
    let server = std::thread::spawn(move || -> Result<()> {
        pin(server_cpu);
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut request = vec![0u8; request_bytes];
        let response = vec![b'r'; response_bytes];
        loop {
            match stream.read_exact(&mut request) {
                Ok(()) => stream.write_all(&response)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    });
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut replies = stream.try_clone()?;
    let start = Instant::now() + Duration::from_millis(10);
    let reader = std::thread::spawn(move || -> Result<hdrhistogram::Histogram<u64>> {
        pin(reader_cpu);
        let mut hist = new_histogram();
        let mut response = vec![0u8; response_bytes];
        for n in 0..requests {
            replies.read_exact(&mut response).context("reading a response")?;
            let due = start + interval.mul_f64(n as f64);
            hist.record((due.elapsed().as_micros() as u64).clamp(1, hist.high())).expect("in range");
        }
        Ok(hist)
    });
    pin(writer_cpu);
    set_timer_slack_ns(1);
    let request = vec![b'q'; request_bytes];
    let mut behind = Duration::ZERO;
    let mut sent = Ok(());
    for n in 0..requests {
        wait_until(start + interval.mul_f64(n as f64), &mut behind);
        sent = stream.write_all(&request);
        if sent.is_err() {
            break;
        }
    }
    let hist = reader.join().map_err(|_| anyhow::anyhow!("reader panicked"));
    drop(stream);
    server.join().map_err(|_| anyhow::anyhow!("echo thread panicked"))??;
    sent.context("sending a request")?;
    let hist = hist??;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "rate": args.rate,
        "requests": hist.len(),
        "request_bytes": request_bytes,
        "response_bytes": response_bytes,
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "p99_9": ms(0.999), "p99_99": ms(0.9999),
            "max": hist.max() as f64 / 1000.0,
        },
        "most_behind_schedule_ms": behind.as_secs_f64() * 1000.0,
    }))
}

pub fn print_round_trip(v: &Value) {
    println!(
        "loopback round trips: {} of {} B -> {} B at {}/s: {}",
        v["requests"],
        v["request_bytes"],
        v["response_bytes"],
        v["rate"],
        schedule_latency(v),
    );
}

/// Gaps between two clock reads longer than this count as a stall.
const STALL_MIN: Duration = Duration::from_micros(100);

/// A thread spinning on each CPU, reading the clock: any gap between two reads longer than
/// `STALL_MIN` is time the CPU was taken away from a running thread, by the hypervisor (on a
/// VM) or by interrupts. Whatever a broker does, records in flight on a CPU during such a gap
/// wait it out.
pub fn stalls(args: &StallsArgs) -> Result<Value> {
    if args.duration <= 0.0 {
        bail!("--duration must be positive");
    }
    let cpus = match &args.cpus {
        Some(list) => parse_cpu_list(list).map_err(anyhow::Error::msg)?,
        None => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    };
    let duration = Duration::from_secs_f64(args.duration);
    let threads: Vec<_> =
        cpus.iter().map(|&cpu| std::thread::spawn(move || (cpu, spin_for_stalls(cpu, duration)))).collect();
    let per_cpu: Vec<(usize, Stalls)> = threads
        .into_iter()
        .map(|t| t.join().map_err(|_| anyhow::anyhow!("probe thread panicked")))
        .collect::<Result<_>>()?;
    let mut all = Stalls::default();
    per_cpu.iter().for_each(|(_, s)| all.add(s));
    let mut result = all.to_json();
    result["duration_s"] = json!(args.duration);
    result["cpus"] = per_cpu
        .iter()
        .map(|(cpu, s)| {
            let mut c = s.to_json();
            c["cpu"] = json!(cpu);
            c
        })
        .collect();
    Ok(result)
}

#[derive(Default)]
struct Stalls {
    over_0_1_ms: u64,
    over_1_ms: u64,
    over_3_ms: u64,
    stalled: Duration,
    longest: Duration,
}

impl Stalls {
    /// Counts `other`'s stalls too (the longest stays the longest of both).
    fn add(&mut self, other: &Stalls) {
        self.over_0_1_ms += other.over_0_1_ms;
        self.over_1_ms += other.over_1_ms;
        self.over_3_ms += other.over_3_ms;
        self.stalled += other.stalled;
        self.longest = self.longest.max(other.longest);
    }

    fn to_json(&self) -> Value {
        json!({
            "stalls_over_0_1_ms": self.over_0_1_ms,
            "stalls_over_1_ms": self.over_1_ms,
            "stalls_over_3_ms": self.over_3_ms,
            "stalled_ms": self.stalled.as_secs_f64() * 1000.0,
            "longest_ms": self.longest.as_secs_f64() * 1000.0,
        })
    }
}

fn spin_for_stalls(cpu: usize, duration: Duration) -> Stalls {
    pin(Some(cpu));
    let mut s = Stalls::default();
    let started = Instant::now();
    let mut last = started;
    while last - started < duration {
        let now = Instant::now();
        let gap = now - last;
        last = now;
        if gap < STALL_MIN {
            continue;
        }
        s.over_0_1_ms += 1;
        s.over_1_ms += u64::from(gap >= Duration::from_millis(1));
        s.over_3_ms += u64::from(gap >= Duration::from_millis(3));
        s.stalled += gap;
        s.longest = s.longest.max(gap);
    }
    s
}

pub fn print_stalls(v: &Value) {
    for c in v["cpus"].as_array().into_iter().flatten() {
        println!(
            "CPU {}: {} stalls over 0.1 ms, {} over 1 ms, {} over 3 ms in {} s; {:.1} ms stalled, the longest {:.2} ms",
            c["cpu"],
            c["stalls_over_0_1_ms"],
            c["stalls_over_1_ms"],
            c["stalls_over_3_ms"],
            v["duration_s"],
            c["stalled_ms"].as_f64().unwrap_or(0.0),
            c["longest_ms"].as_f64().unwrap_or(0.0),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_args(rate: f64, duration: f64) -> RoundTripArgs {
        RoundTripArgs {
            rate,
            duration,
            request_bytes: 1200,
            response_bytes: 64,
            server_cpu: None,
            cpus: None,
            json: true,
        }
    }

    #[test]
    fn round_trip_answers_every_request() {
        let v = round_trip(&round_trip_args(2000.0, 0.25)).expect("probe runs");
        assert_eq!(v["requests"], 500);
        let l = &v["latency_ms"];
        let (p50, max) = (l["p50"].as_f64().unwrap(), l["max"].as_f64().unwrap());
        assert!(p50 > 0.0 && p50 <= max, "p50 {p50} ms, max {max} ms");
    }

    #[test]
    fn round_trip_refuses_a_zero_rate() {
        assert!(round_trip(&round_trip_args(0.0, 1.0)).is_err());
    }

    /// A directory on the build's own disk: direct I/O needs a real file system, not tmpfs.
    fn disk_dir(name: &str) -> std::path::PathBuf {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }

    #[test]
    fn disk_reports_every_pass_takes_the_best_and_cleans_up() {
        let dir = disk_dir("disk-probe-test");
        let args = DiskArgs {
            dir: dir.clone(),
            io_bytes: 64 << 10,
            total_bytes: 200 << 10,
            streams: vec![1, 3],
            json: true,
        };
        let v = disk(&args).expect("probe runs");
        let passes = v["passes"].as_array().expect("passes");
        let streams: Vec<u64> = passes.iter().map(|p| p["streams"].as_u64().unwrap()).collect();
        assert_eq!(streams, [1, 3]);
        // Whole writes per file, at least the total asked for: 4 x 64 KiB, and 3 files x 2.
        let totals: Vec<u64> = passes.iter().map(|p| p["total_bytes"].as_u64().unwrap()).collect();
        assert_eq!(totals, [256 << 10, 384 << 10]);
        for key in ["write_gb_per_s", "read_gb_per_s"] {
            let best = passes.iter().map(|p| p[key].as_f64().unwrap()).fold(0.0, f64::max);
            assert!(best > 0.0);
            assert_eq!(v[key].as_f64().unwrap(), best, "{key} is the best pass");
        }
        assert!(v["fsync_4k_ms"]["p50"].as_f64().unwrap() > 0.0);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert!(left.is_empty(), "probe files left behind: {left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn disk_refuses_no_passes() {
        let dir = disk_dir("disk-probe-none");
        let args =
            DiskArgs { dir: dir.clone(), io_bytes: 4096, total_bytes: 4096, streams: vec![], json: true };
        assert!(disk(&args).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
