//! `pinion consume TOPIC`: kafka-console-consumer.sh. Reads partitions itself, or as a member of
//! a consumer group (with heartbeats and commits); stops on Ctrl-C, `--max-messages`,
//! `--timeout` or `--exit-at-end`, committing the group's offsets before it exits.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::output::bytes_json;
use super::{parse_duration, CliResult, Failure};
use crate::client::admin::{self, OffsetSpec};
use crate::client::consumer::{self, ConsumedRecord};
use crate::client::error::codes;
use crate::client::group::{self, Heartbeat, Member};
use crate::client::{Client, ClientError};

/// Longest a fetch waits at the broker for new records; bounds how late Ctrl-C is noticed.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// How often a group member commits what it has printed, besides at exit and rebalances.
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// How long to wait for a broker when `--timeout` does not say less.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a partition error that new metadata should fix (a leader moving).
const METADATA_BACKOFF: Duration = Duration::from_millis(200);

#[derive(Args, Debug)]
pub struct ConsumeArgs {
    /// The topic to read.
    pub topic: String,
    /// Start at the earliest record, not at the end (for a group: only where it has no
    /// committed offset).
    #[arg(long)]
    pub from_beginning: bool,
    /// Read as a member of this consumer group: partitions are shared with the group's other
    /// members, and offsets are committed every few seconds and at exit.
    #[arg(short, long)]
    pub group: Option<String>,
    /// Read only this partition. Repeatable.
    #[arg(short, long, conflicts_with = "group")]
    pub partition: Vec<i32>,
    /// Where to start: earliest, latest, an offset, or -N for N records before the end.
    #[arg(short, long, value_name = "OFFSET", conflicts_with = "group", allow_hyphen_values = true, value_parser = parse_start)]
    pub offset: Option<Start>,
    /// Stop after this many records.
    #[arg(short = 'n', long, value_name = "N")]
    pub max_messages: Option<u64>,
    /// Stop when no record has arrived for this long: 500ms, 10s, 2m (a bare number is
    /// seconds). It also bounds the wait for an unreachable broker.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Stop once every partition has been read up to its end.
    #[arg(short, long)]
    pub exit_at_end: bool,
    /// Print each record with this template: %t topic, %p partition, %o offset, %k key,
    /// %v value, %h headers, %T timestamp (ms), %K key length, %S value length, %% a percent
    /// sign; \n, \t and \\ are escapes. Example: -f '%p:%o %k=%v\n'.
    #[arg(short, long, value_name = "TEMPLATE", conflicts_with = "json")]
    pub format: Option<String>,
    /// Print each record's key before its value ("null" when it has none).
    #[arg(long)]
    pub print_key: bool,
    /// Print each record's headers (key:value pairs separated by commas).
    #[arg(long)]
    pub print_headers: bool,
    /// Print each record's partition.
    #[arg(long)]
    pub print_partition: bool,
    /// Print each record's offset.
    #[arg(long)]
    pub print_offset: bool,
    /// Print each record's timestamp.
    #[arg(long)]
    pub print_timestamp: bool,
    /// Between the fields turned on by the --print-* flags.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    pub separator: String,
    /// Print one JSON object per record (topic, partition, offset, timestamp, key, value,
    /// headers).
    #[arg(long)]
    pub json: bool,
    /// Not `Connect`: here `--timeout` means how long to wait for records.
    #[command(flatten)]
    pub bootstrap: super::Bootstrap,
}

/// Where a partition is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Earliest,
    Latest,
    At(i64),
    /// This many records before the end (never before the start).
    BeforeEnd(i64),
}

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "earliest" | "beginning" => Ok(Start::Earliest),
        "latest" | "end" => Ok(Start::Latest),
        _ => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::At(n)),
            Ok(n) => Ok(Start::BeforeEnd(-n)),
            Err(_) => Err(format!("{s:?} is not earliest, latest, an offset or -N")),
        },
    }
}

pub fn run(args: ConsumeArgs) -> CliResult {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second Ctrl-C ends the process at once, without committing.
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let connect_timeout =
        args.timeout.map_or(CONNECT_TIMEOUT, |t| t.clamp(Duration::from_millis(100), CONNECT_TIMEOUT));
    let mut client = Client::connect(&args.bootstrap.bootstrap_server, connect_timeout)?;
    let printer = Printer::new(&args)?;
    let mut session = Session::new(&mut client, &args, printer)?;
    let outcome = session.run(&mut client, &stop);
    let closed = session.close(&mut client);
    eprintln!("pinion: {} records consumed", session.consumed);
    outcome.and(closed)
}

