//! `segstore serve --redis` with real clients (the `redis` crate, `redis-cli`) and with
//! misbehaving ones (raw sockets): the commands SDKs and writers send, access control, limits,
//! bad input, and kill -9 in the middle of transactions.

#![cfg(feature = "cli")]

mod damaged_store;
mod serve_support;

use segstore::{context_hash, List, Status};
use serve_support::{closed_within, connect, exchange, reader, Serve};
use std::io::Write;
use std::time::Duration;

fn q<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(conn)
}

fn code(err: redis::RedisError) -> String {
    format!(
        "{} {}",
        err.code().unwrap_or("?"),
        err.detail().unwrap_or("")
    )
}

fn include(hash: &str) -> String {
    format!("launchdarkly:big_segment_include:{hash}")
}

fn exclude(hash: &str) -> String {
    format!("launchdarkly:big_segment_exclude:{hash}")
}

#[test]
fn reads_and_writes_as_sdks_and_the_relay_issue_them() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let mut relay = serve.conn();
    let h1 = context_hash("user1");
    let h2 = context_hash("user2");
    let sync_key = "launchdarkly:big_segments_synchronized_on";
    let cursor_key = "launchdarkly:big_segments_cursor";
    let lock_key = "launchdarkly:big_segments_lock";
    assert_eq!(
        q::<Option<String>>(&mut relay, &["GET", sync_key]).unwrap(),
        None
    );

    // A patch, exactly as the Relay Proxy's writer sends it.
    q::<()>(&mut relay, &["WATCH", lock_key]).unwrap();
    assert_eq!(
        q::<Option<String>>(&mut relay, &["GET", cursor_key]).unwrap(),
        None
    );
    let (applied,): (Vec<i64>,) = redis::pipe()
        .atomic()
        .cmd("SET")
        .arg(lock_key)
        .arg("")
        .ignore()
        .cmd("SET")
        .arg(cursor_key)
        .arg("v1")
        .ignore()
        .cmd("SADD")
        .arg(include(&h1))
        .arg("beta.g1")
        .cmd("SADD")
        .arg(include(&h2))
        .arg("beta.g1")
        .cmd("SADD")
        .arg(exclude(&h2))
        .arg("beta.g1")
        .cmd("SADD")
        .arg(exclude(&h1))
        .arg("alpha.g2")
        .query(&mut relay)
        .map(|v: Vec<i64>| (v,))
        .unwrap();
    assert_eq!(applied, [1, 1, 1, 1]);
    q::<()>(&mut relay, &["SET", sync_key, "1700000000000"]).unwrap();

    // What the SDKs read, from another connection.
    let mut sdk = serve.conn();
    let mut members = |key: &str| {
        let mut m: Vec<String> = q(&mut sdk, &["SMEMBERS", key]).unwrap();
        m.sort();
        m
    };
    assert_eq!(members(&include(&h1)), ["beta.g1"]);
    assert_eq!(members(&exclude(&h1)), ["alpha.g2"]);
    assert_eq!(members(&exclude(&h2)), ["beta.g1"]);
    assert!(members(&include(&context_hash("nobody"))).is_empty());
    let mut sdk = serve.conn();
    assert_eq!(
        q::<String>(&mut sdk, &["GET", sync_key]).unwrap(),
        "1700000000000"
    );
    assert_eq!(q::<String>(&mut sdk, &["GET", cursor_key]).unwrap(), "v1");
    assert_eq!(
        q::<i64>(&mut sdk, &["SISMEMBER", &include(&h2), "beta.g1"]).unwrap(),
        1
    );
    assert_eq!(q::<i64>(&mut sdk, &["SCARD", &exclude(&h2)]).unwrap(), 1);
    assert_eq!(
        q::<i64>(&mut sdk, &["EXISTS", &include(&h1), lock_key, "nope"]).unwrap(),
        2
    );
    assert_eq!(
        q::<String>(&mut sdk, &["TYPE", &include(&h1)]).unwrap(),
        "set"
    );
    assert_eq!(
        q::<String>(&mut sdk, &["TYPE", cursor_key]).unwrap(),
        "string"
    );

    // The store holds it: another process's reader sees the same, included beating excluded.
    let snapshot = reader(dir.path()).snapshot();
    assert_eq!(
        snapshot.check("beta.g1", h2.as_bytes()).unwrap(),
        Status::Included
    );
    assert_eq!(
        snapshot.check("alpha.g2", h1.as_bytes()).unwrap(),
        Status::Excluded
    );
    assert_eq!(snapshot.metadata().synchronized_on, Some(1_700_000_000_000));
    assert_eq!(snapshot.metadata().cursor, "v1");

    // A second writer whose WATCH saw the lock change gets nil, and nothing of its patch.
    let mut other = serve.conn();
    q::<()>(&mut relay, &["WATCH", lock_key]).unwrap();
    q::<()>(&mut other, &["SET", lock_key, ""]).unwrap();
    q::<()>(&mut relay, &["MULTI"]).unwrap();
    q::<()>(&mut relay, &["SREM", &include(&h1), "beta.g1"]).unwrap();
    assert_eq!(q::<Option<Vec<i64>>>(&mut relay, &["EXEC"]).unwrap(), None);
    assert_eq!(
        reader(dir.path())
            .snapshot()
            .check("beta.g1", h1.as_bytes())
            .unwrap(),
        Status::Included
    );

    // SREM of the last member: the set no longer exists.
    assert_eq!(
        q::<i64>(&mut relay, &["SREM", &exclude(&h1), "alpha.g2", "zzz.g1"]).unwrap(),
        1
    );
    assert_eq!(q::<i64>(&mut relay, &["EXISTS", &exclude(&h1)]).unwrap(), 0);
    assert_eq!(
        q::<i64>(&mut relay, &["DEL", &include(&h2), cursor_key]).unwrap(),
        2
    );
    assert_eq!(
        q::<Option<String>>(&mut relay, &["GET", cursor_key]).unwrap(),
        None
    );
    let snapshot = reader(dir.path()).snapshot();
    assert_eq!(
        snapshot.check("beta.g1", h2.as_bytes()).unwrap(),
        Status::Excluded
    );
    assert_eq!(snapshot.metadata().cursor, "");

    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn connection_chatter_that_client_libraries_send() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let mut conn = serve.conn();
    assert_eq!(q::<String>(&mut conn, &["PING"]).unwrap(), "PONG");
    assert_eq!(q::<String>(&mut conn, &["PING", "hi"]).unwrap(), "hi");
    assert_eq!(q::<String>(&mut conn, &["ECHO", "x y"]).unwrap(), "x y");
    q::<()>(&mut conn, &["SELECT", "0"]).unwrap();
    assert!(q::<()>(&mut conn, &["SELECT", "1"]).is_err());
    q::<()>(&mut conn, &["CLIENT", "SETNAME", "sdk-1"]).unwrap();
    assert_eq!(
        q::<String>(&mut conn, &["CLIENT", "GETNAME"]).unwrap(),
        "sdk-1"
    );
    q::<()>(&mut conn, &["CLIENT", "SETINFO", "LIB-NAME", "redis-rs"]).unwrap();
    assert!(q::<i64>(&mut conn, &["CLIENT", "ID"]).unwrap() > 0);
    let info: String = q(&mut conn, &["INFO"]).unwrap();
    assert!(
        info.contains("redis_version:") && info.contains("loading:0"),
        "{info}"
    );
    assert!(
        info.contains("maxclients:10000") && info.contains("connected_clients:1"),
        "{info}"
    );
    let server: String = q(&mut conn, &["INFO", "server"]).unwrap();
    assert!(server.contains("redis_mode:standalone") && !server.contains("# Clients"));
    assert!(q::<i64>(&mut conn, &["COMMAND", "COUNT"]).unwrap() > 20);
    let config: Vec<String> = q(&mut conn, &["CONFIG", "GET", "save"]).unwrap();
    assert!(config.is_empty());
    assert!(q::<()>(&mut conn, &["CONFIG", "SET", "save", ""]).is_err());
    let err = q::<()>(&mut conn, &["FLUSHALL"]).unwrap_err();
    assert!(code(err).starts_with("ERR unknown command 'FLUSHALL'"));
    let err = q::<()>(&mut conn, &["GET"]).unwrap_err();
    assert_eq!(code(err), "ERR wrong number of arguments for 'get' command");
    // The connection is still usable after errors.
    assert_eq!(q::<String>(&mut conn, &["PING"]).unwrap(), "PONG");

    // HELLO: RESP3 and back, and an unsupported version that clients fall back from.
    let mut raw = serve.tcp();
    let hello3 = exchange(&mut raw, b"HELLO 3\r\n", 1);
    assert!(
        hello3.starts_with(b"%7\r\n"),
        "{}",
        String::from_utf8_lossy(&hello3)
    );
    let set = exchange(
        &mut raw,
        b"SMEMBERS launchdarkly:big_segment_include:x\r\n",
        4,
    );
    assert_eq!(set, b"~0\r\n");
    let nil = exchange(&mut raw, b"GET launchdarkly:big_segments_cursor\r\n", 3);
    assert_eq!(nil, b"_\r\n");
    let noproto = exchange(&mut raw, b"HELLO 4\r\n", 5);
    assert!(
        noproto.starts_with(b"-NOPROTO"),
        "{}",
        String::from_utf8_lossy(&noproto)
    );
    let reset = exchange(&mut raw, b"RESET\r\n", 8);
    assert_eq!(reset, b"+RESET\r\n");
    let nil2 = exchange(&mut raw, b"GET launchdarkly:big_segments_cursor\r\n", 5);
    assert_eq!(nil2, b"$-1\r\n", "RESET went back to RESP2");
    let quit = exchange(&mut raw, b"QUIT\r\n", 5);
    assert_eq!(quit, b"+OK\r\n");
    assert!(closed_within(&mut raw, Duration::from_secs(5)));

    // redis-cli, where it is installed (CI installs it).
    if let Ok(out) = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &serve.addr.port().to_string()])
        .args(["SADD", &include("h"), "cli.g1"])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        let out = std::process::Command::new("redis-cli")
            .args([
                "-3",
                "-h",
                "127.0.0.1",
                "-p",
                &serve.addr.port().to_string(),
            ])
            .args(["SMEMBERS", &include("h")])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("cli.g1"));
    }
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn passwords_and_read_only_users() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("users");
    std::fs::write(
        &file,
        "# users\nrelay rw relay-secret-1\nsdk ro sdk-secret-2\n",
    )
    .unwrap();
    let serve = Serve::start(
        dir.path(),
        &["--redis-password-file", file.to_str().unwrap()],
    );
    let mut conn = serve.conn();
    assert_eq!(q::<String>(&mut conn, &["PING"]).unwrap(), "PONG");
    let err =
        q::<Option<String>>(&mut conn, &["GET", "launchdarkly:big_segments_cursor"]).unwrap_err();
    assert!(code(err).starts_with("NOAUTH"));
    let err = q::<()>(&mut conn, &["AUTH", "sdk", "wrong"]).unwrap_err();
    assert!(code(err).starts_with("WRONGPASS"));
    let err = q::<()>(&mut conn, &["AUTH", "sdk-secret-2"]).unwrap_err();
    assert!(
        code(err).starts_with("WRONGPASS"),
        "a bare password is the default user's"
    );
    q::<()>(&mut conn, &["AUTH", "sdk", "sdk-secret-2"]).unwrap();
    assert!(q::<Vec<String>>(&mut conn, &["SMEMBERS", &include("h")])
        .unwrap()
        .is_empty());
    let err = q::<i64>(&mut conn, &["SADD", &include("h"), "a.g1"]).unwrap_err();
    assert!(code(err).starts_with("NOPERM"), "read-only user wrote");
    // Queued under MULTI, the refused write discards the transaction.
    q::<()>(&mut conn, &["MULTI"]).unwrap();
    assert!(q::<()>(&mut conn, &["SADD", &include("h"), "a.g1"]).is_err());
    assert!(code(q::<()>(&mut conn, &["EXEC"]).unwrap_err()).starts_with("EXECABORT"));

    let mut writer = connect(&format!("redis://relay:relay-secret-1@{}/", serve.addr));
    assert_eq!(
        q::<i64>(&mut writer, &["SADD", &include("h"), "a.g1"]).unwrap(),
        1
    );
    let mut raw = serve.tcp();
    let hello = exchange(&mut raw, b"HELLO 3 AUTH relay relay-secret-1\r\n", 1);
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    let info: String = q(&mut writer, &["INFO"]).unwrap();
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
    for secret in ["relay-secret-1", "sdk-secret-2"] {
        assert!(
            !stderr.contains(secret) && !info.contains(secret),
            "a password leaked"
        );
    }

    // The environment variable: one password for the default user.
    let serve = Serve::start_with_env(dir.path(), &[], &[("SEGSTORE_REDIS_PASSWORD", "env-pass")]);
    let mut conn = connect(&format!("redis://:env-pass@{}/", serve.addr));
    let mut m: Vec<String> = q(&mut conn, &["SMEMBERS", &include("h")]).unwrap();
    m.sort();
    assert_eq!(m, ["a.g1"]);
    let mut anonymous = serve.conn();
    assert!(q::<Vec<String>>(&mut anonymous, &["SMEMBERS", &include("h")]).is_err());
}

