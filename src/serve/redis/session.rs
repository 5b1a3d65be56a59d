//! One connection's state and its commands: authentication, protocol version, `MULTI`
//! queueing, `WATCH`, and the connection chatter that client libraries send.

use super::auth::{Access, User, DEFAULT_USER};
use super::commands::{self, check_arity, execute, unknown_command, validate_write, Class, Effect};
use super::reply::{Protocol, Reply};
use super::server::{CommitError, Shared, Stats, WatchFlag};
use redis_protocol::bytes::Bytes;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The Redis version this endpoint reports: the command set it answers is a subset of 7.2's.
pub const REDIS_VERSION: &str = "7.2.0";

/// Commands queued by `MULTI`.
#[derive(Debug, Default)]
struct Queue {
    commands: Vec<Vec<Bytes>>,
    bytes: usize,
    /// A queued command was refused: `EXEC` will discard the transaction.
    failed: bool,
}

/// What the connection does after a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum After {
    /// Read the next command.
    Continue,
    /// Send the reply, then close (`QUIT`).
    Close,
}

/// One client connection.
#[derive(Debug)]
pub struct Session {
    shared: Arc<Shared>,
    /// The client id (`CLIENT ID`).
    pub id: u64,
    /// The protocol replies are encoded in.
    pub protocol: Protocol,
    name: Option<Bytes>,
    user: Option<User>,
    queue: Option<Queue>,
    watch: Arc<WatchFlag>,
    watched: Vec<Bytes>,
}

impl Drop for Session {
    fn drop(&mut self) {
        // A connection that goes away mid-MULTI applies nothing: its queue is dropped here.
        self.shared.unwatch(&self.watched, &self.watch);
    }
}

fn lower(name: &[u8]) -> Vec<u8> {
    name.to_ascii_lowercase()
}

fn noauth() -> Reply {
    Reply::Error("NOAUTH Authentication required.".into())
}

fn wrongpass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

impl Session {
    /// A new connection.
    pub fn new(shared: Arc<Shared>) -> Session {
        let id = shared.next_client_id();
        Session {
            shared,
            id,
            protocol: Protocol::Resp2,
            name: None,
            user: None,
            queue: None,
            watch: Arc::new(WatchFlag::default()),
            watched: Vec::new(),
        }
    }

    fn authenticated(&self) -> bool {
        !self.shared.config.users.required() || self.user.is_some()
    }

    fn may_write(&self) -> bool {
        match &self.user {
            Some(user) => user.access == Access::ReadWrite,
            None => !self.shared.config.users.required(),
        }
    }

    /// Answers one command.
    pub async fn handle(&mut self, args: Vec<Bytes>) -> (Reply, After) {
        Stats::bump(&self.shared.stats.commands_processed);
        let Some(name) = args.first() else {
            return (Reply::err("empty command"), After::Continue);
        };
        let Some(spec) = commands::lookup(name) else {
            if let Some(queue) = &mut self.queue {
                queue.failed = true;
            }
            return (unknown_command(&args), After::Continue);
        };
        let lname = spec.name;
        let always_allowed = matches!(lname, "auth" | "hello" | "ping" | "quit" | "reset");
        if !always_allowed && !self.authenticated() {
            if let Some(queue) = &mut self.queue {
                queue.failed = true;
            }
            return (noauth(), After::Continue);
        }
        if let Err(reply) = check_arity(spec, args.len()) {
            if let Some(queue) = &mut self.queue {
                queue.failed = true;
            }
            return (reply, After::Continue);
        }
        // Inside MULTI every data command is queued; transaction control runs now.
        if self.queue.is_some() && matches!(spec.class, Class::Read | Class::Write) {
            return (self.enqueue(spec.class, args), After::Continue);
        }
        match spec.class {
            Class::Connection => self.connection_command(lname, &args),
            Class::Transaction => (
                self.transaction_command(lname, &args).await,
                After::Continue,
            ),
            Class::Read => {
                let mut view = self.shared.read_view();
                let mut effect = Effect::default();
                let reply = execute(&mut view, &self.shared.keys, &args, &mut effect);
                self.count(effect);
                (reply, After::Continue)
            }
            Class::Write => {
                if let Err(reply) = self.check_write(&args) {
                    return (reply, After::Continue);
                }
                let keys = self.shared.keys.clone();
                let shared = self.shared.clone();
                let reply = match shared
                    .commit(
                        || false,
                        move |view| execute(view, &keys, &args, &mut Effect::default()),
                    )
                    .await
                {
                    Ok(Some(reply)) => reply,
                    Ok(None) => Reply::err("write not applied"),
                    Err(e) => commit_error(e),
                };
                (reply, After::Continue)
            }
        }
    }

    fn count(&self, effect: Effect) {
        if effect.lookups > 0 {
            self.shared
                .stats
                .lookups
                .fetch_add(effect.lookups, Ordering::Relaxed);
        }
    }

