//! The run's clock from the main thread: warm-up, measuring window, stop, a progress line every
//! interval, and the final summary (text, or one JSON object for scripts).

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::stats::{new_histogram, Flow, Snapshot, Stats};

/// Percentiles in every summary.
const PERCENTILES: [(&str, f64); 5] =
    [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99_9", 99.9), ("p99_99", 99.99)];
const POLL: Duration = Duration::from_millis(20);

/// What the run measures and when it ends.
pub struct Plan {
    pub warmup: Duration,
    pub duration: Option<Duration>,
    /// Records to produce after the warm-up (producers stop themselves).
    pub produce_records: Option<u64>,
    /// Records to consume after the warm-up (consume mode: the reporter stops the run).
    pub consume_records: Option<u64>,
    pub interval: Duration,
    pub show_produce: bool,
    pub show_consume: bool,
    /// Progress lines go to stderr when the summary is JSON.
    pub json: bool,
    /// Records per second asked of all producers together (`None`: flat out).
    pub rate: Option<f64>,
}

/// A flow's figures over the measuring window.
pub struct FlowResult {
    pub measured: Snapshot,
    /// Including the warm-up.
    pub total: Snapshot,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

pub struct Outcome {
    pub produce: FlowResult,
    pub consume: FlowResult,
    pub send_wait: Histogram<u64>,
}

struct FlowWindow {
    baseline: Snapshot,
    last: Snapshot,
    interval_hist: Histogram<u64>,
    total_hist: Histogram<u64>,
}

impl FlowWindow {
    fn new() -> FlowWindow {
        FlowWindow {
            baseline: Snapshot::default(),
            last: Snapshot::default(),
            interval_hist: new_histogram(),
            total_hist: new_histogram(),
        }
    }

    fn restart(&mut self, flow: &Flow) {
        flow.drain_into(&mut self.interval_hist);
        self.interval_hist.reset();
        self.total_hist.reset();
        self.baseline = flow.counters.snapshot();
        self.last = self.baseline;
    }

    /// Moves the threads' samples into the window's total (or drops them in the warm-up).
    fn drain(&mut self, flow: &Flow, measuring: bool) {
        flow.drain_into(&mut self.interval_hist);
        if measuring {
            self.total_hist.add(&self.interval_hist).expect("same histogram bounds");
        }
        self.interval_hist.reset();
    }

    /// The window runs from the end of the warm-up to the last record counted.
    fn result(&mut self, flow: &Flow, started_ns: u64) -> FlowResult {
        self.drain(flow, true);
        let total = flow.counters.snapshot();
        let last_ns = flow.last_ns.load(std::sync::atomic::Ordering::Relaxed);
        FlowResult {
            measured: total.minus(self.baseline),
            total,
            elapsed: Duration::from_nanos(last_ns.saturating_sub(started_ns)),
            latency: self.total_hist.clone(),
        }
    }
}

/// Drives the run until every producer and then every consumer has finished.
pub fn run(
    stats: &Stats,
    plan: &Plan,
    producers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<()>>,
) -> Outcome {
    let start = Instant::now();
    let mut measure_start = start;
    let mut measure_start_ns = stats.clock.now_ns();
    let mut measuring = false;
    let mut windows = Windows { produce: FlowWindow::new(), consume: FlowWindow::new() };
    let mut send_wait = FlowWindow::new();
    let mut next_line = start + plan.interval;
    let mut last_line = start;
    let mut producers = Some(producers);
    let mut consumers = Some(consumers);
    loop {
        let now = Instant::now();
        if !measuring && now >= start + plan.warmup {
            if !plan.warmup.is_zero() && now > last_line {
                // Close the interval the warm-up ends in, so that every line's rates and
                // percentiles cover exactly the time since the line before.
                let line = windows.progress_line(plan, stats, now - start, now - last_line, false);
                progress(plan, &line);
                last_line = now;
                next_line = now + plan.interval;
            }
            measuring = true;
            measure_start = now;
            measure_start_ns = stats.clock.now_ns();
            windows.produce.restart(&stats.produced);
            windows.consume.restart(&stats.consumed);
            send_wait.restart(&stats.send_wait);
            if let Some(n) = plan.produce_records {
                stats.set_budget(n);
            }
            if !plan.warmup.is_zero() {
                progress(plan, "warm-up over: measuring from now on");
            }
        }
        if measuring {
            if let Some(d) = plan.duration {
                if now >= measure_start + d {
                    stats.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            if let Some(n) = plan.consume_records {
                if stats.consumed.counters.snapshot().records - windows.consume.baseline.records >= n {
                    stats.stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        if producers.as_ref().is_some_and(|h| h.iter().all(JoinHandle::is_finished)) {
            for h in producers.take().into_iter().flatten() {
                let _ = h.join();
            }
            stats.producers_done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if producers.is_none() && consumers.as_ref().is_some_and(|h| h.iter().all(JoinHandle::is_finished)) {
            for h in consumers.take().into_iter().flatten() {
                let _ = h.join();
            }
        }
        let finished = producers.is_none() && consumers.is_none();
        if now >= next_line || finished {
            let line = windows.progress_line(plan, stats, now - start, now - last_line, measuring);
            if !finished {
                progress(plan, &line);
            }
            send_wait.drain(&stats.send_wait, measuring);
            last_line = now;
            next_line = now + plan.interval;
        }
        if finished {
            return Outcome {
                produce: windows.produce.result(&stats.produced, measure_start_ns),
                consume: windows.consume.result(&stats.consumed, measure_start_ns),
                send_wait: send_wait.result(&stats.send_wait, measure_start_ns).latency,
            };
        }
        std::thread::sleep(POLL.min(next_line.saturating_duration_since(Instant::now())));
    }
}

/// The windows of the two flows a progress line reports on.
struct Windows {
    produce: FlowWindow,
    consume: FlowWindow,
}

impl Windows {
    /// One progress line at `at` (time since the start): each shown flow's rates and latency
    /// over the `span` since the line before.
    fn progress_line(
        &mut self,
        plan: &Plan,
        stats: &Stats,
        at: Duration,
        span: Duration,
        measuring: bool,
    ) -> String {
        let secs = span.as_secs_f64();
        let mut line = format!("{:7.1}s", at.as_secs_f64());
        if plan.show_produce {
            line += &interval_line("produce", &mut self.produce, &stats.produced, secs, measuring);
        }
        if plan.show_consume {
            line += &interval_line(consume_label(plan), &mut self.consume, &stats.consumed, secs, measuring);
        }
        line
    }
}

fn consume_label(plan: &Plan) -> &'static str {
    if plan.show_produce {
        "e2e"
    } else {
        "consume"
    }
}

fn progress(plan: &Plan, line: &str) {
    if plan.json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

fn interval_line(label: &str, window: &mut FlowWindow, flow: &Flow, secs: f64, measuring: bool) -> String {
    let now = flow.counters.snapshot();
    let delta = now.minus(window.last);
    window.last = now;
    flow.drain_into(&mut window.interval_hist);
    let h = &window.interval_hist;
    let mut line = format!(
        " | {label} {:>9.0} rec/s {:>8.1} MB/s",
        delta.records as f64 / secs,
        delta.batch_bytes as f64 / secs / 1e6
    );
    if !h.is_empty() {
        line += &format!(
            " p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms",
            ms(h.value_at_quantile(0.5)),
            ms(h.value_at_quantile(0.99)),
            ms(h.value_at_quantile(0.999)),
            ms(h.max())
        );
    }
    if measuring {
        window.total_hist.add(&window.interval_hist).expect("same histogram bounds");
    }
    window.interval_hist.reset();
    line
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles, max, mean and count of a latency histogram, in ms; null when empty.
pub fn percentiles_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let mut l = serde_json::Map::new();
    for (name, p) in PERCENTILES {
        l.insert(name.into(), json!(ms(h.value_at_percentile(p))));
    }
    l.insert("max".into(), json!(ms(h.max())));
    l.insert("mean".into(), json!(h.mean() / 1000.0));
    l.insert("count".into(), json!(h.len()));
    Value::Object(l)
}

/// The summary of one flow as JSON.
pub fn flow_json(r: &FlowResult) -> Value {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let latency = percentiles_json(&r.latency);
    json!({
        "records": r.measured.records,
        "elapsed_s": secs,
        "records_per_s": r.measured.records as f64 / secs,
        "mb_per_s": r.measured.batch_bytes as f64 / secs / 1e6,
        "payload_mb_per_s": r.measured.payload_bytes as f64 / secs / 1e6,
        "batch_bytes": r.measured.batch_bytes,
        "payload_bytes": r.measured.payload_bytes,
        "total_records": r.total.records,
        "total_batch_bytes": r.total.batch_bytes,
        "latency_ms": latency,
        "latency_curve": curve(&r.latency),
    })
}

/// (percentile, ms) points for a latency-percentile plot, denser towards the tail.
fn curve(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Array(Vec::new());
    }
    let mut points: Vec<Value> = Vec::new();
    let mut last_percentile = -1.0;
    for v in h.iter_quantiles(4) {
        let percentile = v.percentile();
        if percentile - last_percentile < 1e-6 {
            continue;
        }
        last_percentile = percentile;
        points.push(json!([percentile, ms(v.value_iterated_to())]));
    }
    Value::Array(points)
}

pub fn print_text(label: &str, r: &FlowResult) {
    let secs = r.elapsed.as_secs_f64().max(1e-9);
    let mut line = format!(
        "{label}: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s of batches",
        r.measured.records,
        secs,
        r.measured.records as f64 / secs,
        r.measured.batch_bytes as f64 / secs / 1e6,
    );
    if r.measured.payload_bytes > 0 {
        line += &format!(" ({:.1} MB/s of values)", r.measured.payload_bytes as f64 / secs / 1e6);
    }
    println!("{line}");
    if !r.latency.is_empty() {
        let mut line = String::from("  latency ms:");
        for (name, p) in PERCENTILES {
            line += &format!(" {} {:.3}", name.replace('_', "."), ms(r.latency.value_at_percentile(p)));
        }
        line += &format!(" max {:.3}", ms(r.latency.max()));
        println!("{line}");
    }
}
