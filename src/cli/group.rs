//! `pinion group list|describe|delete|reset-offsets`: kafka-consumer-groups.sh.

use std::collections::{BTreeMap, BTreeSet};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{parse_timestamp, print_described, print_json, Table};
use super::{CliResult, Connect, Failure};
use crate::client::admin::{self, OffsetSpec};
use crate::client::error::codes;
use crate::client::group::{self, GroupDescription};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List consumer groups.
    List(ListArgs),
    /// Show a group's members and, per partition, its committed offset, the end offset and
    /// the lag between them.
    Describe(DescribeArgs),
    /// Delete groups and their committed offsets. A group must have no members.
    Delete(DeleteArgs),
    /// Move a group's committed offsets. Shows the new offsets; changes nothing unless
    /// --execute is given. The group must have no members.
    ResetOffsets(ResetArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Groups to describe.
    #[arg(required = true, value_name = "GROUP")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Groups to delete.
    #[arg(required = true, value_name = "GROUP")]
    pub groups: Vec<String>,
    #[command(flatten)]
    pub connect: Connect,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// The group whose offsets move.
    pub group: String,
    /// A topic to reset, alone (every partition) or with partitions: `orders` or `orders:0,2`.
    /// Repeatable.
    #[arg(short, long = "topic", value_name = "TOPIC[:PARTITIONS]", required_unless_present = "all_topics")]
    pub topics: Vec<String>,
    /// Reset every topic the group has committed offsets for.
    #[arg(long, conflicts_with = "topics")]
    pub all_topics: bool,
    #[command(flatten)]
    pub target: Target,
    /// Commit the new offsets. Without it, they are only shown.
    #[arg(long)]
    pub execute: bool,
    /// Only show the new offsets (the default).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Where the offsets go; exactly one.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// To the start of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the end of each partition (nothing left to read).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (kept within each partition's start and end).
    #[arg(long, value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time: 2024-05-01T12:00:00Z, 2024-05-01, or
    /// milliseconds since the epoch (a time without a zone is UTC).
    #[arg(long, value_name = "TIME", value_parser = parse_timestamp)]
    pub to_datetime: Option<i64>,
    /// By this many records from the committed offset (negative: back).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub shift_by: Option<i64>,
}

pub fn run(command: GroupCommand) -> CliResult {
    match command {
        GroupCommand::List(a) => list(a),
        GroupCommand::Describe(a) => describe(a),
        GroupCommand::Delete(a) => delete(a),
        GroupCommand::ResetOffsets(a) => reset(a),
    }
}

fn list(args: ListArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let groups = group::list_groups(&mut client)?;
    if args.json {
        let out: Vec<Value> = groups
            .iter()
            .map(|g| json!({ "group": g.group, "protocol_type": g.protocol_type, "state": g.state }))
            .collect();
        print_json(&Value::Array(out));
        return Ok(());
    }
    let mut table = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE"]);
    for g in groups {
        table.row(vec![g.group, g.state, g.protocol_type]);
    }
    table.print();
    Ok(())
}

/// A group exists if it has members or committed offsets.
fn is_dead(description: &GroupDescription, committed: &BTreeMap<(String, i32), i64>) -> bool {
    description.members.is_empty()
        && committed.is_empty()
        && matches!(description.state.as_str(), "Dead" | "")
}

fn describe(args: DescribeArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let described =
        args.groups.iter().map(|name| describe_one(&mut client, name)).collect::<Result<Vec<_>, _>>()?;
    print_described(described, args.json);
    Ok(())
}