/// One partition being read.
#[derive(Debug, Clone)]
struct Position {
    partition: i32,
    leader: i32,
    /// The next offset to read.
    offset: i64,
    /// The partition's end as of the last fetch; -1 before the first.
    high_watermark: i64,
}

struct Session<'a> {
    args: &'a ConsumeArgs,
    printer: Printer,
    member: Option<Member>,
    positions: Vec<Position>,
    consumed: u64,
    committed: BTreeMap<i32, i64>,
    last_commit: Instant,
}

impl<'a> Session<'a> {
    fn new(client: &mut Client, args: &'a ConsumeArgs, printer: Printer) -> Result<Session<'a>, Failure> {
        let topic = client.topics(std::slice::from_ref(&args.topic), false)?.remove(0);
        let mut session = Session {
            args,
            printer,
            member: None,
            positions: Vec::new(),
            consumed: 0,
            committed: BTreeMap::new(),
            last_commit: Instant::now(),
        };
        match &args.group {
            Some(group) => {
                let member = Member::join(client, group, std::slice::from_ref(&args.topic))?;
                session.member = Some(member);
                session.take_assignment(client)?;
            }
            None => {
                let all: Vec<i32> = topic.partitions.iter().map(|p| p.index).collect();
                let wanted = if args.partition.is_empty() { all.clone() } else { args.partition.clone() };
                if let Some(p) = wanted.iter().find(|p| !all.contains(p)) {
                    return Err(Failure(format!(
                        "topic {:?} has no partition {p} (it has {})",
                        args.topic,
                        all.len()
                    )));
                }
                let start =
                    args.offset.unwrap_or(if args.from_beginning { Start::Earliest } else { Start::Latest });
                session.positions = session.start_positions(client, &wanted, start)?;
            }
        }
        Ok(session)
    }

    /// Positions for the partitions the group gave this member: committed offsets, else the
    /// start `--from-beginning` asks for.
    fn take_assignment(&mut self, client: &mut Client) -> Result<(), Failure> {
        let member = self.member.as_ref().expect("only group members take assignments");
        let group = self.args.group.as_deref().expect("a member has a group");
        let topic = &self.args.topic;
        let partitions = member.assignment.get(topic).cloned().unwrap_or_default();
        let committed: BTreeMap<i32, i64> = group::committed_offsets(client, group)?
            .into_iter()
            .filter(|((t, p), _)| t == topic && partitions.contains(p))
            .map(|((_, p), offset)| (p, offset))
            .collect();
        let fallback = if self.args.from_beginning { Start::Earliest } else { Start::Latest };
        let uncommitted: Vec<i32> =
            partitions.iter().copied().filter(|p| !committed.contains_key(p)).collect();
        let mut positions = self.start_positions(client, &uncommitted, fallback)?;
        let leaders = self.leaders(client)?;
        positions.extend(committed.iter().map(|(&partition, &offset)| Position {
            partition,
            leader: leaders.get(&partition).copied().unwrap_or(-1),
            offset,
            high_watermark: -1,
        }));
        positions.sort_by_key(|p| p.partition);
        self.positions = positions;
        self.committed = committed;
        self.last_commit = Instant::now();
        Ok(())
    }

    fn leaders(&self, client: &mut Client) -> Result<BTreeMap<i32, i32>, ClientError> {
        let topic = client.topics(std::slice::from_ref(&self.args.topic), false)?.remove(0);
        Ok(topic.partitions.iter().map(|p| (p.index, p.leader)).collect())
    }

    fn start_positions(
        &self,
        client: &mut Client,
        partitions: &[i32],
        start: Start,
    ) -> Result<Vec<Position>, Failure> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let leaders = self.leaders(client)?;
        let keys: Vec<(String, i32)> = partitions.iter().map(|&p| (self.args.topic.clone(), p)).collect();
        let lookup = |client: &mut Client, spec| -> Result<BTreeMap<i32, i64>, Failure> {
            let mut out = BTreeMap::new();
            for ((_, p), r) in admin::list_offsets(client, &keys, spec)? {
                out.insert(p, r?.offset);
            }
            Ok(out)
        };
        let offsets: BTreeMap<i32, i64> = match start {
            Start::Earliest => lookup(client, OffsetSpec::Earliest)?,
            Start::Latest => lookup(client, OffsetSpec::Latest)?,
            Start::At(n) => partitions.iter().map(|&p| (p, n)).collect(),
            Start::BeforeEnd(n) => {
                let earliest = lookup(client, OffsetSpec::Earliest)?;
                lookup(client, OffsetSpec::Latest)?
                    .into_iter()
                    .map(|(p, end)| (p, (end - n).max(earliest.get(&p).copied().unwrap_or(0))))
                    .collect()
            }
        };
        Ok(partitions
            .iter()
            .map(|&p| Position {
                partition: p,
                leader: leaders.get(&p).copied().unwrap_or(-1),
                offset: offsets.get(&p).copied().unwrap_or(0),
                high_watermark: -1,
            })
            .collect())
    }