#[test]
fn writes_outside_the_layout_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let mut conn = serve.conn();
    for bad in [
        &["SET", "foo", "bar"][..],
        &["SADD", "launchdarkly:features", "x"],
        &["SADD", "launchdarkly:big_segments_cursor", "x"],
        &["SET", &include("h"), "x"],
        &["SET", "launchdarkly:big_segments_synchronized_on", "soon"],
        &["SET", "launchdarkly:big_segments_cursor", "v1", "NX"],
        &["DEL", "launchdarkly:big_segments_synchronized_on"],
        &["SADD", &include("h"), ""],
    ] {
        let err = q::<()>(&mut conn, bad).unwrap_err();
        assert!(code(err).starts_with("ERR"), "{bad:?}");
    }
    // One bad command in a transaction discards all of it.
    q::<()>(&mut conn, &["MULTI"]).unwrap();
    q::<()>(&mut conn, &["SADD", &include("h"), "good.g1"]).unwrap();
    assert!(q::<()>(&mut conn, &["SET", "other", "x"]).is_err());
    assert!(code(q::<()>(&mut conn, &["EXEC"]).unwrap_err()).starts_with("EXECABORT"));
    assert!(code(q::<()>(&mut conn, &["EXEC"]).unwrap_err()).contains("EXEC without MULTI"));
    assert!(q::<Vec<String>>(&mut conn, &["SMEMBERS", &include("h")])
        .unwrap()
        .is_empty());
    let snapshot = reader(dir.path()).snapshot();
    assert!(snapshot.segments().is_empty(), "{:?}", snapshot.segments());
    assert_eq!(snapshot.last_seq(), 0, "nothing was written");
}

