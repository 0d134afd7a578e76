//! The `pinion` command line besides `serve`: topics, console producer and consumer, groups,
//! configs, cluster information (all over the Kafka protocol, against any Kafka broker) and an
//! offline dump of segment files. One module per subcommand family, each with its arguments
//! and its run function side by side.

pub mod cluster;
pub mod config;
pub mod consume;
pub mod dump_log;
pub mod group;
pub mod output;
pub mod produce;
pub mod topic;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::client::{Client, ClientError};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send lines read from stdin as records, one record per line.
    Produce(produce::ProduceArgs),
    /// Print the records of a topic, alone or as a member of a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe and delete consumer groups; reset their committed offsets.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Show and change topic and broker configs.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Show the brokers, the controller and the API versions of the cluster.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Print the batches of a segment file (.log) or the entries of an index file, offline.
    DumpLog(dump_log::DumpLogArgs),
}

/// Where the cluster is.
#[derive(Args, Debug, Clone)]
pub struct Bootstrap {
    /// Broker(s) to start from, as host:port (several separated by commas).
    #[arg(
        short = 'b',
        long,
        visible_alias = "broker-list",
        value_name = "HOST:PORT",
        default_value = "127.0.0.1:9092"
    )]
    pub bootstrap_server: String,
}

/// Where the cluster is and how long to wait for it.
#[derive(Args, Debug, Clone)]
pub struct Connect {
    #[command(flatten)]
    pub bootstrap: Bootstrap,
    /// Give up on a broker that does not answer within this long: 500ms, 10s, 2m (a bare
    /// number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
}

impl Connect {
    pub fn client(&self) -> Result<Client, Failure> {
        Ok(Client::connect(&self.bootstrap.bootstrap_server, self.timeout)?)
    }
}

/// A command that did not do what was asked: the one line to print before exiting with 1.
#[derive(Debug)]
pub struct Failure(pub String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        Failure(e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure(e.to_string())
    }
}

pub type CliResult = Result<(), Failure>;

pub fn run(command: Command) -> ExitCode {
    // Every command but the consumer dies quietly when its reader goes away (`| head`), as
    // Unix tools do; the consumer handles it itself, to commit its offsets first.
    if !matches!(command, Command::Consume(_)) {
        // SAFETY: restoring the default action of a signal has no preconditions.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let result = match command {
        Command::Topic(c) => topic::run(c),
        Command::Produce(a) => produce::run(a),
        Command::Consume(a) => consume::run(a),
        Command::Group(c) => group::run(c),
        Command::Config(c) => config::run(c),
        Command::Cluster(c) => cluster::run(c),
        Command::DumpLog(a) => dump_log::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("pinion: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `500ms`, `10s`, `2m`, `1h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 500ms, 10s or 2m"))?;
    let ms = match unit.trim() {
        "ms" => value,
        "" | "s" => value * 1000.0,
        "m" | "min" => value * 60_000.0,
        "h" => value * 3_600_000.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}: use ms, s, m or h")),
    };
    if !(ms.is_finite() && ms >= 0.0) {
        return Err(format!("{s:?} is not a duration"));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

/// Reads `key=value`.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn key_values_parse() {
        assert_eq!(parse_key_value("retention.ms=1000"), Ok(("retention.ms".into(), "1000".into())));
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn every_command_parses_with_its_help_intact() {
        use clap::CommandFactory;
        crate::config::Cli::command().debug_assert();
        let parsed = crate::config::Cli::try_parse_from(["pinion", "topic", "create", "t", "-p", "3"]);
        assert!(parsed.is_ok());
    }
}