    fn run(&mut self, client: &mut Client, stop: &AtomicBool) -> CliResult {
        let mut last_record = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            if self.args.max_messages.is_some_and(|max| self.consumed >= max) {
                break;
            }
            if self.args.timeout.is_some_and(|t| last_record.elapsed() >= t) {
                break;
            }
            if self.args.exit_at_end && self.at_end() {
                break;
            }
            self.keep_membership(client)?;
            if self.positions.is_empty() {
                // A group member without partitions only keeps its place in the group.
                std::thread::sleep(FETCH_WAIT);
                continue;
            }
            let printed = self.fetch_once(client)?;
            if printed.is_none() {
                break; // stdout was closed
            }
            if printed > Some(0) {
                last_record = Instant::now();
            }
        }
        Ok(())
    }

    fn at_end(&self) -> bool {
        self.positions.iter().all(|p| p.high_watermark >= 0 && p.offset >= p.high_watermark)
    }

    /// Heartbeats, commits when due, and follows rebalances.
    fn keep_membership(&mut self, client: &mut Client) -> CliResult {
        let Some(member) = self.member.as_mut() else { return Ok(()) };
        if member.heartbeat(client)? == Heartbeat::Rebalance {
            // What was printed is committed before the partitions may go to another member.
            if let Err(e) = self.commit(client) {
                eprintln!("pinion: warning: {}", e.0);
            }
            let member = self.member.as_mut().expect("checked above");
            member.rejoin(client)?;
            self.take_assignment(client)?;
        } else if self.last_commit.elapsed() >= COMMIT_INTERVAL {
            self.commit(client)?;
        }
        Ok(())
    }

    /// One fetch from each leader. Returns the records printed, or `None` if stdout closed.
    fn fetch_once(&mut self, client: &mut Client) -> Result<Option<u64>, Failure> {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        for p in &self.positions {
            by_leader.entry(p.leader).or_default().push((p.partition, p.offset));
        }
        let wait = if by_leader.len() > 1 { FETCH_WAIT / 5 } else { FETCH_WAIT };
        let mut printed = 0;
        let mut refresh = false;
        for (leader, wanted) in by_leader {
            if leader < 0 {
                refresh = true;
                continue;
            }
            for fetched in consumer::fetch(client, leader, &self.args.topic, &wanted, wait)? {
                let Some(i) = self.positions.iter().position(|p| p.partition == fetched.partition) else {
                    continue;
                };
                match fetched.error {
                    0 => {}
                    codes::OFFSET_OUT_OF_RANGE => {
                        // OFFSET_OUT_OF_RANGE: start over where --from-beginning says.
                        let start = if self.args.from_beginning { Start::Earliest } else { Start::Latest };
                        let reset = self.start_positions(client, &[fetched.partition], start)?.remove(0);
                        eprintln!(
                            "pinion: offset {} of {}/{} is out of range; continuing at {}",
                            self.positions[i].offset, self.args.topic, fetched.partition, reset.offset
                        );
                        self.positions[i].offset = reset.offset;
                        continue;
                    }
                    codes::UNKNOWN_TOPIC_OR_PARTITION
                    | codes::LEADER_NOT_AVAILABLE
                    | codes::NOT_LEADER_OR_FOLLOWER
                    | codes::FENCED_LEADER_EPOCH
                    | codes::UNKNOWN_LEADER_EPOCH => {
                        // The leader moved: the metadata is stale.
                        refresh = true;
                        continue;
                    }
                    code => {
                        ClientError::check(code, None, || {
                            format!("fetching {}/{}", self.args.topic, fetched.partition)
                        })?;
                    }
                }
                let position = &mut self.positions[i];
                position.high_watermark = fetched.high_watermark;
                for record in &fetched.records {
                    if self.args.max_messages.is_some_and(|max| self.consumed >= max) {
                        break;
                    }
                    if !self.printer.print(&self.args.topic, record) {
                        return Ok(None);
                    }
                    position.offset = record.offset + 1;
                    self.consumed += 1;
                    printed += 1;
                }
                if self.args.max_messages.is_none_or(|max| self.consumed < max) {
                    position.offset = position.offset.max(fetched.next_offset);
                }
            }
        }
        if !self.printer.flush() {
            return Ok(None);
        }
        if refresh {
            std::thread::sleep(METADATA_BACKOFF);
            let leaders = self.leaders(client)?;
            for p in &mut self.positions {
                p.leader = leaders.get(&p.partition).copied().unwrap_or(-1);
            }
        }
        Ok(Some(printed))
    }

    /// Commits the positions that moved since the last commit.
    fn commit(&mut self, client: &mut Client) -> CliResult {
        let Some(member) = &self.member else { return Ok(()) };
        let changed: Vec<(String, i32, i64)> = self
            .positions
            .iter()
            .filter(|p| self.committed.get(&p.partition) != Some(&p.offset))
            .map(|p| (self.args.topic.clone(), p.partition, p.offset))
            .collect();
        self.last_commit = Instant::now();
        if changed.is_empty() {
            return Ok(());
        }
        member.commit(client, &changed)?;
        for (_, p, o) in changed {
            self.committed.insert(p, o);
        }
        Ok(())
    }

    /// Commits and leaves the group, if in one.
    fn close(&mut self, client: &mut Client) -> CliResult {
        if self.member.is_none() {
            return Ok(());
        }
        let committed = self.commit(client);
        let member = self.member.take().expect("checked above");
        let left = member.leave(client).map_err(Failure::from);
        committed.and(left)
    }
}

