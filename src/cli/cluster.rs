//! `pinion cluster info`: the brokers, the controller and the API versions served
//! (kafka-broker-api-versions.sh and kafka-cluster.sh in one).

use clap::{Args, Subcommand};
use serde_json::json;

use super::output::{print_json, print_text, Table};
use super::{CliResult, Connect};
use crate::client::connection::api_name;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Show the cluster id, the brokers, the controller and the API versions a broker serves.
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub connect: Connect,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: ClusterCommand) -> CliResult {
    match command {
        ClusterCommand::Info(a) => info(a),
    }
}

fn info(args: InfoArgs) -> CliResult {
    let mut client = args.connect.client()?;
    let cluster = client.cluster()?;
    let conn = client.any()?;
    let addr = conn.addr().to_string();
    let mut served: Vec<(i16, (i16, i16))> = conn.served().iter().map(|(k, v)| (*k, *v)).collect();
    served.sort_unstable();

    if args.json {
        let doc = json!({
            "cluster_id": cluster.cluster_id,
            "controller": cluster.controller,
            "brokers": cluster.brokers.iter().map(|b| json!({
                "id": b.id, "host": b.host, "port": b.port, "rack": b.rack,
            })).collect::<Vec<_>>(),
            "api_versions": {
                "broker": addr,
                "apis": served.iter().map(|(k, (min, max))| json!({
                    "api": api_name(*k), "key": k, "min": min, "max": max,
                })).collect::<Vec<_>>(),
            },
        });
        print_json(&doc);
        return Ok(());
    }
    let mut text = format!(
        "CLUSTER ID  {}\nCONTROLLER  {}\n\nBROKERS\n",
        cluster.cluster_id.as_deref().unwrap_or("-"),
        cluster.controller
    );
    let mut brokers = Table::new(&["ID", "HOST", "PORT", "RACK"]);
    for b in &cluster.brokers {
        let id = if b.id == cluster.controller { format!("{}*", b.id) } else { b.id.to_string() };
        brokers.row(vec![
            id,
            b.host.clone(),
            b.port.to_string(),
            b.rack.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    text.push_str(&brokers.render());
    text.push_str(&format!("\nAPI VERSIONS served by {addr}\n"));
    let mut apis = Table::new(&["API", "KEY", "MIN", "MAX"]);
    for (key, (min, max)) in &served {
        apis.row(vec![api_name(*key), key.to_string(), min.to_string(), max.to_string()]);
    }
    text.push_str(&apis.render());
    print_text(&text);
    Ok(())
}