#[test]
fn bad_frames_get_errors_and_never_take_the_server_down() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    // A declared 512 MiB argument is refused at its header, and the connection closed.
    let mut raw = serve.tcp();
    let reply = exchange(&mut raw, b"*3\r\n$4\r\nSADD\r\n$536870912\r\n", 10);
    assert!(
        reply.starts_with(b"-ERR Protocol error: invalid bulk length"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    assert!(closed_within(&mut raw, Duration::from_secs(5)));
    for garbage in [
        &b"*2\r\n:1\r\n"[..],
        b"*abc\r\n",
        b"*3000000\r\n",
        b"*1\r\n$3\r\nGETxx",
        b"ECHO \"unbalanced\r\n",
    ] {
        let mut raw = serve.tcp();
        let reply = exchange(&mut raw, garbage, 4);
        assert!(
            reply.starts_with(b"-ERR Protocol error"),
            "{garbage:?}: {}",
            String::from_utf8_lossy(&reply)
        );
        assert!(closed_within(&mut raw, Duration::from_secs(5)));
    }
    // Truncated frames, then the client goes away.
    for cut in [&b"*2\r\n$4\r\nSMEM"[..], b"*2\r\n", b"*1\r\n$4\r\n"] {
        let mut raw = serve.tcp();
        raw.write_all(cut).unwrap();
        drop(raw);
    }
    // Wrong argument counts and types keep the connection.
    let mut raw = serve.tcp();
    let reply = exchange(
        &mut raw,
        b"*1\r\n$4\r\nSADD\r\n*3\r\n$9\r\nSISMEMBER\r\n$1\r\nk\r\n$1\r\nm\r\n*1\r\n$4\r\nPING\r\n",
        60,
    );
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("-ERR wrong number of arguments for 'sadd' command\r\n:0\r\n+PONG"),
        "{text}"
    );

    // 10,000 pipelined commands: 10,000 replies, in order.
    let mut pipeline = Vec::new();
    for i in 0..10_000 {
        let arg = i.to_string();
        pipeline.extend_from_slice(
            format!("*2\r\n$4\r\nECHO\r\n${}\r\n{arg}\r\n", arg.len()).as_bytes(),
        );
    }
    let mut want = Vec::new();
    for i in 0..10_000 {
        let arg = i.to_string();
        want.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    let mut raw = serve.tcp();
    let got = exchange(&mut raw, &pipeline, want.len());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "pipelined replies out of order");

    let mut conn = serve.conn();
    assert_eq!(q::<String>(&mut conn, &["PING"]).unwrap(), "PONG");
    let info: String = q(&mut conn, &["INFO", "stats"]).unwrap();
    assert!(info.contains("segstore_protocol_errors:6"), "{info}");
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
}