/// Writes records to stdout in the chosen format.
struct Printer {
    out: std::io::BufWriter<std::io::Stdout>,
    style: Style,
}

enum Style {
    Json,
    Template(Vec<Piece>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
    KeyLength,
    ValueLength,
}

impl Printer {
    fn new(args: &ConsumeArgs) -> Result<Printer, Failure> {
        let style = if args.json {
            Style::Json
        } else if let Some(template) = &args.format {
            Style::Template(parse_template(template)?)
        } else {
            Style::Template(default_template(args))
        };
        Ok(Printer { out: std::io::BufWriter::with_capacity(64 << 10, std::io::stdout()), style })
    }

    /// Writes one record; false once stdout is closed.
    fn print(&mut self, topic: &str, r: &ConsumedRecord) -> bool {
        let mut line = Vec::new();
        match &self.style {
            Style::Json => {
                let headers: serde_json::Map<String, serde_json::Value> =
                    r.headers.iter().map(|(k, v)| (k.clone(), bytes_json(v.as_deref()))).collect();
                let doc = json!({
                    "topic": topic,
                    "partition": r.partition,
                    "offset": r.offset,
                    "timestamp": r.timestamp_ms,
                    "timestamp_type": if r.log_append_time { "LogAppendTime" } else { "CreateTime" },
                    "key": bytes_json(r.key.as_deref()),
                    "value": bytes_json(r.value.as_deref()),
                    "headers": headers,
                });
                line.extend_from_slice(doc.to_string().as_bytes());
                line.push(b'\n');
            }
            Style::Template(pieces) => render(pieces, topic, r, &mut line),
        }
        self.out.write_all(&line).is_ok()
    }

