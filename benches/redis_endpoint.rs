//! `segstore serve --redis` against redis-server, in one run, on the same data: membership
//! latency as the SDKs issue it (`SMEMBERS` include, then `SMEMBERS` exclude, one connection, no
//! pipelining) over loopback TCP and a Unix socket; throughput with several connections (and the
//! CPU each server used); memory; restart to the first answered membership; and Relay-style
//! write transactions (1,000 `SADD`s each) against redis-server with and without
//! `appendfsync always`. Prints markdown tables and a summary against the goals of issue 11.
//!
//! `scripts/bench-redis-endpoint.sh` (installs redis-server and redis-tools if missing) or
//! `cargo bench --bench redis_endpoint`; `SEGSTORE_BENCH_KEYS=10000000` for 10M contexts.
//! Knobs: `SEGSTORE_BENCH_ROUNDS` (3: repeats of each measurement, medians reported),
//! `SEGSTORE_BENCH_REDIS_CALLS` (20,000 membership calls per latency measurement),
//! `SEGSTORE_BENCH_SECS` (2: seconds per throughput measurement), `SEGSTORE_BENCH_TXNS` (100
//! transactions per write measurement).
//!
//! The data: the `LdHash` fixture (n context hashes in `bench.g1`'s included list), copied to a
//! scratch directory that `serve` then owns, and the same n hashes loaded into a private
//! redis-server (`--save '' --appendonly no`) as `SADD {prefix}:big_segment_include:{hash}
//! bench.g1`, pipelined. Both servers use the prefix `segstore-bench`. Measurements alternate
//! between the servers, round by round, so drift of the (shared, 2-core) machine hits both.

mod common;

use common::*;
use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

/// Probe keys for hits (and as many for misses).
const PROBES: usize = 1 << 14;

/// The segment the write transactions add to.
const RELAY_SEGMENT: &str = "relay.g1";

/// SADDs per write transaction.
const TXN_SADDS: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn rounds() -> usize {
    env_usize("SEGSTORE_BENCH_ROUNDS", 3).max(1)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn free_port() -> BenchResult<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Copies `from` into a new directory `to`, recursively.
fn copy_dir(from: &Path, to: &Path) -> BenchResult<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Bytes of every file under `dir`, recursively.
fn tree_bytes(dir: &Path) -> BenchResult<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else {
            total += meta.len();
        }
    }
    Ok(total)
}

/// CPU seconds (user + system) a process has used, from /proc/PID/stat.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks / hz
}

/// `RssAnon` of a process in KiB.
fn rss_anon_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The two servers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Segstore,
    Redis,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Segstore => "segstore serve",
            Kind::Redis => "redis-server",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Tcp,
    Unix,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "TCP",
            Transport::Unix => "Unix",
        }
    }
}

/// A running server process, stopped (SIGTERM, then waited for) when dropped.
struct Server {
    kind: Kind,
    child: Child,
    tcp: String,
    unix: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn url(&self, transport: Transport) -> String {
        match transport {
            Transport::Tcp => format!("redis://{}/", self.tcp),
            Transport::Unix => format!("redis+unix://{}", self.unix.display()),
        }
    }

    fn connect(&self, transport: Transport) -> BenchResult<redis::Connection> {
        Ok(redis::Client::open(self.url(transport))?.get_connection()?)
    }

    fn raw(&self, transport: Transport) -> BenchResult<Box<dyn Stream>> {
        Ok(match transport {
            Transport::Tcp => {
                let s = std::net::TcpStream::connect(&self.tcp)?;
                s.set_nodelay(true)?;
                Box::new(s)
            }
            Transport::Unix => Box::new(UnixStream::connect(&self.unix)?),
        })
    }

    /// Stops the process and waits for it.
    fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.stop();
        }
    }
}

/// Starts `segstore --dir DIR serve` on a free port and `sock`, and waits for both listening
/// lines. stdout is drained by a thread for the life of the process.
fn start_segstore(dir: &Path, sock: &Path) -> BenchResult<Server> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_segstore"))
        .arg("--dir")
        .arg(dir)
        .args(["serve", "--redis", "127.0.0.1:0", "--redis-unix"])
        .arg(sock)
        .args(["--redis-prefix", REDIS_PREFIX])
        .env("SEGSTORE_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut server = Server {
        kind: Kind::Segstore,
        child,
        tcp: String::new(),
        unix: sock.to_owned(),
    };
    let mut unix_up = false;
    while server.tcp.is_empty() || !unix_up {
        let line = rx
            .recv_timeout(Duration::from_secs(600))
            .map_err(|_| "segstore serve did not announce its listeners")?;
        if let Some(addr) = line.strip_prefix("serve: redis listening on ") {
            if addr.starts_with("unix:") {
                unix_up = true;
            } else {
                server.tcp = addr.to_owned();
            }
        }
    }
    Ok(server)
}