    fn check_write(&self, args: &[Bytes]) -> Result<(), Reply> {
        if !self.may_write() {
            let user = self.user.as_ref().map_or(DEFAULT_USER, |u| u.name.as_str());
            let name = args.first().map(|n| lower(n)).unwrap_or_default();
            return Err(Reply::Error(format!(
                "NOPERM User {user} has no permissions to run the '{}' command",
                String::from_utf8_lossy(&name)
            )));
        }
        validate_write(&self.shared.keys, args)
    }

    fn enqueue(&mut self, class: Class, args: Vec<Bytes>) -> Reply {
        let checked = if class == Class::Write {
            self.check_write(&args)
        } else {
            Ok(())
        };
        let max = self.shared.config.max_transaction_bytes;
        let Some(queue) = &mut self.queue else {
            return Reply::err("not in MULTI");
        };
        if let Err(reply) = checked {
            queue.failed = true;
            return reply;
        }
        let size: usize = args.iter().map(|a| a.len() + 16).sum();
        if queue.bytes.saturating_add(size) > max {
            queue.failed = true;
            return Reply::err(format!(
                "the transaction exceeds the server's limit of {max} bytes of queued commands"
            ));
        }
        queue.bytes += size;
        queue.commands.push(args);
        Reply::Status("QUEUED")
    }

    fn unwatch_all(&mut self) {
        let watched = std::mem::take(&mut self.watched);
        self.shared.unwatch(&watched, &self.watch);
    }

    async fn transaction_command(&mut self, name: &str, args: &[Bytes]) -> Reply {
        match name {
            "multi" => {
                if self.queue.is_some() {
                    return Reply::err("MULTI calls can not be nested");
                }
                self.queue = Some(Queue::default());
                Reply::OK
            }
            "discard" => {
                if self.queue.take().is_none() {
                    return Reply::err("DISCARD without MULTI");
                }
                self.unwatch_all();
                Reply::OK
            }
            "watch" => {
                if self.queue.is_some() {
                    return Reply::err("WATCH inside MULTI is not allowed");
                }
                let keys = args.get(1..).unwrap_or_default();
                self.shared.watch(keys, &self.watch).await;
                for key in keys {
                    if !self.watched.contains(key) {
                        self.watched.push(key.clone());
                    }
                }
                Reply::OK
            }
            "unwatch" => {
                self.unwatch_all();
                Reply::OK
            }
            "exec" => {
                let Some(queue) = self.queue.take() else {
                    return Reply::err("EXEC without MULTI");
                };
                if queue.failed {
                    self.unwatch_all();
                    return Reply::Error(
                        "EXECABORT Transaction discarded because of previous errors.".into(),
                    );
                }
                let keys = self.shared.keys.clone();
                let shared = self.shared.clone();
                let watch = self.watch.clone();
                let outcome = shared
                    .commit(
                        || watch.is_dirty(),
                        move |view| {
                            let mut effect = Effect::default();
                            let replies: Vec<Reply> = queue
                                .commands
                                .iter()
                                .map(|cmd| execute(view, &keys, cmd, &mut effect))
                                .collect();
                            (replies, effect)
                        },
                    )
                    .await;
                self.unwatch_all();
                match outcome {
                    Ok(Some((replies, effect))) => {
                        self.count(effect);
                        Reply::Array(replies)
                    }
                    Ok(None) => {
                        Stats::bump(&self.shared.stats.watch_conflicts);
                        Reply::NilArray
                    }
                    Err(e) => commit_error(e),
                }
            }
            _ => unknown_command(args),
        }
    }