    fn flush(&mut self) -> bool {
        self.out.flush().is_ok()
    }
}

/// The Kafka console consumer's layout: the fields asked for, then the value, tab-separated.
fn default_template(args: &ConsumeArgs) -> Vec<Piece> {
    let sep = Piece::Text(args.separator.as_bytes().to_vec());
    let mut pieces = Vec::new();
    let mut field = |label: &str, piece: Piece| {
        pieces.push(Piece::Text(label.as_bytes().to_vec()));
        pieces.push(piece);
        pieces.push(sep.clone());
    };
    if args.print_timestamp {
        field("CreateTime:", Piece::Timestamp);
    }
    if args.print_partition {
        field("Partition:", Piece::Partition);
    }
    if args.print_offset {
        field("Offset:", Piece::Offset);
    }
    if args.print_headers {
        field("", Piece::Headers);
    }
    if args.print_key {
        field("", Piece::Key);
    }
    pieces.push(Piece::Value);
    pieces.push(Piece::Text(b"\n".to_vec()));
    pieces.retain(|p| p != &Piece::Text(Vec::new()));
    pieces
}

fn parse_template(template: &str) -> Result<Vec<Piece>, Failure> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('h') => Piece::Headers,
                Some('T') => Piece::Timestamp,
                Some('K') => Piece::KeyLength,
                Some('S') => Piece::ValueLength,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => {
                    let shown = other.map_or_else(|| "%".to_string(), |c| format!("%{c}"));
                    return Err(Failure(format!("unknown {shown:?} in --format (see --help)")));
                }
            },
            '\\' => {
                match chars.next() {
                    Some('n') => text.push(b'\n'),
                    Some('t') => text.push(b'\t'),
                    Some('r') => text.push(b'\r'),
                    Some('\\') => text.push(b'\\'),
                    Some(other) => {
                        text.push(b'\\');
                        text.extend_from_slice(other.to_string().as_bytes());
                    }
                    None => text.push(b'\\'),
                }
                continue;
            }
            c => {
                let mut buf = [0u8; 4];
                text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn render(pieces: &[Piece], topic: &str, r: &ConsumedRecord, out: &mut Vec<u8>) {
    let or_null = |b: &Option<bytes::Bytes>, out: &mut Vec<u8>| match b {
        Some(b) => out.extend_from_slice(b),
        None => out.extend_from_slice(b"null"),
    };
    let length = |b: &Option<bytes::Bytes>| b.as_ref().map_or(-1, |b| b.len() as i64);
    for piece in pieces {
        match piece {
            Piece::Text(t) => out.extend_from_slice(t),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Key => or_null(&r.key, out),
            Piece::Value => or_null(&r.value, out),
            Piece::Timestamp => out.extend_from_slice(r.timestamp_ms.to_string().as_bytes()),
            Piece::KeyLength => out.extend_from_slice(length(&r.key).to_string().as_bytes()),
            Piece::ValueLength => out.extend_from_slice(length(&r.value).to_string().as_bytes()),
            Piece::Headers if r.headers.is_empty() => out.extend_from_slice(b"NO_HEADERS"),
            Piece::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b':');
                    or_null(v, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn record() -> ConsumedRecord {
        ConsumedRecord {
            partition: 2,
            offset: 41,
            timestamp_ms: 1000,
            log_append_time: false,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![("h".into(), Some(Bytes::from_static(b"x"))), ("n".into(), None)],
        }
    }

    #[test]
    fn templates_render_every_field() {
        let pieces = parse_template("%t/%p@%o %k=%v [%h] %T %K %S 100%%\\n").unwrap();
        let mut out = Vec::new();
        render(&pieces, "orders", &record(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "orders/2@41 k=v [h:x,n:null] 1000 1 1 100%\n");
        assert!(parse_template("%q").is_err());
    }

    #[test]
    fn default_layout_is_kafkas() {
        let args = ConsumeArgs {
            topic: "t".into(),
            from_beginning: false,
            group: None,
            partition: vec![],
            offset: None,
            max_messages: None,
            timeout: None,
            exit_at_end: false,
            format: None,
            print_key: true,
            print_headers: false,
            print_partition: true,
            print_offset: true,
            print_timestamp: false,
            separator: "\t".into(),
            json: false,
            bootstrap: crate::cli::Bootstrap { bootstrap_server: String::new() },
        };
        let mut out = Vec::new();
        render(&default_template(&args), "t", &record(), &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "Partition:2\tOffset:41\tk\tv\n");
    }

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("earliest"), Ok(Start::Earliest));
        assert_eq!(parse_start("latest"), Ok(Start::Latest));
        assert_eq!(parse_start("42"), Ok(Start::At(42)));
        assert_eq!(parse_start("-10"), Ok(Start::BeforeEnd(10)));
        assert!(parse_start("soon").is_err());
    }
}