/// The arguments of a private redis-server.
fn redis_command(dir: &Path, port: u16, sock: &Path) -> Command {
    let mut cmd = Command::new("redis-server");
    cmd.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .arg("--unixsocket")
        .arg(sock)
        .args([
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no", "--loglevel", "warning"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd
}

fn spawn_redis(dir: &Path, port: u16, sock: &Path) -> BenchResult<Server> {
    let child = redis_command(dir, port, sock).spawn()?;
    Ok(Server {
        kind: Kind::Redis,
        child,
        tcp: format!("127.0.0.1:{port}"),
        unix: sock.to_owned(),
    })
}

/// Starts redis-server and waits until it answers PING.
fn start_redis(dir: &Path, port: u16, sock: &Path) -> BenchResult<Server> {
    let mut server = spawn_redis(dir, port, sock)?;
    let started = Instant::now();
    loop {
        if let Ok(mut con) = server.connect(Transport::Tcp) {
            if redis::cmd("PING").query::<String>(&mut con).is_ok() {
                return Ok(server);
            }
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(format!("redis-server exited: {status}").into());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("redis-server did not start".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn info_field(con: &mut redis::Connection, section: &str, field: &str) -> BenchResult<String> {
    let info: String = redis::cmd("INFO").arg(section).query(con)?;
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| format!("INFO {section} has no {field}").into())
}

// ---------------------------------------------------------------------------------------------
// Clients

/// A byte stream to a server (TCP or Unix).
trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// One membership probe: the two keys, pre-encoded requests, and how many refs to expect.
struct Probe {
    include: Vec<u8>,
    exclude: Vec<u8>,
    raw_include: Vec<u8>,
    raw_exclude: Vec<u8>,
    members: usize,
}

fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn probe(hash: &[u8], members: usize) -> Probe {
    let include = redis_include_key(hash);
    let exclude = redis_exclude_key(hash);
    Probe {
        raw_include: resp_command(&[b"SMEMBERS", &include]),
        raw_exclude: resp_command(&[b"SMEMBERS", &exclude]),
        include,
        exclude,
        members,
    }
}

/// A client that makes membership calls: two `SMEMBERS`, one round trip each.
trait Member: Send {
    /// Makes the call for `p`, returns the refs it got.
    fn membership(&mut self, p: &Probe) -> usize;
}

/// The `redis` crate, as an SDK would use a client library.
struct CrateClient(redis::Connection);

impl Member for CrateClient {
    fn membership(&mut self, p: &Probe) -> usize {
        let included: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&p.include)
            .query(&mut self.0)
            .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
        let excluded: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(&p.exclude)
            .query(&mut self.0)
            .unwrap_or_else(|e| panic!("SMEMBERS: {e}"));
        included.len() + excluded.len()
    }
}

/// A minimal client: writes pre-encoded requests, reads just enough to find the reply's end.
/// It costs the load generator far less CPU than the crate, so more of the 2 cores is left to
/// the server.
struct RawClient {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    len: usize,
}

impl RawClient {
    fn new(stream: Box<dyn Stream>) -> RawClient {
        RawClient {
            stream,
            buf: vec![0; 64 << 10],
            len: 0,
        }
    }

    /// Reads one `SMEMBERS` reply (an array of bulk strings), returns its length.
    fn read_reply(&mut self) -> usize {
        loop {
            if let Some((used, count)) = parse_array(&self.buf[..self.len]) {
                self.buf.copy_within(used..self.len, 0);
                self.len -= used;
                return count;
            }
            let n = self
                .stream
                .read(&mut self.buf[self.len..])
                .unwrap_or_else(|e| panic!("read: {e}"));
            assert!(n > 0, "the server closed the connection");
            self.len += n;
        }
    }
}

/// A line ending at `from`: (the line without CRLF, the index after it).
fn line(buf: &[u8], from: usize) -> Option<(&[u8], usize)> {
    let end = buf.get(from..)?.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[from..from + end], from + end + 2))
}

fn number(bytes: &[u8]) -> usize {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad length {:?}", String::from_utf8_lossy(bytes)))
}

/// A whole `*N` array of `$` bulks at the start of `buf`: (bytes, N).
fn parse_array(buf: &[u8]) -> Option<(usize, usize)> {
    let (header, mut at) = line(buf, 0)?;
    match header.first() {
        Some(b'*') => {}
        _ => panic!("unexpected reply {:?}", String::from_utf8_lossy(header)),
    }
    let count = number(&header[1..]);
    for _ in 0..count {
        let (bulk, next) = line(buf, at)?;
        let len = number(&bulk[1..]);
        at = next + len + 2;
        if at > buf.len() {
            return None;
        }
    }
    Some((at, count))
}

impl Member for RawClient {
    fn membership(&mut self, p: &Probe) -> usize {
        // Two requests, one after the other, as the SDKs send them (no pipelining).
        self.stream
            .write_all(&p.raw_include)
            .unwrap_or_else(|e| panic!("write: {e}"));
        let included = self.read_reply();
        self.stream
            .write_all(&p.raw_exclude)
            .unwrap_or_else(|e| panic!("write: {e}"));
        included + self.read_reply()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientKind {
    Crate,
    Raw,
}

impl ClientKind {
    fn name(self) -> &'static str {
        match self {
            ClientKind::Crate => "redis crate",
            ClientKind::Raw => "raw RESP",
        }
    }
}

fn client(server: &Server, transport: Transport, kind: ClientKind) -> Box<dyn Member> {
    let made: BenchResult<Box<dyn Member>> = match kind {
        ClientKind::Crate => server
            .connect(transport)
            .map(|c| Box::new(CrateClient(c)) as Box<dyn Member>),
        ClientKind::Raw => server
            .raw(transport)
            .map(|s| Box::new(RawClient::new(s)) as Box<dyn Member>),
    };
    made.unwrap_or_else(|e| panic!("connecting to {}: {e}", server.kind.name()))
}

// ---------------------------------------------------------------------------------------------
// Measurements

fn histogram() -> Histogram<u64> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()));
    h.auto(true);
    h
}

