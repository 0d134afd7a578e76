//! `pinion topic create|list|describe|alter|delete`: kafka-topics.sh.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{print_described, print_json, Table};
use super::{parse_key_value, CliResult, Connect, Failure};
use crate::client::admin::{self, config_source_name, NewTopic, OffsetSpec, Resource};
use crate::client::error::codes;
use crate::client::{Client, ClientError, TopicInfo};

#[derive(Subcommand, Debug)]
pub enum TopicCommand {
    /// Create topics.
    Create(CreateArgs),
    /// List topics with their partition and replica counts.
    List(ListArgs),
    /// Show topics: partitions with leader, replicas and start/end offsets, and configs.
    Describe(DescribeArgs),
    /// Add partitions to a topic or change its configs.
    Alter(AlterArgs),
    /// Delete topics and all their records.
    Delete(DeleteArgs),
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// Names of the topics to create.
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Partitions per topic (default: the broker's num.partitions).
    #[arg(short, long)]
    pub partitions: Option<i32>,
    /// Replicas per partition (default: the broker's default.replication.factor).
    #[arg(short, long)]
    pub replication_factor: Option<i16>,
    /// A topic config, e.g. `-c retention.ms=86400000`. Repeatable.
    #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Succeed when a topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    /// Only check that the topics could be created.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// Also list internal topics such as __consumer_offsets.
    #[arg(short, long)]
    pub internal: bool,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct DescribeArgs {
    /// Topics to describe.
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Show every config, not only the ones set on the topic.
    #[arg(short, long)]
    pub all_configs: bool,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct AlterArgs {
    /// The topic to change.
    pub topic: String,
    /// The new partition count (partitions can be added, never removed).
    #[arg(short, long)]
    pub partitions: Option<i32>,
    /// Set a topic config, e.g. `-c retention.ms=3600000`. Repeatable.
    #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// Remove a topic config, so the broker default applies again. Repeatable.
    #[arg(short, long = "delete-config", value_name = "KEY")]
    pub delete_configs: Vec<String>,
    #[command(flatten)]
    pub connect: Connect,
}

#[derive(Args, Debug)]
pub struct DeleteArgs {
    /// Topics to delete.
    #[arg(required = true, value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Succeed when a topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub fn run(command: TopicCommand) -> CliResult {
    match command {
        TopicCommand::Create(a) => create(a),
        TopicCommand::List(a) => list(a),
        TopicCommand::Describe(a) => describe(a),
        TopicCommand::Alter(a) => alter(a),
        TopicCommand::Delete(a) => delete(a),
    }
}

fn create(args: CreateArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let wanted: Vec<NewTopic> = args
        .topics
        .iter()
        .map(|name| NewTopic {
            name: name.clone(),
            partitions: args.partitions.unwrap_or(-1),
            replication_factor: args.replication_factor.unwrap_or(-1),
            configs: args.configs.clone(),
        })
        .collect();
    let results = admin::create_topics(&mut client, &wanted, args.dry_run)?;
    let mut failures = Vec::new();
    let mut table = Table::new(&["TOPIC", "STATUS"]);
    let mut json = Vec::new();
    for (name, result) in results {
        let status = match &result {
            Ok(_) if args.dry_run => "valid".to_string(),
            Ok(_) => "created".to_string(),
            Err(e) if args.if_not_exists && e.code() == Some(codes::TOPIC_ALREADY_EXISTS) => {
                "exists".to_string()
            }
            Err(e) => {
                failures.push(e.to_string());
                e.to_string()
            }
        };
        let mut entry = json!({ "topic": name, "status": status });
        if let Ok(created) = &result {
            entry["partitions"] = json!(created.partitions);
            entry["replication_factor"] = json!(created.replication_factor);
            if !created.id.is_nil() {
                entry["topic_id"] = json!(created.id.to_string());
            }
        }
        json.push(entry);
        table.row(vec![name, status]);
    }
    if args.json {
        print_json(&Value::Array(json));
    } else {
        table.print();
    }
    finish(failures)
}

/// One line for one failure, a count for several (each was shown in the table already).
fn finish(failures: Vec<String>) -> CliResult {
    match failures.len() {
        0 => Ok(()),
        1 => Err(Failure(failures.into_iter().next().expect("one failure"))),
        n => Err(Failure(format!("{n} topics failed"))),
    }
}

fn list(args: ListArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let topics: Vec<TopicInfo> =
        client.all_topics()?.into_iter().filter(|t| args.internal || !t.internal).collect();
    if args.json {
        let out: Vec<Value> = topics
            .iter()
            .map(|t| {
                json!({
                    "topic": t.name,
                    "topic_id": t.id.to_string(),
                    "partitions": t.partitions.len(),
                    "replication_factor": replication_factor(t),
                    "internal": t.internal,
                })
            })
            .collect();
        print_json(&Value::Array(out));
        return Ok(());
    }
    let mut table = Table::new(&["NAME", "PARTITIONS", "REPLICAS"]);
    for t in &topics {
        table.row(vec![t.name.clone(), t.partitions.len().to_string(), replication_factor(t).to_string()]);
    }
    table.print();
    Ok(())
}

fn replication_factor(t: &TopicInfo) -> usize {
    t.partitions.iter().map(|p| p.replicas.len()).max().unwrap_or(0)
}

fn describe(args: DescribeArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let topics = client.topics(&args.topics, false)?;
    let described = topics
        .iter()
        .map(|t| describe_one(&mut client, t, args.all_configs))
        .collect::<Result<Vec<_>, _>>()?;
    print_described(described, args.json);
    Ok(())
}

/// One topic as JSON and as text.
fn describe_one(client: &mut Client, t: &TopicInfo, all_configs: bool) -> Result<(Value, String), Failure> {
    let parts: Vec<(String, i32)> = t.partitions.iter().map(|p| (t.name.clone(), p.index)).collect();
    let starts = admin::list_offsets(client, &parts, OffsetSpec::Earliest)?;
    let ends = admin::list_offsets(client, &parts, OffsetSpec::Latest)?;
    let offset = |results: &admin::PartitionResults<admin::ListedOffset>, p: i32| {
        results.get(&(t.name.clone(), p)).and_then(|r| r.as_ref().ok()).map(|o| o.offset)
    };
    let configs = match admin::describe_configs(client, &Resource::Topic(t.name.clone()), None) {
        Ok(c) => c,
        // Brokers without DescribeConfigs still describe partitions.
        Err(ClientError::Unsupported { .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let shown: Vec<_> = configs.iter().filter(|c| all_configs || c.source == 1).collect();

    let mut text = format!(
        "NAME        {}\nTOPIC ID    {}\nPARTITIONS  {}\nREPLICAS    {}\nINTERNAL    {}\n",
        t.name,
        t.id,
        t.partitions.len(),
        replication_factor(t),
        t.internal
    );
    text.push_str(if all_configs {
        "\nCONFIGS\n"
    } else {
        "\nCONFIGS (set on the topic; --all-configs for all)\n"
    });
    let mut table = Table::new(&["KEY", "VALUE", "SOURCE"]);
    for c in &shown {
        let value = if c.sensitive { "(sensitive)".to_string() } else { c.value.clone().unwrap_or_default() };
        table.row(vec![c.name.clone(), value, config_source_name(c.source).to_string()]);
    }
    if table.is_empty() {
        text.push_str("(none)\n");
    } else {
        text.push_str(&table.render());
    }
    text.push_str("\nPARTITIONS\n");
    let mut table =
        Table::new(&["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "START-OFFSET", "END-OFFSET"]);
    let show = |v: Option<i64>| v.map_or_else(|| "-".to_string(), |o| o.to_string());
    let list = |v: &[i32]| format!("[{}]", v.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(","));
    for p in &t.partitions {
        table.row(vec![
            p.index.to_string(),
            p.leader.to_string(),
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            show(offset(&starts, p.index)),
            show(offset(&ends, p.index)),
        ]);
    }
    text.push_str(&table.render());

    let doc = json!({
        "topic": t.name,
        "topic_id": t.id.to_string(),
        "internal": t.internal,
        "replication_factor": replication_factor(t),
        "partitions": t.partitions.iter().map(|p| json!({
            "partition": p.index,
            "leader": p.leader,
            "leader_epoch": p.leader_epoch,
            "replicas": p.replicas,
            "isr": p.isr,
            "start_offset": offset(&starts, p.index),
            "end_offset": offset(&ends, p.index),
        })).collect::<Vec<_>>(),
        "configs": shown.iter().map(|c| json!({
            "name": c.name,
            "value": if c.sensitive { Value::Null } else { json!(c.value) },
            "source": config_source_name(c.source),
            "read_only": c.read_only,
            "sensitive": c.sensitive,
        })).collect::<Vec<_>>(),
    });
    Ok((doc, text))
}

fn alter(args: AlterArgs) -> CliResult {
    if args.partitions.is_none() && args.configs.is_empty() && args.delete_configs.is_empty() {
        return Err(Failure("nothing to change: give --partitions, --config or --delete-config".into()));
    }
    let mut client = args.connect.client()?;
    let topic = client.topics(std::slice::from_ref(&args.topic), false)?.remove(0);
    if let Some(count) = args.partitions {
        let current = topic.partitions.len() as i32;
        if count < current {
            return Err(Failure(format!(
                "topic {:?} has {current} partitions; partitions can be added but not removed",
                args.topic
            )));
        }
        if count > current {
            admin::create_partitions(&mut client, &args.topic, count)?;
            println!("Topic {:?} now has {count} partitions.", args.topic);
        }
    }
    if !args.configs.is_empty() || !args.delete_configs.is_empty() {
        let resource = Resource::Topic(args.topic.clone());
        admin::alter_configs(&mut client, &resource, &args.configs, &args.delete_configs, false)?;
        for (k, v) in &args.configs {
            println!("Set {k}={v} on topic {:?}.", args.topic);
        }
        for k in &args.delete_configs {
            println!("Removed {k} from topic {:?}.", args.topic);
        }
    }
    Ok(())
}

fn delete(args: DeleteArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let results = admin::delete_topics(&mut client, &args.topics)?;
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => println!("Deleted topic {name:?}."),
            Err(e) if args.if_exists && e.code() == Some(codes::UNKNOWN_TOPIC_OR_PARTITION) => {
                println!("Topic {name:?} does not exist.")
            }
            Err(e) if e.code() == Some(codes::UNKNOWN_TOPIC_OR_PARTITION) => {
                failures.push(ClientError::UnknownTopic(name).to_string())
            }
            Err(e) => failures.push(e.to_string()),
        }
    }
    for f in failures.iter().skip(1) {
        eprintln!("pinion: {f}");
    }
    match failures.len() {
        0 => Ok(()),
        _ => Err(Failure(failures.remove(0))),
    }
}