fn describe_one(client: &mut Client, name: &str) -> Result<(Value, String), Failure> {
    let description = group::describe_group(client, name)?;
    let committed = group::committed_offsets(client, name)?;
    if is_dead(&description, &committed) {
        return Err(Failure(format!("group {name:?} does not exist")));
    }
    // Partition -> its member, from the members' assignments.
    let mut owner: BTreeMap<(String, i32), &group::MemberDescription> = BTreeMap::new();
    for m in &description.members {
        for (topic, partitions) in &m.assignment {
            for &p in partitions {
                owner.insert((topic.clone(), p), m);
            }
        }
    }
    let partitions: BTreeSet<(String, i32)> = committed.keys().chain(owner.keys()).cloned().collect();
    let partitions: Vec<(String, i32)> = partitions.into_iter().collect();
    let ends = if partitions.is_empty() {
        admin::PartitionResults::new()
    } else {
        admin::list_offsets(client, &partitions, OffsetSpec::Latest)?
    };

    let mut text = format!(
        "GROUP     {}\nSTATE     {}\nPROTOCOL  {}\nMEMBERS   {}\n",
        description.group,
        description.state,
        if description.protocol.is_empty() {
            description.protocol_type.clone()
        } else {
            format!("{}/{}", description.protocol_type, description.protocol)
        },
        description.members.len()
    );
    let mut table = Table::new(&[
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ]);
    let mut rows = Vec::new();
    for key in &partitions {
        let current = committed.get(key).copied();
        let end = ends.get(key).and_then(|r| r.as_ref().ok()).map(|o| o.offset);
        let lag = match (current, end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        };
        let member = owner.get(key);
        let show = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
        table.row(vec![
            key.0.clone(),
            key.1.to_string(),
            show(current),
            show(end),
            show(lag),
            member.map_or_else(|| "-".to_string(), |m| m.member_id.clone()),
            member.map_or_else(|| "-".to_string(), |m| m.host.clone()),
            member.map_or_else(|| "-".to_string(), |m| m.client_id.clone()),
        ]);
        rows.push(json!({
            "topic": key.0,
            "partition": key.1,
            "current_offset": current,
            "log_end_offset": end,
            "lag": lag,
            "member_id": member.map(|m| m.member_id.clone()),
        }));
    }
    text.push('\n');
    if table.is_empty() {
        text.push_str("(no committed offsets and no assigned partitions)\n");
    } else {
        text.push_str(&table.render());
    }
    if !description.members.is_empty() {
        let mut members = Table::new(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
        for m in &description.members {
            members.row(vec![
                m.member_id.clone(),
                m.client_id.clone(),
                m.host.clone(),
                format_assignment(&m.assignment),
            ]);
        }
        text.push('\n');
        text.push_str(&members.render());
    }
    let doc = json!({
        "group": description.group,
        "state": description.state,
        "protocol_type": description.protocol_type,
        "protocol": description.protocol,
        "members": description.members.iter().map(|m| json!({
            "member_id": m.member_id,
            "group_instance_id": m.instance_id,
            "client_id": m.client_id,
            "host": m.host,
            "assignment": m.assignment,
        })).collect::<Vec<_>>(),
        "offsets": rows,
        "total_lag": rows.iter().filter_map(|r| r["lag"].as_i64()).sum::<i64>(),
    });
    Ok((doc, text))
}

/// `orders:0,1 payments:2`, or `-`.
fn format_assignment(assignment: &group::Assignment) -> String {
    if assignment.is_empty() {
        return "-".into();
    }
    assignment
        .iter()
        .map(|(t, ps)| format!("{t}:{}", ps.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn delete(args: DeleteArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let mut failures = Vec::new();
    for (group, result) in group::delete_groups(&mut client, &args.groups)? {
        match result {
            Ok(()) => println!("Deleted group {group:?}."),
            Err(e) if e.code() == Some(codes::GROUP_ID_NOT_FOUND) => {
                failures.push(format!("group {group:?} does not exist"))
            }
            Err(e) if e.code() == Some(codes::NON_EMPTY_GROUP) => {
                failures.push(format!("group {group:?} still has members; stop them before deleting it"))
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    for f in failures.iter().skip(1) {
        eprintln!("pinion: {f}");
    }
    match failures.into_iter().next() {
        None => Ok(()),
        Some(first) => Err(Failure(first)),
    }
}

/// `orders` or `orders:0,2`.
fn parse_topic_partitions(s: &str) -> Result<(String, Option<Vec<i32>>), Failure> {
    match s.split_once(':') {
        None => Ok((s.to_string(), None)),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| p.trim().parse::<i32>().map_err(|_| Failure(format!("bad partition list in {s:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((topic.to_string(), Some(partitions)))
        }
    }
}

fn reset(args: ResetArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let description = group::describe_group(&mut client, &args.group)?;
    let committed = group::committed_offsets(&mut client, &args.group)?;
    if !description.members.is_empty() {
        let message = format!(
            "group {:?} has {} active member(s) (state {}): offsets can only be reset while it has none",
            args.group,
            description.members.len(),
            description.state
        );
        if args.execute {
            return Err(Failure(message));
        }
        eprintln!("pinion: warning: {message}");
    }

    let mut partitions: BTreeSet<(String, i32)> = BTreeSet::new();
    if args.all_topics {
        partitions.extend(committed.keys().cloned());
    }
    for spec in &args.topics {
        let (topic, chosen) = parse_topic_partitions(spec)?;
        let info = client.topics(std::slice::from_ref(&topic), false)?.remove(0);
        let all: Vec<i32> = info.partitions.iter().map(|p| p.index).collect();
        let chosen = chosen.unwrap_or_else(|| all.clone());
        if let Some(p) = chosen.iter().find(|p| !all.contains(p)) {
            return Err(Failure(format!("topic {topic:?} has no partition {p}")));
        }
        partitions.extend(chosen.into_iter().map(|p| (topic.clone(), p)));
    }
    if partitions.is_empty() {
        return Err(Failure(format!("group {:?} has no committed offsets to reset", args.group)));
    }
    let partitions: Vec<(String, i32)> = partitions.into_iter().collect();
    let planned = plan(&mut client, &args.target, &partitions, &committed)?;

    if args.execute {
        let offsets: Vec<(String, i32, i64)> = planned.iter().map(|(k, &o)| (k.0.clone(), k.1, o)).collect();
        group::commit_offsets(&mut client, &args.group, -1, "", &offsets)?;
    }
    if args.json {
        let rows: Vec<Value> = planned
            .iter()
            .map(|((t, p), o)| {
                json!({
                    "topic": t,
                    "partition": p,
                    "current_offset": committed.get(&(t.clone(), *p)),
                    "new_offset": o,
                })
            })
            .collect();
        print_json(&json!({ "group": args.group, "executed": args.execute, "offsets": rows }));
    } else {
        let mut table = Table::new(&["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"]);
        for ((t, p), o) in &planned {
            let current = committed.get(&(t.clone(), *p)).map_or_else(|| "-".to_string(), |c| c.to_string());
            table.row(vec![args.group.clone(), t.clone(), p.to_string(), current, o.to_string()]);
        }
        table.print();
    }
    if !args.execute {
        eprintln!("pinion: dry run: nothing was changed; add --execute to commit these offsets");
    }
    Ok(())
}

/// The new offset of each partition, kept within the partition's start and end.
fn plan(
    client: &mut Client,
    target: &Target,
    partitions: &[(String, i32)],
    committed: &BTreeMap<(String, i32), i64>,
) -> Result<BTreeMap<(String, i32), i64>, Failure> {
    let lookup = |client: &mut Client, spec| -> Result<BTreeMap<(String, i32), i64>, Failure> {
        let mut out = BTreeMap::new();
        for (k, r) in admin::list_offsets(client, partitions, spec)? {
            out.insert(k, r?.offset);
        }
        Ok(out)
    };
    let earliest = lookup(client, OffsetSpec::Earliest)?;
    let latest = lookup(client, OffsetSpec::Latest)?;
    let at_time = match target.to_datetime {
        Some(t) => lookup(client, OffsetSpec::Timestamp(t))?,
        None => BTreeMap::new(),
    };
    let mut out = BTreeMap::new();
    for key in partitions {
        let (Some(&start), Some(&end)) = (earliest.get(key), latest.get(key)) else {
            return Err(Failure(format!("the broker did not report the offsets of {}/{}", key.0, key.1)));
        };
        let wanted = if target.to_earliest {
            start
        } else if target.to_latest {
            end
        } else if let Some(o) = target.to_offset {
            o
        } else if target.to_datetime.is_some() {
            // No record at or after the time: the end.
            at_time.get(key).copied().filter(|&o| o >= 0).unwrap_or(end)
        } else if let Some(n) = target.shift_by {
            let Some(&current) = committed.get(key) else {
                return Err(Failure(format!(
                    "{}/{} has no committed offset to shift; use another --to-* option",
                    key.0, key.1
                )));
            };
            current.saturating_add(n)
        } else {
            unreachable!("clap requires one target");
        };
        out.insert(key.clone(), wanted.clamp(start, end.max(start)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_partition_specs_parse() {
        assert_eq!(parse_topic_partitions("orders").unwrap(), ("orders".to_string(), None));
        assert_eq!(parse_topic_partitions("orders:0,2").unwrap(), ("orders".to_string(), Some(vec![0, 2])));
        assert!(parse_topic_partitions("orders:x").is_err());
    }
}