/// p50 and p99 (ns) of `calls` membership calls, each timed alone, after a short warm-up.
fn latency(c: &mut dyn Member, probes: &[Probe], calls: usize, offset: usize) -> (f64, f64) {
    for p in probes.iter().cycle().skip(offset).take(1_000) {
        assert_eq!(c.membership(p), p.members);
    }
    let mut h = histogram();
    for p in probes.iter().cycle().skip(offset + 1_000).take(calls) {
        let started = Instant::now();
        let got = c.membership(p);
        let ns = started.elapsed().as_nanos() as u64;
        assert_eq!(got, p.members);
        let _ = h.record(ns.max(1));
    }
    (
        h.value_at_quantile(0.50) as f64,
        h.value_at_quantile(0.99) as f64,
    )
}

#[derive(Debug, Clone, Copy)]
struct Throughput {
    calls_per_sec: f64,
    /// Cores the server used (CPU seconds per second).
    server_cpu: f64,
    /// Cores this process (the load generator) used.
    client_cpu: f64,
}

/// Membership calls per second with `conns` connections, each a thread looping over its own
/// share of `probes`, for `secs`.
fn throughput(
    server: &Server,
    transport: Transport,
    kind: ClientKind,
    conns: usize,
    probes: &[Probe],
    secs: f64,
) -> Throughput {
    let stop = AtomicBool::new(false);
    let total = AtomicU64::new(0);
    let barrier = Barrier::new(conns + 1);
    let pid = server.pid().to_string();
    let mut result = None;
    std::thread::scope(|s| {
        for t in 0..conns {
            let mut c = client(server, transport, kind);
            let (stop, total, barrier) = (&stop, &total, &barrier);
            s.spawn(move || {
                // Warm the connection first.
                let offset = t * probes.len() / conns;
                for p in probes.iter().cycle().skip(offset).take(200) {
                    c.membership(p);
                }
                barrier.wait();
                let mut done = 0u64;
                for p in probes.iter().cycle().skip(offset + 200) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    assert_eq!(c.membership(p), p.members);
                    done += 1;
                }
                total.fetch_add(done, Ordering::Relaxed);
            });
        }
        barrier.wait();
        let server0 = cpu_secs(&pid);
        let client0 = cpu_secs("self");
        let started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(secs));
        let server1 = cpu_secs(&pid);
        let client1 = cpu_secs("self");
        stop.store(true, Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        result = Some((elapsed, server1 - server0, client1 - client0));
    });
    let (elapsed, server_cpu, client_cpu) = result.unwrap_or_default();
    Throughput {
        calls_per_sec: total.load(Ordering::Relaxed) as f64 / elapsed,
        server_cpu: server_cpu / elapsed,
        client_cpu: client_cpu / elapsed,
    }
}

/// `redis-benchmark` (a C load generator) against `server`: SMEMBERS of
/// `{prefix}:big_segment_include:{__rand_int__}` (a 12-digit number, so every call is a miss on
/// both servers: the keys are not LD hashes). Requests/s (single commands), server cores.
fn redis_benchmark(server: &Server, conns: usize, requests: usize) -> Option<(f64, f64)> {
    let pid = server.pid().to_string();
    let key = format!("{REDIS_PREFIX}:big_segment_include:__rand_int__");
    let cpu0 = cpu_secs(&pid);
    let started = Instant::now();
    let output = Command::new("redis-benchmark")
        .arg("-s")
        .arg(&server.unix)
        .args(["-c", &conns.to_string(), "-n", &requests.to_string()])
        .args(["-r", "100000000", "--csv", "SMEMBERS", &key])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_secs(&pid) - cpu0) / elapsed;
    let text = String::from_utf8_lossy(&output.stdout);
    let rps = text
        .lines()
        .filter(|l| l.starts_with("\"SMEMBERS"))
        .filter_map(|l| l.split(',').nth(1))
        .filter_map(|f| f.trim_matches('"').parse::<f64>().ok())
        .next_back()?;
    Some((rps, cpu))
}

