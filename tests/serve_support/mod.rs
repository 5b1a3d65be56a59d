//! Helpers shared by the `serve` tests: a `segstore serve` child process, and a real
//! `redis-server` to compare it with.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `segstore --dir DIR serve --redis 127.0.0.1:0 ...`.
pub struct Serve {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    stderr: Option<std::thread::JoinHandle<String>>,
    /// The other "listening" lines, as they arrive.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Serve {
    /// Starts the server on `dir` (created with `--init`), with `extra` arguments, and waits
    /// for its "listening" line.
    pub fn start(dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_with_env(dir, extra, &[])
    }

    /// As [`start`](Serve::start), with environment variables.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_segstore"));
        cmd.arg("--dir")
            .arg(dir)
            .args(["serve", "--redis", "127.0.0.1:0", "--init"])
            .args(extra)
            .env_remove("SEGSTORE_REDIS_PASSWORD")
            .env("SEGSTORE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn segstore serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .expect("read the listening line");
        // Later lines (other listeners) are passed on as they come, so the server never writes
        // to a closed pipe.
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let addr = line
            .trim()
            .strip_prefix("serve: redis listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!("unexpected first line {line:?}")
            })
            .parse()
            .expect("an address");
        Serve {
            child: Some(child),
            addr,
            dir: dir.to_owned(),
            stderr: Some(stderr),
            lines,
        }
    }

    /// The address of the next listener announced as `serve: {what} listening on ADDR`.
    pub fn listener(&self, what: &str) -> String {
        let prefix = format!("serve: {what} listening on ");
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("no {what} listener was announced"));
            if let Some(addr) = line.strip_prefix(&prefix) {
                return addr.trim().to_owned();
            }
        }
    }

    /// `redis://ADDR/`.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// A new connection with the `redis` crate.
    pub fn conn(&self) -> redis::Connection {
        connect(&self.url())
    }

    /// A raw TCP connection.
    pub fn tcp(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        stream
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, and the exit status and stderr once it has exited.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = wait_with_deadline(&mut child, Duration::from_secs(20));
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default());
        (status, stderr.unwrap_or_default())
    }

    /// SIGKILL, reaped.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A connection to `url` with the `redis` crate.
pub fn connect(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(10))
        .expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    conn
}

/// A running `redis-server` on a free loopback port, without persistence.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// Starts one, or `None` when `redis-server` is not installed and `SEGSTORE_REQUIRE_REDIS`
    /// is unset (CI sets it, so there the test fails instead of skipping).
    pub fn start() -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                std::env::var_os("SEGSTORE_REQUIRE_REDIS").is_none(),
                "redis-server is not installed (apt-get install redis-server) and SEGSTORE_REQUIRE_REDIS is set"
            );
            eprintln!("SKIPPED: redis-server is not installed; the differential test needs it");
            return None;
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(RedisServer { child, port })
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends raw bytes and reads until `expect` bytes arrived or the peer closed: what a
/// misbehaving client sees.
pub fn exchange(stream: &mut TcpStream, send: &[u8], expect: usize) -> Vec<u8> {
    use std::io::Write;
    stream.write_all(send).expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while got.len() < expect {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("read after {} bytes: {e}", got.len()),
        }
    }
    got
}

/// True once the peer has closed the connection (reads 0 bytes), within `limit`.
pub fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

/// A read-only handle on `dir` with no background poll: what another process sees now.
pub fn reader(dir: &Path) -> segstore::ReadOnlyStore {
    segstore::ReadOnlyStore::open(
        dir,
        segstore::Options {
            poll_interval: None,
            ..segstore::Options::default()
        },
    )
    .expect("open the store read-only")
}