#[test]
fn slow_idle_and_excess_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(
        dir.path(),
        &[
            "--redis-request-timeout",
            "1",
            "--redis-idle-timeout",
            "2",
            "--redis-max-clients",
            "3",
        ],
    );
    // A slowloris: a request begun and never finished.
    let mut slow = serve.tcp();
    slow.write_all(b"*2\r\n$4\r\nECHO\r\n$5\r\nab").unwrap();
    assert!(
        closed_within(&mut slow, Duration::from_secs(10)),
        "a slow request held its connection"
    );
    // An idle connection.
    let mut idle = serve.tcp();
    assert_eq!(exchange(&mut idle, b"PING\r\n", 7), b"+PONG\r\n");
    assert!(
        closed_within(&mut idle, Duration::from_secs(10)),
        "an idle connection was kept"
    );
    // At the limit, one more connection is refused with an error.
    let mut held: Vec<_> = (0..3).map(|_| serve.tcp()).collect();
    for c in &mut held {
        assert_eq!(exchange(c, b"PING\r\n", 7), b"+PONG\r\n");
    }
    let mut extra = serve.tcp();
    let reply = exchange(&mut extra, b"PING\r\n", 10);
    assert!(
        reply.starts_with(b"-ERR max number of clients reached"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    drop(held);
}

#[test]
fn a_client_that_leaves_mid_multi_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    {
        let mut raw = serve.tcp();
        let queued = exchange(
            &mut raw,
            format!(
                "MULTI\r\nSADD {} left.g1\r\nSET launchdarkly:big_segments_cursor v9\r\n",
                include("h")
            )
            .as_bytes(),
            23,
        );
        assert_eq!(queued, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n");
    }
    let mut conn = serve.conn();
    // The next command on another connection is answered after the first one is gone.
    std::thread::sleep(Duration::from_millis(100));
    assert!(q::<Vec<String>>(&mut conn, &["SMEMBERS", &include("h")])
        .unwrap()
        .is_empty());
    let (status, _) = serve.stop();
    assert!(status.success());
    let snapshot = reader(dir.path()).snapshot();
    assert!(snapshot.segments().is_empty());
    assert_eq!(snapshot.metadata().cursor, "");
}

#[test]
fn unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("segstore.sock");
    let serve = Serve::start(dir.path(), &["--redis-unix", sock.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // The socket file appears at bind(2), a moment before listen(2).
    let url = format!("redis+unix://{}", sock.display());
    let mut conn = loop {
        match redis::Client::open(url.as_str()).unwrap().get_connection() {
            Ok(conn) => break conn,
            Err(e) => assert!(std::time::Instant::now() < deadline, "no socket: {e}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        q::<i64>(&mut conn, &["SADD", &exclude("h"), "u.g1"]).unwrap(),
        1
    );
    let mut tcp = serve.conn();
    assert_eq!(
        q::<Vec<String>>(&mut tcp, &["SMEMBERS", &exclude("h")]).unwrap(),
        ["u.g1"]
    );
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!sock.exists(), "the socket file was left behind");
}

/// Kill -9 while a writer streams transactions: after each restart every transaction is there
/// whole or not at all, and every one whose EXEC was answered is there.
#[test]
fn kill_9_mid_exec_keeps_answered_transactions_whole() {
    const KEYS_PER_TX: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let mut next_tx = 0usize;
    let mut answered: Vec<usize> = Vec::new();
    let mut all_started: Vec<usize> = Vec::new();
    for round in 0..6 {
        let serve = Serve::start(dir.path(), &[]);
        let url = serve.url();
        let first = next_tx;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop_writer = stop.clone();
        let writer = std::thread::spawn(move || {
            let mut conn = connect(&url);
            let mut done = Vec::new();
            let mut tx = first;
            while !stop_writer.load(std::sync::atomic::Ordering::Relaxed) {
                let mut pipe = redis::pipe();
                pipe.atomic();
                pipe.cmd("SET")
                    .arg("launchdarkly:big_segments_cursor")
                    .arg(format!("v{tx}"))
                    .ignore();
                for k in 0..KEYS_PER_TX {
                    pipe.cmd("SADD")
                        .arg(include(&format!("tx{tx}-k{k}")))
                        .arg("crash.g1")
                        .ignore();
                }
                match pipe.query::<()>(&mut conn) {
                    Ok(()) => done.push(tx),
                    Err(_) => break,
                }
                tx += 1;
            }
            (done, tx)
        });
        std::thread::sleep(Duration::from_millis(60 + 47 * round as u64));
        serve.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (done, reached) = writer.join().unwrap();
        answered.extend(done);
        all_started.extend(first..=reached);
        next_tx = reached + 1;
    }
    assert!(
        answered.len() >= 6,
        "only {} transactions were answered",
        answered.len()
    );
    let snapshot = reader(dir.path()).snapshot();
    let mut present_txs = 0;
    for tx in &all_started {
        let present = (0..KEYS_PER_TX)
            .filter(|k| {
                snapshot
                    .contains(
                        "crash.g1",
                        List::Included,
                        format!("tx{tx}-k{k}").as_bytes(),
                    )
                    .unwrap()
            })
            .count();
        assert!(
            present == 0 || present == KEYS_PER_TX,
            "transaction {tx} is torn: {present} of {KEYS_PER_TX} keys"
        );
        if answered.contains(tx) {
            assert_eq!(present, KEYS_PER_TX, "answered transaction {tx} was lost");
        }
        present_txs += usize::from(present > 0);
    }
    assert!(present_txs >= answered.len());
    assert_eq!(
        segstore::verify(dir.path())
            .map(|problems| problems.len())
            .unwrap_or(usize::MAX),
        0
    );
}

/// TLS, for a writer on another host: redis-cli over `--tls` against a self-signed certificate.
#[test]
fn tls_with_redis_cli() {
    let tools = [("openssl", "version"), ("redis-cli", "--version")]
        .iter()
        .all(|(tool, arg)| {
            std::process::Command::new(tool)
                .arg(arg)
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !tools {
        assert!(
            std::env::var_os("SEGSTORE_REQUIRE_REDIS").is_none(),
            "openssl and redis-cli are needed for the TLS test"
        );
        eprintln!("SKIPPED: openssl or redis-cli is not installed");
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let cert = certs.path().join("cert.pem");
    let key = certs.path().join("key.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let tls_addr = format!("127.0.0.1:{port}");
    let serve = Serve::start(
        dir.path(),
        &[
            "--redis-tls",
            &tls_addr,
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args([
                "--tls",
                "--cacert",
                cert.to_str().unwrap(),
                "-h",
                "127.0.0.1",
                "-p",
                &port,
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while cli(&["PING"]) != "PONG" {
        assert!(std::time::Instant::now() < deadline, "no TLS answer");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cli(&["SADD", &include("h"), "tls.g1"]), "1");
    assert_eq!(cli(&["SMEMBERS", &include("h")]), "tls.g1");
    // A plaintext client on the TLS port gets no answer, and the server goes on.
    let mut plain = std::net::TcpStream::connect(&tls_addr).unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(10)));
    let mut tcp = serve.conn();
    assert_eq!(
        q::<Vec<String>>(&mut tcp, &["SMEMBERS", &include("h")]).unwrap(),
        ["tls.g1"]
    );
    let (status, stderr) = serve.stop();
    assert!(status.success(), "{status}: {stderr}");
}

/// `--verify-on-read` opens without reading the tables whole; a lookup that reads a damaged
/// block then gets `-ERR` (never a wrong set), the server stays up, and lookups of intact
/// blocks still answer.
#[test]
fn verify_on_read_fails_the_lookups_of_a_damaged_block_with_err() {
    let dir = tempfile::tempdir().unwrap();
    let hashes = damaged_store::create(dir.path());
    let serve = Serve::start(dir.path(), &["--verify-on-read"]);
    let mut c = serve.conn();
    let (mut answered, mut failed) = (0, 0);
    for h in &hashes {
        match q::<Vec<String>>(&mut c, &["SMEMBERS", &include(h)]) {
            Ok(members) => {
                assert_eq!(members, ["big.g1"], "{h}");
                answered += 1;
            }
            Err(e) => {
                let text = code(e);
                assert!(text.starts_with("ERR the store cannot answer"), "{text}");
                assert!(text.contains("does not match its checksum"), "{text}");
                failed += 1;
            }
        }
    }
    assert!(failed > 0, "the damaged block was never noticed");
    assert!(answered > failed, "{answered} answered, {failed} failed");
    assert_eq!(q::<String>(&mut c, &["PING"]).unwrap(), "PONG");
}
