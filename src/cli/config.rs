//! `pinion config get|set`: kafka-configs.sh for topics and brokers.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::output::{print_json, Table};
use super::{parse_key_value, CliResult, Connect, Failure};
use crate::client::admin::{self, config_source_name, Resource};
use crate::client::Client;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Show the configs of a topic or a broker, with where each value comes from.
    Get(GetArgs),
    /// Set configs of a topic or a broker, or remove them so that the default applies again.
    Set(SetArgs),
}

/// Whose configs; exactly one.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Entity {
    /// A topic.
    #[arg(short, long, value_name = "TOPIC")]
    pub topic: Option<String>,
    /// A broker: `--broker=ID`, or `--broker` alone for the controller.
    #[arg(long, value_name = "ID", num_args = 0..=1, require_equals = true, default_missing_value = "-1")]
    pub broker: Option<i32>,
}

impl Entity {
    fn resource(&self, client: &mut Client) -> Result<Resource, Failure> {
        match (&self.topic, self.broker) {
            (Some(t), _) => Ok(Resource::Topic(t.clone())),
            (None, Some(id)) if id >= 0 => Ok(Resource::Broker(id)),
            (None, _) => {
                let cluster = client.cluster()?;
                let id = if cluster.controller >= 0 {
                    cluster.controller
                } else {
                    cluster
                        .brokers
                        .first()
                        .map(|b| b.id)
                        .ok_or_else(|| Failure("the cluster lists no broker".into()))?
                };
                Ok(Resource::Broker(id))
            }
        }
    }
}

#[derive(Args, Debug)]
pub struct GetArgs {
    #[command(flatten)]
    pub entity: Entity,
    /// Only these configs (default: all).
    #[arg(value_name = "KEY")]
    pub keys: Vec<String>,
    /// Only configs whose value is not the default.
    #[arg(long)]
    pub changed: bool,
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    #[command(flatten)]
    pub entity: Entity,
    /// Configs to set, e.g. `retention.ms=86400000`.
    #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub configs: Vec<(String, String)>,
    /// A config to remove, so that its default applies again. Repeatable.
    #[arg(short, long = "delete", value_name = "KEY")]
    pub delete: Vec<String>,
    /// Only check that the change would be accepted.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub connect: Connect,
}

pub fn run(command: ConfigCommand) -> CliResult {
    match command {
        ConfigCommand::Get(a) => get(a),
        ConfigCommand::Set(a) => set(a),
    }
}

/// DEFAULT_CONFIG.
const SOURCE_DEFAULT: i8 = 5;

fn get(args: GetArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let resource = args.entity.resource(&mut client)?;
    let keys = (!args.keys.is_empty()).then_some(args.keys.as_slice());
    let entries: Vec<_> = admin::describe_configs(&mut client, &resource, keys)?
        .into_iter()
        .filter(|e| !args.changed || e.source != SOURCE_DEFAULT)
        .collect();
    if let Some(missing) = args.keys.iter().find(|k| !entries.iter().any(|e| &e.name == *k)) {
        if !args.changed {
            return Err(Failure(format!("no config named {missing:?}")));
        }
    }
    if args.json {
        let out: Vec<Value> = entries
            .iter()
            .map(|e| {
                json!({
                    "name": e.name,
                    "value": if e.sensitive { Value::Null } else { json!(e.value) },
                    "source": config_source_name(e.source),
                    "read_only": e.read_only,
                    "sensitive": e.sensitive,
                })
            })
            .collect();
        print_json(&Value::Array(out));
        return Ok(());
    }
    let mut table = Table::new(&["KEY", "VALUE", "SOURCE", "READ-ONLY"]);
    for e in entries {
        let value =
            if e.sensitive { "(sensitive)".to_string() } else { e.value.unwrap_or_else(|| "null".into()) };
        table.row(vec![e.name, value, config_source_name(e.source).to_string(), e.read_only.to_string()]);
    }
    table.print();
    Ok(())
}

fn set(args: SetArgs) -> CliResult {
    if args.configs.is_empty() && args.delete.is_empty() {
        return Err(Failure("nothing to change: give KEY=VALUE or --delete KEY".into()));
    }
    let mut client = args.connect.client()?;
    let resource = args.entity.resource(&mut client)?;
    admin::alter_configs(&mut client, &resource, &args.configs, &args.delete, args.dry_run)?;
    let whose = match &resource {
        Resource::Topic(t) => format!("topic {t:?}"),
        Resource::Broker(id) => format!("broker {id}"),
    };
    let verb = if args.dry_run { "Would set" } else { "Set" };
    for (k, v) in &args.configs {
        println!("{verb} {k}={v} on {whose}.");
    }
    let verb = if args.dry_run { "Would remove" } else { "Removed" };
    for k in &args.delete {
        println!("{verb} {k} from {whose}.");
    }
    Ok(())
}