    fn authenticate(&mut self, user: &[u8], password: &[u8]) -> Result<(), Reply> {
        if !self.shared.config.users.required() {
            return Err(Reply::err(
                "AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            ));
        }
        let name = std::str::from_utf8(user).unwrap_or("");
        match self.shared.config.users.check(name, password) {
            Some(found) => {
                self.user = Some(found.clone());
                Ok(())
            }
            None => {
                Stats::bump(&self.shared.stats.auth_failures);
                Err(wrongpass())
            }
        }
    }

    fn connection_command(&mut self, name: &str, args: &[Bytes]) -> (Reply, After) {
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let reply = match name {
            "ping" => match args.len() {
                1 => Reply::Status("PONG"),
                2 => Reply::Bulk(arg(1)),
                _ => Reply::err("wrong number of arguments for 'ping' command"),
            },
            "echo" => Reply::Bulk(arg(1)),
            "quit" => return (Reply::OK, After::Close),
            "auth" => {
                let result = match args.len() {
                    2 => self.authenticate(DEFAULT_USER.as_bytes(), &arg(1)),
                    3 => self.authenticate(&arg(1), &arg(2)),
                    _ => Err(Reply::Error("ERR syntax error".into())),
                };
                match result {
                    Ok(()) => Reply::OK,
                    Err(reply) => reply,
                }
            }
            "hello" => self.hello(args),
            "select" => {
                if &*arg(1) == b"0" {
                    Reply::OK
                } else {
                    Reply::err("DB index is out of range")
                }
            }
            "reset" => {
                self.queue = None;
                self.unwatch_all();
                self.protocol = Protocol::Resp2;
                self.name = None;
                if self.shared.config.users.required() {
                    self.user = None;
                }
                Reply::Status("RESET")
            }
            "client" => self.client(args),
            "info" => Reply::text(super::info::info(
                &self.shared,
                args.get(1).map(|s| lower(s)).as_deref(),
            )),
            "command" => super::info::command(args),
            // Client libraries and tools read settings on connect; this server has none to
            // show, so every pattern matches nothing, as an unknown parameter does in Redis.
            "config" => match args.get(1).map(|s| lower(s)).as_deref() {
                Some(b"get") if args.len() >= 3 => Reply::Map(Vec::new()),
                Some(b"get") => {
                    Reply::Error("ERR wrong number of arguments for 'config|get' command".into())
                }
                _ => Reply::err("CONFIG is read-only here: only CONFIG GET is answered"),
            },
            _ => unknown_command(args),
        };
        (reply, After::Continue)
    }

    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    fn hello(&mut self, args: &[Bytes]) -> Reply {
        let mut protocol = self.protocol;
        if let Some(version) = args.get(1) {
            protocol = match &**version {
                b"2" => Protocol::Resp2,
                b"3" => Protocol::Resp3,
                other if other.iter().all(u8::is_ascii_digit) && !other.is_empty() => {
                    return Reply::Error("NOPROTO unsupported protocol version".into())
                }
                _ => return Reply::err("Protocol version is not an integer or out of range"),
            };
        }
        let mut i = 2;
        let mut setname = None;
        while let Some(option) = args.get(i) {
            match lower(option).as_slice() {
                b"auth" => {
                    let (Some(user), Some(pass)) = (args.get(i + 1), args.get(i + 2)) else {
                        return Reply::Error("ERR syntax error in HELLO option 'auth'".into());
                    };
                    if let Err(reply) = self.authenticate(user, pass) {
                        return reply;
                    }
                    i += 3;
                }
                b"setname" => {
                    let Some(name) = args.get(i + 1) else {
                        return Reply::Error("ERR syntax error in HELLO option 'setname'".into());
                    };
                    setname = Some(name.clone());
                    i += 2;
                }
                _ => {
                    return Reply::Error(format!(
                        "ERR syntax error in HELLO option '{}'",
                        commands::printable(option, 64)
                    ))
                }
            }
        }
        if !self.authenticated() {
            return noauth();
        }
        self.protocol = protocol;
        if setname.is_some() {
            self.name = setname;
        }
        Reply::Map(vec![
            (Reply::text("server"), Reply::text("redis")),
            (Reply::text("version"), Reply::text(REDIS_VERSION)),
            (Reply::text("proto"), Reply::Int(protocol.version())),
            (Reply::text("id"), Reply::Int(self.id as i64)),
            (Reply::text("mode"), Reply::text("standalone")),
            (Reply::text("role"), Reply::text("master")),
            (Reply::text("modules"), Reply::Array(Vec::new())),
        ])
    }

    /// `CLIENT SETNAME|GETNAME|SETINFO|ID|INFO`.
    fn client(&mut self, args: &[Bytes]) -> Reply {
        let sub = args.get(1).map(|s| lower(s)).unwrap_or_default();
        match (sub.as_slice(), args.len()) {
            (b"setname", 3) => {
                let name = args.get(2).cloned().unwrap_or_default();
                if name.iter().any(|b| *b <= b' ' || *b > b'~') {
                    return Reply::err(
                        "Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then_some(name);
                Reply::OK
            }
            (b"getname", 2) => self.name.clone().map_or(Reply::Nil, Reply::Bulk),
            (b"setinfo", 4) => Reply::OK,
            (b"id", 2) => Reply::Int(self.id as i64),
            (b"info", 2) => Reply::text(format!(
                "id={} name={} db=0 multi={} watch={} resp={}\n",
                self.id,
                self.name
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default(),
                self.queue.as_ref().map_or(-1, |q| q.commands.len() as i64),
                self.watched.len(),
                self.protocol.version()
            )),
            (b"setname" | b"getname" | b"setinfo" | b"id" | b"info", _) => Reply::Error(format!(
                "ERR wrong number of arguments for 'client|{}' command",
                String::from_utf8_lossy(&sub)
            )),
            _ => Reply::Error(format!(
                "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                commands::printable(&sub, 64)
            )),
        }
    }
}

fn commit_error(e: CommitError) -> Reply {
    match e {
        CommitError::ShuttingDown => Reply::err("the server is shutting down; nothing was written"),
        CommitError::Store(e) => Reply::err(format!("the write was not applied: {e}")),
    }
}
