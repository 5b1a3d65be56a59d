//! A scripted fake of LaunchDarkly's two big-segment endpoints, on 127.0.0.1 and an ephemeral
//! port: `GET /sdk/big-segments/revisions[?after=C]` (a JSON array of patches) and
//! `GET /big-segments` (SSE, chunked). Every request is recorded; each stream connection plays
//! the next [`StreamScript`] (then holds the connection open with no events).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// `poll` or `stream` (or the unknown path).
    pub endpoint: String,
    /// The decoded `after` query parameter.
    pub after: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// When the request was read.
    pub at: Instant,
}

/// The answer to one poll.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This HTTP status, empty body.
    Status(u16),
    /// 200 with this JSON body.
    Json(String),
}

impl Reply {
    /// 200 with these patches.
    pub fn page(patches: &[Value]) -> Reply {
        Reply::Json(Value::Array(patches.to_vec()).to_string())
    }
}

/// What one stream connection does.
pub enum StreamScript {
    /// Answer with this status and close.
    Status(u16),
    /// Answer 200 and play the steps; after the last one, end the stream cleanly.
    Steps(Vec<Step>),
}

/// A step of a stream connection.
pub enum Step {
    /// One SSE event whose data is this JSON text (sent as one chunk).
    Event(String),
    /// Raw bytes of the event stream, as one chunk (half an event, a comment...).
    Raw(String),
    /// Wait.
    Pause(Duration),
    /// Send each raw text received (one chunk each, the time its write began recorded in
    /// [`FakeLd::sent`]) until the sender is dropped.
    Live(Receiver<String>),
    /// Keep the connection open, silent, until the fake shuts down.
    Hold,
}

type PollFn = Box<dyn FnMut(&Hit) -> Reply + Send>;

struct Shared {
    stop: AtomicBool,
    hits: Mutex<Vec<Hit>>,
    poll: Mutex<PollFn>,
    streams: Mutex<VecDeque<StreamScript>>,
    sent: Mutex<Vec<Instant>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fake. Dropping it closes every connection.
pub struct FakeLd {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

/// A poll function answering `replies` in order, then empty pages.
pub fn replies(replies: Vec<Reply>) -> impl FnMut(&Hit) -> Reply + Send + 'static {
    let mut queue: VecDeque<Reply> = replies.into();
    move |_| {
        queue
            .pop_front()
            .unwrap_or_else(|| Reply::Json("[]".to_owned()))
    }
}

impl FakeLd {
    /// Starts the fake with a poll function and the stream connections' scripts.
    pub fn start(
        poll: impl FnMut(&Hit) -> Reply + Send + 'static,
        streams: Vec<StreamScript>,
    ) -> FakeLd {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            hits: Mutex::new(Vec::new()),
            poll: Mutex::new(Box::new(poll)),
            streams: Mutex::new(streams.into()),
            sent: Mutex::new(Vec::new()),
        });
        let accept_shared = Arc::clone(&shared);
        let accept = std::thread::spawn(move || {
            while !accept_shared.stop.load(Ordering::Acquire) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let shared = Arc::clone(&accept_shared);
                        std::thread::spawn(move || serve(conn, &shared));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FakeLd {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT`: both the base and the stream URI.
    pub fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        lock(&self.shared.hits).clone()
    }

    /// The requests to one endpoint (`poll` or `stream`).
    pub fn hits_to(&self, endpoint: &str) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| h.endpoint == endpoint)
            .collect()
    }

    /// When the write of each [`Step::Live`] text began, in order.
    pub fn sent(&self) -> Vec<Instant> {
        lock(&self.shared.sent).clone()
    }

    /// Adds stream scripts for later connections.
    pub fn push_stream(&self, script: StreamScript) {
        lock(&self.shared.streams).push_back(script);
    }
}

impl Drop for FakeLd {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn read_request(conn: &TcpStream) -> Option<Hit> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let target = line.split_whitespace().nth(1)?.to_owned();
    let mut authorization = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).ok()? == 0 {
            return None;
        }
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_owned());
            }
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let after = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "after")
        .map(|(_, v)| percent_decode(v));
    let endpoint = match path {
        "/sdk/big-segments/revisions" => "poll",
        "/big-segments" => "stream",
        other => other,
    }
    .to_owned();
    Some(Hit {
        endpoint,
        after,
        authorization,
        at: Instant::now(),
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn respond(conn: &mut TcpStream, status: u16, content_type: &str, body: &str) {
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        reason(status),
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body.as_bytes());
    let _ = conn.flush();
}

fn chunk(conn: &mut TcpStream, text: &str) -> bool {
    let framed = format!("{:x}\r\n{text}\r\n", text.len());
    conn.write_all(framed.as_bytes()).is_ok() && conn.flush().is_ok()
}

fn serve(mut conn: TcpStream, shared: &Shared) {
    let _ = conn.set_nodelay(true);
    let Some(hit) = read_request(&conn) else {
        return;
    };
    lock(&shared.hits).push(hit.clone());
    match hit.endpoint.as_str() {
        "poll" => {
            let reply = (lock(&shared.poll))(&hit);
            match reply {
                Reply::Status(code) => respond(&mut conn, code, "text/plain", ""),
                Reply::Json(body) => respond(&mut conn, 200, "application/json", &body),
            }
        }
        "stream" => {
            let script = lock(&shared.streams)
                .pop_front()
                .unwrap_or(StreamScript::Steps(vec![Step::Hold]));
            let steps = match script {
                StreamScript::Status(code) => {
                    respond(&mut conn, code, "text/plain", "");
                    return;
                }
                StreamScript::Steps(steps) => steps,
            };
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                        Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n";
            if conn.write_all(head.as_bytes()).is_err() {
                return;
            }
            for step in steps {
                if !play(&mut conn, shared, step) {
                    return;
                }
            }
            let _ = conn.write_all(b"0\r\n\r\n");
            let _ = conn.flush();
        }
        _ => respond(&mut conn, 404, "text/plain", ""),
    }
}

/// Plays one step; false when the connection is gone or the fake stops.
fn play(conn: &mut TcpStream, shared: &Shared, step: Step) -> bool {
    match step {
        Step::Event(data) => chunk(conn, &format!("event: patch\ndata: {data}\n\n")),
        Step::Raw(text) => chunk(conn, &text),
        Step::Pause(d) => {
            std::thread::sleep(d);
            !shared.stop.load(Ordering::Acquire)
        }
        Step::Live(rx) => loop {
            if shared.stop.load(Ordering::Acquire) {
                return false;
            }
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(text) => {
                    let at = Instant::now();
                    if !chunk(conn, &text) {
                        return false;
                    }
                    lock(&shared.sent).push(at);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return true,
            }
        },
        Step::Hold => {
            while !shared.stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(10));
            }
            false
        }
    }
}

/// A LaunchDarkly patch: `segment` moves from `prev` to `version`, adding and removing
/// included keys.
pub fn patch(segment: &str, prev: &str, version: &str, add: &[&str], remove: &[&str]) -> Value {
    json!({
        "environmentId": "env-test",
        "segmentId": segment,
        "version": version,
        "previousVersion": prev,
        "changes": {"included": {"add": add, "remove": remove}, "excluded": {"add": [], "remove": []}}
    })
}

/// The data of one stream event: a JSON array of patches.
pub fn event(patches: &[Value]) -> String {
    Value::Array(patches.to_vec()).to_string()
}
