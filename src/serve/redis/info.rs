//! `INFO` and `COMMAND`: what client libraries ask a server about itself.

use super::commands::{Class, COMMANDS};
use super::reply::Reply;
use super::server::{Shared, Stats};
use super::session::REDIS_VERSION;
use redis_protocol::bytes::Bytes;
use std::fmt::Write;

/// The `INFO` text for `section` (`None`, `default`, `all` or `everything`: every section).
pub fn info(shared: &Shared, section: Option<&[u8]>) -> String {
    let all = matches!(section, None | Some(b"default" | b"all" | b"everything"));
    let wants = |name: &str| all || section == Some(name.as_bytes());
    let stats = &shared.stats;
    let config = &shared.config;
    let mut out = String::new();
    // Writing to a String cannot fail.
    if wants("server") {
        let _ = write!(
            out,
            "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
             segstore_version:{}\r\nos:{}\r\narch_bits:{}\r\nprocess_id:{}\r\nrun_id:{}\r\n\
             uptime_in_seconds:{}\r\nsegstore_store:{}\r\nsegstore_prefix:{}\r\n\r\n",
            env!("CARGO_PKG_VERSION"),
            std::env::consts::OS,
            usize::BITS,
            std::process::id(),
            shared.run_id,
            shared.started.elapsed().as_secs(),
            shared.store.dir().display(),
            shared.keys.prefix(),
        );
    }
    if wants("clients") {
        let _ = write!(
            out,
            "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\nwatching_keys:{}\r\n\
             segstore_idle_timeout_seconds:{}\r\nsegstore_request_timeout_seconds:{}\r\n\
             segstore_max_bulk_len:{}\r\nsegstore_max_args:{}\r\nsegstore_max_transaction_bytes:{}\r\n\r\n",
            Stats::get(&stats.connected_clients),
            config.max_clients,
            shared.watched_keys(),
            config.idle_timeout.map_or(0, |t| t.as_secs()),
            config.request_timeout.as_secs(),
            config.request_limits.max_bulk_len,
            config.request_limits.max_args,
            config.max_transaction_bytes,
        );
    }
    if wants("persistence") {
        let _ = write!(
            out,
            "# Persistence\r\nloading:0\r\nsegstore_log_bytes:{}\r\n\r\n",
            shared.store.log_bytes()
        );
    }
    if wants("stats") {
        let _ = write!(
            out,
            "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\n\
             rejected_connections:{}\r\nsegstore_lookups:{}\r\nsegstore_writes_committed:{}\r\n\
             segstore_key_ops_applied:{}\r\nsegstore_watch_conflicts:{}\r\nsegstore_write_errors:{}\r\n\
             segstore_protocol_errors:{}\r\nsegstore_timed_out_connections:{}\r\n\
             segstore_auth_failures:{}\r\n\r\n",
            Stats::get(&stats.connections_received),
            Stats::get(&stats.commands_processed),
            Stats::get(&stats.rejected_connections),
            Stats::get(&stats.lookups),
            Stats::get(&stats.writes_committed),
            Stats::get(&stats.key_ops_applied),
            Stats::get(&stats.watch_conflicts),
            Stats::get(&stats.write_errors),
            Stats::get(&stats.protocol_errors),
            Stats::get(&stats.timed_out),
            Stats::get(&stats.auth_failures),
        );
    }
    if wants("replication") {
        out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
    }
    if wants("keyspace") {
        let snapshot = shared.store.snapshot();
        let _ = write!(
            out,
            "# Keyspace\r\nsegstore_segments:{}\r\n\r\n",
            snapshot.segment_count()
        );
    }
    out
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND DOCS`, `COMMAND INFO name...`: enough for clients
/// that ask on connect.
pub fn command(args: &[Bytes]) -> Reply {
    let sub = args
        .get(1)
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    let describe = |name: &str| {
        COMMANDS.iter().find(|s| s.name == name).map(|spec| {
            let flag = match spec.class {
                Class::Write => "write",
                Class::Read => "readonly",
                Class::Connection | Class::Transaction => "fast",
            };
            let (first, last) = match spec.name {
                "exists" | "del" | "unlink" | "watch" => (1, -1),
                _ if spec.class == Class::Read || spec.class == Class::Write => (1, 1),
                _ => (0, 0),
            };
            Reply::Array(vec![
                Reply::text(spec.name),
                Reply::Int(i64::from(spec.arity)),
                Reply::Set(vec![Reply::Status(flag)]),
                Reply::Int(first),
                Reply::Int(last),
                Reply::Int(i64::from(first != 0)),
            ])
        })
    };
    match sub.as_slice() {
        b"" => Reply::Array(COMMANDS.iter().filter_map(|s| describe(s.name)).collect()),
        b"count" => Reply::Int(COMMANDS.len() as i64),
        b"docs" => Reply::Map(Vec::new()),
        b"info" => Reply::Array(
            args.get(2..)
                .unwrap_or_default()
                .iter()
                .map(|name| {
                    let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                    describe(&name).unwrap_or(Reply::Nil)
                })
                .collect(),
        ),
        _ => Reply::Error(format!(
            "ERR unknown subcommand '{}'. Try COMMAND HELP.",
            super::commands::printable(&sub, 64)
        )),
    }
}