/// Time from spawning a server to its first answered membership (a hit), polling its Unix
/// socket every 0.5 ms (redis answers -LOADING while it loads: polled until a real answer).
fn first_answer(
    spawn: impl FnOnce() -> BenchResult<Server>,
    p: &Probe,
) -> BenchResult<(Server, Duration)> {
    let started = Instant::now();
    let server = spawn()?;
    let sock = server.unix.clone();
    loop {
        if let Ok(stream) = UnixStream::connect(&sock) {
            let mut c = RawClient::new(Box::new(stream));
            let attempt = (|| -> std::io::Result<Option<usize>> {
                c.stream.write_all(&p.raw_include)?;
                let mut reply = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let n = c.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Ok(None);
                    }
                    reply.extend_from_slice(&chunk[..n]);
                    if reply.first() == Some(&b'-') {
                        return Ok(None); // -LOADING
                    }
                    if let Some((_, count)) = parse_array(&reply) {
                        return Ok(Some(count));
                    }
                }
            })();
            if let Ok(Some(count)) = attempt {
                let elapsed = started.elapsed();
                if count != 1 {
                    return Err(
                        format!("{}: a hit answered {count} refs", server.kind.name()).into(),
                    );
                }
                return Ok((server, elapsed));
            }
        }
        if started.elapsed() > Duration::from_secs(900) {
            return Err("no answer after 900 s".into());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// One Relay-style transaction's requests, pre-built.
struct Txn {
    cursor: String,
    pipe: redis::Pipeline,
}

fn lock_key() -> String {
    format!("{REDIS_PREFIX}:big_segments_lock")
}

fn cursor_key() -> String {
    format!("{REDIS_PREFIX}:big_segments_cursor")
}

/// `count` transactions of [`TXN_SADDS`] SADDs of new context hashes, tagged `tag`.
fn transactions(tag: &str, count: usize) -> Vec<Txn> {
    (0..count)
        .map(|t| {
            let cursor = format!("{tag}-{t}");
            let mut pipe = redis::pipe();
            pipe.cmd("MULTI");
            pipe.cmd("SET").arg(lock_key()).arg("");
            pipe.cmd("SET").arg(cursor_key()).arg(&cursor);
            for i in 0..TXN_SADDS {
                let hash = segstore::context_hash(&format!("relay-{tag}-{t}-{i}"));
                pipe.cmd("SADD")
                    .arg(redis_include_key(hash.as_bytes()))
                    .arg(RELAY_SEGMENT);
            }
            pipe.cmd("EXEC");
            Txn { cursor, pipe }
        })
        .collect()
}

#[derive(Debug, Clone, Copy)]
struct Writes {
    key_ops_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Runs `txns` back to back on one connection, as the Relay Proxy's writer: WATCH the lock,
/// GET the cursor, then MULTI .. EXEC in one write.
fn write_txns(con: &mut redis::Connection, txns: &[Txn]) -> BenchResult<Writes> {
    let mut h = histogram();
    let started = Instant::now();
    let mut previous = String::new();
    for txn in txns {
        let t = Instant::now();
        redis::cmd("WATCH").arg(lock_key()).query::<()>(con)?;
        let cursor: Option<String> = redis::cmd("GET").arg(cursor_key()).query(con)?;
        if !previous.is_empty() && cursor.as_deref() != Some(previous.as_str()) {
            return Err(format!("cursor {cursor:?}, expected {previous}").into());
        }
        let replies: Vec<redis::Value> = txn.pipe.query(con)?;
        match replies.last() {
            Some(redis::Value::Array(results)) if results.len() == TXN_SADDS + 2 => {}
            other => return Err(format!("EXEC answered {other:?}").into()),
        }
        let _ = h.record((t.elapsed().as_nanos() as u64).max(1));
        previous = txn.cursor.clone();
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Writes {
        key_ops_per_sec: (txns.len() * TXN_SADDS) as f64 / secs,
        p50_ms: h.value_at_quantile(0.5) as f64 / 1e6,
        p99_ms: h.value_at_quantile(0.99) as f64 / 1e6,
    })
}

// ---------------------------------------------------------------------------------------------
// Report

/// One line of the summary: a figure against a goal.
struct Goal {
    what: String,
    ours: String,
    redis: String,
    ratio: f64,
    goal: &'static str,
    /// ratio / goal bound, oriented so ≤ 1 means met.
    to_goal: f64,
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn fmt_mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / (1024.0 * 1024.0))
}

fn main() -> BenchResult<()> {
    let n = key_count();
    let rounds = rounds();
    let calls = env_usize("SEGSTORE_BENCH_REDIS_CALLS", 20_000);
    let secs = env_usize("SEGSTORE_BENCH_SECS", 2) as f64;
    let txn_count = env_usize("SEGSTORE_BENCH_TXNS", 100).max(1);
    let load_start = loadavg();
    let command = format!(
        "SEGSTORE_BENCH_KEYS={n} SEGSTORE_BENCH_ROUNDS={rounds} SEGSTORE_BENCH_REDIS_CALLS={calls} SEGSTORE_BENCH_SECS={secs} SEGSTORE_BENCH_TXNS={txn_count} scripts/bench-redis-endpoint.sh"
    );
    let redis_version = Command::new("redis-server")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .map_err(|e| {
            format!("redis-server is needed (scripts/bench-redis-endpoint.sh installs it): {e}")
        })?;
    println!(
        "## serve --redis against redis-server, {n} contexts — {}",
        machine()
    );
    println!("{redis_version}");
    println!("load average at start: {load_start}");
    println!("reproduce: {command}");

    let fixture = fixture(Shape::LdHash, n)?;
    let scratch = bench_root().join(format!("redis-endpoint-{n}"));
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)?;
    }
    std::fs::create_dir_all(&scratch)?;
    let sockets = tempfile::tempdir()?;
    let store_dir = scratch.join("store");
    copy_dir(&fixture.store_dir(), &store_dir)?;
    let redis_dir = scratch.join("redis");
    std::fs::create_dir_all(&redis_dir)?;
    let seg_sock = sockets.path().join("segstore.sock");
    let redis_sock = sockets.path().join("redis.sock");
    let redis_port = free_port()?;

    let mut redis = start_redis(&redis_dir, redis_port, &redis_sock)?;
    {
        let mut con = redis.connect(Transport::Tcp)?;
        redis_load(&mut con, Shape::LdHash, n)?;
    }
    let mut seg = start_segstore(&store_dir, &seg_sock)?;

    let hits: Vec<Probe> = probe_indexes(PROBES, n, 23)
        .into_iter()
        .map(|i| probe(&Shape::LdHash.key(i), 1))
        .collect();
    let misses: Vec<Probe> = (0..PROBES as u64)
        .map(|i| probe(&Shape::LdHash.miss(i, n), 0))
        .collect();
    let mixed: Vec<Probe> = (0..PROBES)
        .map(|i| {
            if i % 2 == 0 {
                probe(
                    &Shape::LdHash.key(probe_indexes(1, n, 1000 + i as u64)[0]),
                    1,
                )
            } else {
                probe(&Shape::LdHash.miss(PROBES as u64 + i as u64, n), 0)
            }
        })
        .collect();

    // Warm both servers over every probe once (segstore maps its tables on demand).
    for server in [&seg, &redis] {
        let mut c = client(server, Transport::Unix, ClientKind::Raw);
        for p in hits.iter().chain(&misses).chain(&mixed) {
            assert_eq!(c.membership(p), p.members, "{}", server.kind.name());
        }
    }

    let mut goals: Vec<Goal> = Vec::new();

    // --- Latency
    println!("\n### Membership latency (SMEMBERS include + SMEMBERS exclude, one connection, no pipelining)\n");
    println!("{calls} calls per measurement, each timed alone; median over {rounds} rounds alternating the servers.\n");
    println!("| client | transport | probe | segstore p50 | redis p50 | ratio | segstore p99 | redis p99 | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for kind in [ClientKind::Crate, ClientKind::Raw] {
        for transport in [Transport::Tcp, Transport::Unix] {
            for (probe_name, probes) in [("hit", &hits), ("miss", &misses)] {
                let mut s = (Vec::new(), Vec::new());
                let mut r = (Vec::new(), Vec::new());
                for round in 0..rounds {
                    let order = if round % 2 == 0 {
                        [&seg, &redis]
                    } else {
                        [&redis, &seg]
                    };
                    for server in order {
                        let mut c = client(server, transport, kind);
                        let (p50, p99) = latency(&mut *c, probes, calls, round * 4_001);
                        let into = if server.kind == Kind::Segstore {
                            &mut s
                        } else {
                            &mut r
                        };
                        into.0.push(p50);
                        into.1.push(p99);
                    }
                }
                let (s50, s99, r50, r99) = (median(s.0), median(s.1), median(r.0), median(r.1));
                println!(
                    "| {} | {} | {probe_name} | {} | {} | {:.2} | {} | {} | {:.2} |",
                    kind.name(),
                    transport.name(),
                    fmt_ns(s50),
                    fmt_ns(r50),
                    s50 / r50,
                    fmt_ns(s99),
                    fmt_ns(r99),
                    s99 / r99
                );
                let _ = std::io::stdout().flush();
                for (pct, ours, theirs) in [("p50", s50, r50), ("p99", s99, r99)] {
                    goals.push(Goal {
                        what: format!(
                            "membership {probe_name} {pct}, {}, {}",
                            transport.name(),
                            kind.name()
                        ),
                        ours: fmt_ns(ours),
                        redis: fmt_ns(theirs),
                        ratio: ours / theirs,
                        goal: "≤ 1.0× redis",
                        to_goal: ours / theirs,
                    });
                }
            }
        }
    }

    // --- Throughput
    println!("\n### Throughput (membership calls/s, half hits, half misses)\n");
    println!("Each connection is a client thread in this process doing the 2×SMEMBERS loop; {secs} s per measurement, median over {rounds} rounds alternating the servers. CPU: cores used (CPU-s per s) by the server process and by this process (the load generator), from /proc/PID/stat.\n");
    println!("| client | transport | conns | segstore calls/s | redis calls/s | ratio | segstore server CPU | redis server CPU | client CPU (segstore run / redis run) | server CPU per call (segstore / redis) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for kind in [ClientKind::Crate, ClientKind::Raw] {
        for transport in [Transport::Tcp, Transport::Unix] {
            for conns in [4, 8] {
                let mut s: Vec<Throughput> = Vec::new();
                let mut r: Vec<Throughput> = Vec::new();
                for round in 0..rounds {
                    let order = if round % 2 == 0 {
                        [&seg, &redis]
                    } else {
                        [&redis, &seg]
                    };
                    for server in order {
                        let t = throughput(server, transport, kind, conns, &mixed, secs);
                        if server.kind == Kind::Segstore {
                            s.push(t);
                        } else {
                            r.push(t);
                        }
                    }
                }
                let med =
                    |v: &[Throughput], f: fn(&Throughput) -> f64| median(v.iter().map(f).collect());
                let (sc, rc) = (med(&s, |t| t.calls_per_sec), med(&r, |t| t.calls_per_sec));
                println!(
                    "| {} | {} | {conns} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} / {:.2} | {:.1} µs / {:.1} µs |",
                    kind.name(),
                    transport.name(),
                    fmt_rate(sc),
                    fmt_rate(rc),
                    sc / rc,
                    med(&s, |t| t.server_cpu),
                    med(&r, |t| t.server_cpu),
                    med(&s, |t| t.client_cpu),
                    med(&r, |t| t.client_cpu),
                    med(&s, |t| t.server_cpu / t.calls_per_sec * 1e6),
                    med(&r, |t| t.server_cpu / t.calls_per_sec * 1e6),
                );
                let _ = std::io::stdout().flush();
                goals.push(Goal {
                    what: format!(
                        "throughput, {conns} conns, {}, {}",
                        transport.name(),
                        kind.name()
                    ),
                    ours: format!("{}/s", fmt_rate(sc)),
                    redis: format!("{}/s", fmt_rate(rc)),
                    ratio: sc / rc,
                    goal: "≥ 2× redis",
                    to_goal: 2.0 / (sc / rc),
                });
            }
        }
    }
    let bench_ok = Command::new("redis-benchmark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if bench_ok {
        println!("\n`redis-benchmark` (C load generator, one thread, Unix socket), `SMEMBERS {REDIS_PREFIX}:big_segment_include:__rand_int__`: its keys are 12-digit numbers, not LD hashes, so every call is a miss on both servers. Requests/s of single SMEMBERS (a membership call is two). Median over {rounds} rounds.\n");
        println!("| conns | segstore SMEMBERS/s | redis SMEMBERS/s | ratio | segstore server CPU | redis server CPU | server CPU per SMEMBERS (segstore / redis) |");
        println!("|---|---|---|---|---|---|---|");
        for conns in [4, 8, 32] {
            let mut s = Vec::new();
            let mut r = Vec::new();
            for round in 0..rounds {
                let order = if round % 2 == 0 {
                    [&seg, &redis]
                } else {
                    [&redis, &seg]
                };
                for server in order {
                    if let Some(v) = redis_benchmark(server, conns, 200_000) {
                        if server.kind == Kind::Segstore {
                            s.push(v);
                        } else {
                            r.push(v);
                        }
                    }
                }
            }
            let (sr, rr) = (
                median(s.iter().map(|v| v.0).collect()),
                median(r.iter().map(|v| v.0).collect()),
            );
            println!(
                "| {conns} | {} | {} | {:.2} | {:.2} | {:.2} | {:.1} µs / {:.1} µs |",
                fmt_rate(sr),
                fmt_rate(rr),
                sr / rr,
                median(s.iter().map(|v| v.1).collect()),
                median(r.iter().map(|v| v.1).collect()),
                median(s.iter().map(|v| v.1 / v.0 * 1e6).collect()),
                median(r.iter().map(|v| v.1 / v.0 * 1e6).collect()),
            );
            goals.push(Goal {
                what: format!("throughput, redis-benchmark -c {conns}, Unix, misses"),
                ours: format!("{}/s", fmt_rate(sr)),
                redis: format!("{}/s", fmt_rate(rr)),
                ratio: sr / rr,
                goal: "≥ 2× redis",
                to_goal: 2.0 / (sr / rr),
            });
        }
    } else {
        println!("\n(redis-benchmark not found: the C load generator rows are skipped)");
    }

    // --- Memory
    println!("\n### Memory\n");
    let rss_kib = rss_anon_of(seg.pid()).unwrap_or(0);
    let disk = tree_bytes(&store_dir)?;
    let (used_memory, redis_rss): (u64, u64) = {
        let mut con = redis.connect(Transport::Tcp)?;
        (
            info_field(&mut con, "memory", "used_memory")?.parse()?,
            info_field(&mut con, "memory", "used_memory_rss")?.parse()?,
        )
    };
    let ours = rss_kib as f64 * 1024.0 + disk as f64;
    println!("| server | anonymous RSS | on disk | total | per context |");
    println!("|---|---|---|---|---|");
    println!(
        "| segstore serve | {} (RssAnon) | {} | {} | {:.1} B |",
        fmt_mib(rss_kib as f64 * 1024.0),
        fmt_mib(disk as f64),
        fmt_mib(ours),
        ours / n as f64
    );
    println!(
        "| redis-server | used_memory {} (RSS {}) | — | {} | {:.1} B |",
        fmt_mib(used_memory as f64),
        fmt_mib(redis_rss as f64),
        fmt_mib(used_memory as f64),
        used_memory as f64 / n as f64
    );
    goals.push(Goal {
        what: "memory: RssAnon + disk vs used_memory".into(),
        ours: fmt_mib(ours),
        redis: fmt_mib(used_memory as f64),
        ratio: ours / used_memory as f64,
        goal: "≤ 1/8 redis",
        to_goal: ours / used_memory as f64 * 8.0,
    });

    // --- Restart
    println!("\n### Restart: process start to the first answered membership (a hit)\n");
    let save_started = Instant::now();
    {
        let mut con = redis.connect(Transport::Tcp)?;
        redis::cmd("SAVE").query::<()>(&mut con)?;
    }
    let save_secs = save_started.elapsed().as_secs_f64();
    let rdb_bytes = std::fs::metadata(redis_dir.join("dump.rdb"))?.len();
    let mut seg_times = Vec::new();
    let mut redis_times = Vec::new();
    let probe0 = &hits[0];
    for _ in 0..rounds {
        seg.stop();
        let (s, t) = first_answer(|| start_segstore(&store_dir, &seg_sock), probe0)?;
        seg = s;
        seg_times.push(t.as_secs_f64());
        redis.stop();
        let (r, t) = first_answer(|| spawn_redis(&redis_dir, redis_port, &redis_sock), probe0)?;
        redis = r;
        redis_times.push(t.as_secs_f64());
    }
    let (st, rt) = (median(seg_times.clone()), median(redis_times.clone()));
    println!("| server | median | runs |");
    println!("|---|---|---|");
    let runs = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{:.1} ms", s * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| segstore serve (open the store) | {:.1} ms | {} |",
        st * 1e3,
        runs(&seg_times)
    );
    println!(
        "| redis-server (load a {} RDB; SAVE took {save_secs:.2} s) | {:.1} ms | {} |",
        fmt_mib(rdb_bytes as f64),
        rt * 1e3,
        runs(&redis_times)
    );
    goals.push(Goal {
        what: "restart to first answered membership".into(),
        ours: format!("{:.1} ms", st * 1e3),
        redis: format!("{:.1} ms", rt * 1e3),
        ratio: st / rt,
        goal: "≤ 1/20 redis",
        to_goal: st / rt * 20.0,
    });
    let rss_after_restart = rss_anon_of(seg.pid()).unwrap_or(0);

    // --- Writes
    println!("\n### Relay-style writes: WATCH lock; GET cursor; MULTI; SET lock \"\"; SET cursor; {TXN_SADDS} × SADD include:{{new hash}} {RELAY_SEGMENT}; EXEC\n");
    println!("{txn_count} transactions back to back on one TCP connection per measurement (MULTI..EXEC sent as one write, as go-redis's TxPipelined does); median over {rounds} rounds. segstore fsyncs each EXEC before answering it.\n");
    println!("| server | key-ops/s | txn p50 | txn p99 | ratio (segstore / this, key-ops/s) |");
    println!("|---|---|---|---|---|");
    let mut write_rows: Vec<(String, Vec<Writes>)> = Vec::new();
    let mut seg_writes = Vec::new();
    let mut redis_writes = Vec::new();
    let mut seg_con = seg.connect(Transport::Tcp)?;
    let mut redis_con = redis.connect(Transport::Tcp)?;
    for round in 0..rounds {
        let txns = transactions(&format!("a{round}"), txn_count);
        if round % 2 == 0 {
            seg_writes.push(write_txns(&mut seg_con, &txns)?);
            redis_writes.push(write_txns(&mut redis_con, &txns)?);
        } else {
            redis_writes.push(write_txns(&mut redis_con, &txns)?);
            seg_writes.push(write_txns(&mut seg_con, &txns)?);
        }
    }
    // The durable baseline: the same redis-server with an AOF fsynced at every write.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendonly")
        .arg("yes")
        .query::<()>(&mut redis_con)?;
    let rewrite_started = Instant::now();
    loop {
        let busy = info_field(&mut redis_con, "persistence", "aof_rewrite_in_progress")? != "0"
            || info_field(&mut redis_con, "persistence", "aof_rewrite_scheduled")? != "0"
            || info_field(&mut redis_con, "persistence", "aof_enabled")? != "1";
        if !busy {
            break;
        }
        if rewrite_started.elapsed() > Duration::from_secs(900) {
            return Err("the AOF rewrite did not finish".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg("always")
        .query::<()>(&mut redis_con)?;
    let mut seg_writes2 = Vec::new();
    let mut aof_writes = Vec::new();
    for round in 0..rounds {
        let txns = transactions(&format!("b{round}"), txn_count);
        if round % 2 == 0 {
            seg_writes2.push(write_txns(&mut seg_con, &txns)?);
            aof_writes.push(write_txns(&mut redis_con, &txns)?);
        } else {
            aof_writes.push(write_txns(&mut redis_con, &txns)?);
            seg_writes2.push(write_txns(&mut seg_con, &txns)?);
        }
    }
    write_rows.push((
        "segstore serve (beside the no-persistence runs)".into(),
        seg_writes,
    ));
    write_rows.push(("redis-server, no persistence".into(), redis_writes));
    write_rows.push(("segstore serve (beside the AOF runs)".into(), seg_writes2));
    write_rows.push(("redis-server, appendfsync always".into(), aof_writes));
    let meds: Vec<(String, Writes)> = write_rows
        .into_iter()
        .map(|(name, v)| {
            (
                name,
                Writes {
                    key_ops_per_sec: median(v.iter().map(|w| w.key_ops_per_sec).collect()),
                    p50_ms: median(v.iter().map(|w| w.p50_ms).collect()),
                    p99_ms: median(v.iter().map(|w| w.p99_ms).collect()),
                },
            )
        })
        .collect();
    for (i, (name, w)) in meds.iter().enumerate() {
        let ours = meds[i - i % 2].1.key_ops_per_sec;
        println!(
            "| {name} | {} | {:.2} ms | {:.2} ms | {} |",
            fmt_rate(w.key_ops_per_sec),
            w.p50_ms,
            w.p99_ms,
            if i % 2 == 1 {
                format!("{:.2}", ours / w.key_ops_per_sec)
            } else {
                "—".into()
            }
        );
    }
    for (i, what) in [(1, "no persistence"), (3, "appendfsync always")] {
        let (ours, theirs) = (meds[i - 1].1, meds[i].1);
        goals.push(Goal {
            what: format!("writes, key-ops/s vs redis {what}"),
            ours: format!("{}/s", fmt_rate(ours.key_ops_per_sec)),
            redis: format!("{}/s", fmt_rate(theirs.key_ops_per_sec)),
            ratio: ours.key_ops_per_sec / theirs.key_ops_per_sec,
            goal: "(no bar: reported)",
            to_goal: f64::NAN,
        });
    }
    let rss_after_writes = rss_anon_of(seg.pid()).unwrap_or(0);
    println!(
        "\nsegstore serve RssAnon: {} after the reads, {} after a restart, {} after the writes ({} key-ops in its overlay).",
        fmt_mib(rss_kib as f64 * 1024.0),
        fmt_mib(rss_after_restart as f64 * 1024.0),
        fmt_mib(rss_after_writes as f64 * 1024.0),
        2 * rounds * txn_count * TXN_SADDS
    );

    // --- Summary
    println!("\n### Summary against the goals (issue 11), {n} contexts\n");
    println!("| measurement | segstore | redis-server | ratio (segstore / redis) | goal | ratio to goal (≤ 1 met) | status |");
    println!("|---|---|---|---|---|---|---|");
    for g in &goals {
        let status = if g.to_goal.is_nan() {
            "—"
        } else if g.to_goal <= 1.0 {
            "met"
        } else {
            "not met"
        };
        println!(
            "| {} | {} | {} | {:.3} | {} | {} | {status} |",
            g.what,
            g.ours,
            g.redis,
            g.ratio,
            g.goal,
            if g.to_goal.is_nan() {
                "—".into()
            } else {
                format!("{:.2}", g.to_goal)
            }
        );
    }
    println!(
        "\nload average at start: {load_start}; at end: {}",
        loadavg()
    );
    println!("reproduce: {command}");
    drop(seg_con);
    drop(redis_con);
    drop(seg);
    drop(redis);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}
