//! `pinion produce TOPIC`: kafka-console-producer.sh. Each stdin line becomes one record; lines
//! that arrive together go out together, one batch per partition.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};

use bytes::Bytes;
use clap::{Args, ValueEnum};
use kafka_protocol::error::ResponseError;
use kafka_protocol::records::Compression;
use serde_json::json;

use super::output::print_text;
use super::{parse_key_value, CliResult, Connect, Failure};
use crate::client::producer::{self, OutRecord};
use crate::client::{now_ms, Client, ClientError};

/// Bytes of records put in one batch at most, below Kafka's default message.max.bytes (1 MiB)
/// so that a full batch is accepted even uncompressed.
const BATCH_BYTES_MAX: usize = 900 << 10;
/// Stdin is read this many bytes at a time.
const STDIN_BUFFER_BYTES: usize = 1 << 20;
/// Times a batch refused with a retriable error (e.g. a leader change) is sent again.
const RETRIES_MAX: usize = 3;

#[derive(Args, Debug)]
pub struct ProduceArgs {
    /// The topic to send to (created if the broker auto-creates topics).
    pub topic: String,
    /// Split each line at the first SEP into key and value, e.g. `-k :` for `key:value` lines.
    /// Without it, records have no key.
    #[arg(short, long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, e.g. `-H source=cli`. Repeatable.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    /// Acknowledgement to wait for: all (every in-sync replica), 1 (the leader) or 0 (none).
    #[arg(short, long, default_value = "all", value_parser = parse_acks)]
    pub acks: i16,
    /// Send every record to this partition. Default: records with a key go to the partition
    /// its hash picks (as Kafka's Java client does); the others rotate over the partitions.
    #[arg(short, long)]
    pub partition: Option<i32>,
    /// Compression of the batches.
    #[arg(short = 'z', long, value_enum, default_value_t = Codec::None)]
    pub compression: Codec,
    /// Most records sent in one request.
    #[arg(long, value_name = "RECORDS", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    #[command(flatten)]
    pub connect: Connect,
    /// Print one JSON line per record: its partition and offset, or its error.
    #[arg(long)]
    pub json: bool,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Codec {
    fn compression(self) -> Compression {
        match self {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

fn parse_acks(s: &str) -> Result<i16, String> {
    match s {
        "all" | "-1" => Ok(-1),
        "1" => Ok(1),
        "0" => Ok(0),
        _ => Err(format!("{s:?} is not an acks level: use all, 1 or 0")),
    }
}

/// One stdin line: its number (from 1) and its bytes without the line ending.
type Line = (usize, Vec<u8>);

pub fn run(args: ProduceArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let mut sender = Sender::new(&mut client, &args)?;
    let mut lines = Lines::new(args.batch_size as usize);
    while let Some(batch) = lines.next_batch()? {
        sender.send(&mut client, batch)?;
    }
    sender.finish()
}

/// Stdin as groups of lines: the lines that arrived together (up to the limits) form one
/// group, so piped input goes out in large batches and a line typed at a terminal at once.
struct Lines {
    reader: BufReader<std::io::Stdin>,
    /// Lines read so far, to number them from 1 in messages.
    count: usize,
    records_max: usize,
}

impl Lines {
    fn new(records_max: usize) -> Lines {
        Lines {
            reader: BufReader::with_capacity(STDIN_BUFFER_BYTES, std::io::stdin()),
            count: 0,
            records_max,
        }
    }

    /// The next group, or `None` at the end of the input.
    fn next_batch(&mut self) -> std::io::Result<Option<Vec<Line>>> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        loop {
            let mut line = Vec::new();
            if self.reader.read_until(b'\n', &mut line)? == 0 {
                return Ok((!batch.is_empty()).then_some(batch));
            }
            self.count += 1;
            if line.last() == Some(&b'\n') {
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
            }
            bytes += line.len();
            batch.push((self.count, line));
            // An empty buffer means the next read would wait for more input.
            if self.reader.buffer().is_empty() || batch.len() >= self.records_max || bytes >= BATCH_BYTES_MAX
            {
                return Ok(Some(batch));
            }
        }
    }
}

struct Sender<'a> {
    args: &'a ProduceArgs,
    /// Partition -> leader broker.
    leaders: BTreeMap<i32, i32>,
    partitions: i32,
    next_unkeyed: i32,
    sent: usize,
    failed: usize,
}

impl<'a> Sender<'a> {
    fn new(client: &mut Client, args: &'a ProduceArgs) -> Result<Sender<'a>, Failure> {
        let mut sender =
            Sender { args, leaders: BTreeMap::new(), partitions: 0, next_unkeyed: 0, sent: 0, failed: 0 };
        sender.refresh(client)?;
        if let Some(p) = args.partition {
            if !(0..sender.partitions).contains(&p) {
                return Err(Failure(format!(
                    "topic {:?} has no partition {p} (it has {})",
                    args.topic, sender.partitions
                )));
            }
        }
        sender.next_unkeyed = (now_ms() % i64::from(sender.partitions.max(1))) as i32;
        Ok(sender)
    }

    fn refresh(&mut self, client: &mut Client) -> Result<(), Failure> {
        let topic = client.topics(std::slice::from_ref(&self.args.topic), true)?.remove(0);
        self.partitions = topic.partitions.len() as i32;
        self.leaders = topic.partitions.iter().map(|p| (p.index, p.leader)).collect();
        Ok(())
    }

    /// Parses `lines` into records, sends them and reports each failed record.
    fn send(&mut self, client: &mut Client, lines: Vec<Line>) -> Result<(), Failure> {
        let timestamp_ms = now_ms();
        let headers: Vec<(String, Option<Bytes>)> =
            self.args.headers.iter().map(|(k, v)| (k.clone(), Some(Bytes::from(v.clone())))).collect();
        let unkeyed_partition = self.args.partition.unwrap_or(self.next_unkeyed);
        self.next_unkeyed = (self.next_unkeyed + 1) % self.partitions.max(1);
        // Partition -> (line numbers, records).
        let mut by_partition: BTreeMap<i32, (Vec<usize>, Vec<OutRecord>)> = BTreeMap::new();
        for (number, line) in lines {
            let (key, value) = match &self.args.key_separator {
                None => (None, line),
                Some(sep) => match find(&line, sep.as_bytes()) {
                    Some(i) => (Some(Bytes::copy_from_slice(&line[..i])), line[i + sep.len()..].to_vec()),
                    None => {
                        self.report(number, Err(format!("no key separator {sep:?} in the line")));
                        continue;
                    }
                },
            };
            let partition = match (self.args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => producer::partition_for_key(k, self.partitions),
                (None, None) => unkeyed_partition,
            };
            let entry = by_partition.entry(partition).or_default();
            entry.0.push(number);
            entry.1.push(OutRecord {
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
                timestamp_ms,
            });
        }
        let mut pending: Vec<(i32, Vec<usize>, Bytes)> = Vec::new();
        for (partition, (numbers, records)) in by_partition {
            let batch = producer::encode_batch(&records, self.args.compression.compression())?;
            pending.push((partition, numbers, batch));
        }
        for attempt in 0..=RETRIES_MAX {
            if pending.is_empty() {
                break;
            }
            let batches = pending.iter().map(|(p, _, b)| (*p, b.clone())).collect();
            let results =
                producer::produce(client, &self.args.topic, &self.leaders, batches, self.args.acks)?;
            let mut retry = Vec::new();
            let mut refresh = false;
            for produced in results {
                let Some(i) = pending.iter().position(|(p, _, _)| *p == produced.partition) else { continue };
                let (partition, numbers, batch) = pending.swap_remove(i);
                match produced.result {
                    Ok(base) => {
                        for (i, number) in numbers.into_iter().enumerate() {
                            let offset = (base >= 0).then(|| base + i as i64);
                            self.report(number, Ok((partition, offset)));
                        }
                    }
                    Err(e) if attempt < RETRIES_MAX && retriable(&e) => {
                        refresh = true;
                        retry.push((partition, numbers, batch));
                    }
                    Err(e) => {
                        for number in numbers {
                            self.report(number, Err(e.to_string()));
                        }
                    }
                }
            }
            // A partition missing from the response is reported as failed rather than lost.
            for (_, numbers, _) in pending.drain(..) {
                for number in numbers {
                    self.report(number, Err("the broker did not answer for this partition".into()));
                }
            }
            pending = retry;
            if refresh {
                std::thread::sleep(std::time::Duration::from_millis(100 << attempt));
                self.refresh(client)?;
            }
        }
        Ok(())
    }

    fn report(&mut self, line: usize, outcome: Result<(i32, Option<i64>), String>) {
        match &outcome {
            Ok(_) => self.sent += 1,
            Err(e) => {
                self.failed += 1;
                if !self.args.json {
                    eprintln!("pinion: line {line}: not produced: {e}");
                }
            }
        }
        if self.args.json {
            let doc = match outcome {
                Ok((partition, offset)) => json!({ "line": line, "partition": partition, "offset": offset }),
                Err(e) => json!({ "line": line, "error": e }),
            };
            print_text(&format!("{doc}\n"));
        }
    }

    fn finish(self) -> CliResult {
        match self.failed {
            0 => Ok(()),
            n => Err(Failure(format!("{n} of {} records were not produced", n + self.sent))),
        }
    }
}

fn retriable(e: &ClientError) -> bool {
    e.code().and_then(ResponseError::try_from_code).is_some_and(|e| e.is_retriable())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_levels_parse() {
        assert_eq!(parse_acks("all"), Ok(-1));
        assert_eq!(parse_acks("-1"), Ok(-1));
        assert_eq!(parse_acks("0"), Ok(0));
        assert!(parse_acks("2").is_err());
    }

    #[test]
    fn separators_are_found_at_their_first_occurrence() {
        assert_eq!(find(b"k:v:w", b":"), Some(1));
        assert_eq!(find(b"k::v", b"::"), Some(1));
        assert_eq!(find(b"kv", b":"), None);
    }
}
