//! The two endpoints of LaunchDarkly's big-segment feed, over HTTP: the polling endpoint
//! (`GET {base}/sdk/big-segments/revisions[?after=CURSOR]`, a JSON array of patches) and the
//! SSE stream (`GET {stream}/big-segments`, each event's data a JSON array of patches).
//!
//! Calls here block; the engine runs them on helper threads so that it can stop at once.

use super::SyncConfig;
use crate::change::Patch;
use crate::ingest::{parse_line, Format, Parsed};
use eventsource_stream::Eventsource;
use futures_core::Stream;
use std::fmt;
use std::io::{self, Read};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::Agent;

/// Path of the polling endpoint under the base URI.
pub const POLL_PATH: &str = "/sdk/big-segments/revisions";
/// Path of the stream endpoint under the stream URI.
pub const STREAM_PATH: &str = "/big-segments";

/// Bytes asked of the socket per read of the stream.
const STREAM_READ_CHUNK: usize = 64 * 1024;

/// Why a request to the feed did not give usable patches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FeedFailure {
    /// Connecting, sending or receiving failed (including timeouts and TLS errors).
    Network(String),
    /// The server answered with this HTTP status.
    Status(u16),
    /// The server answered 200 with a body that is not an array of patches.
    BadBody(String),
}

/// How a failure is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Network errors, 408, 429, 5xx, bad bodies, dropped streams: the short schedule.
    Soon,
    /// 401, 403 and other 4xx: the long schedule (the key or the request is wrong, and hammering
    /// the service will not fix it).
    Later,
}

impl FeedFailure {
    pub(crate) fn retry(&self) -> Retry {
        match self {
            FeedFailure::Status(408 | 429) => Retry::Soon,
            FeedFailure::Status(code) if (400..500).contains(code) => Retry::Later,
            _ => Retry::Soon,
        }
    }
}

impl fmt::Display for FeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedFailure::Network(e) => write!(f, "network error: {e}"),
            FeedFailure::Status(code @ (401 | 403)) => {
                write!(
                    f,
                    "HTTP {code} (is LD_SDK_KEY a valid server-side SDK key?)"
                )
            }
            FeedFailure::Status(code) => write!(f, "HTTP {code}"),
            FeedFailure::BadBody(e) => write!(f, "unusable response: {e}"),
        }
    }
}

fn from_ureq(e: ureq::Error) -> FeedFailure {
    match e {
        ureq::Error::StatusCode(code) => FeedFailure::Status(code),
        other => FeedFailure::Network(other.to_string()),
    }
}

/// Parses a JSON array of patches (a poll page or one stream event's data).
pub(crate) fn parse_patches(body: &str) -> Result<Vec<Patch>, FeedFailure> {
    if !body.trim_start().starts_with('[') {
        return Err(FeedFailure::BadBody(
            "expected a JSON array of patches".to_owned(),
        ));
    }
    match parse_line(&Format::Patches, body, false) {
        Ok(Parsed::Patches(patches)) => Ok(patches),
        Ok(Parsed::Changes(_)) => Err(FeedFailure::BadBody("not patches".to_owned())),
        Err(e) => Err(FeedFailure::BadBody(e.to_string())),
    }
}

/// Rustls with the built-in webpki roots, or with [`SyncConfig::ca_certificates`] instead.
fn tls_config(config: &SyncConfig) -> TlsConfig {
    let mut tls = TlsConfig::builder();
    if let Some(certs) = &config.ca_certificates {
        let certs: Vec<Certificate<'static>> = certs
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect();
        tls = tls.root_certs(RootCerts::new_with_certs(&certs));
    }
    tls.build()
}

/// The HTTP side of a sync: one agent for polls, one for the long-lived stream (they differ in
/// read timeouts), and the SDK key.
pub(crate) struct Feed {
    poll_agent: Agent,
    stream_agent: Agent,
    poll_url: String,
    stream_url: String,
    sdk_key: String,
    max_page_bytes: u64,
    max_event_bytes: u64,
}

impl Feed {
    pub(crate) fn new(config: &SyncConfig) -> Feed {
        let user_agent = format!("segstore/{}", env!("CARGO_PKG_VERSION"));
        // Proxies: ureq's default configuration reads ALL_PROXY, HTTPS_PROXY, HTTP_PROXY (and
        // their lower-case forms) and NO_PROXY once, here (docs/sync.md).
        let tls = tls_config(config);
        let agent = |per_read| -> Agent {
            Agent::config_builder()
                .user_agent(user_agent.as_str())
                .timeout_connect(Some(config.connect_timeout))
                .timeout_recv_response(Some(config.response_timeout))
                .timeout_per_read(Some(per_read))
                .tls_config(tls.clone())
                .build()
                .into()
        };
        Feed {
            poll_agent: agent(config.poll_read_timeout),
            stream_agent: agent(config.stream_read_timeout),
            poll_url: format!("{}{POLL_PATH}", config.base_uri.trim_end_matches('/')),
            stream_url: format!("{}{STREAM_PATH}", config.stream_uri.trim_end_matches('/')),
            sdk_key: config.sdk_key.0.clone(),
            max_page_bytes: config.max_page_bytes,
            max_event_bytes: config.max_event_bytes,
        }
    }

    /// One poll: the patches after `cursor` (all from the start when it is empty).
    pub(crate) fn poll(&self, cursor: &str) -> Result<Vec<Patch>, FeedFailure> {
        let mut request = self
            .poll_agent
            .get(&self.poll_url)
            .header("Authorization", &self.sdk_key)
            .header("Accept", "application/json");
        if !cursor.is_empty() {
            request = request.query("after", cursor);
        }
        let mut response = request.call().map_err(from_ureq)?;
        let body = response
            .body_mut()
            .with_config()
            .limit(self.max_page_bytes)
            .read_to_string()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(limit) => {
                    FeedFailure::BadBody(format!("page larger than {limit} bytes"))
                }
                other => from_ureq(other),
            })?;
        parse_patches(&body)
    }

    /// Opens the stream. The reader yields the raw `text/event-stream` bytes.
    pub(crate) fn open_stream(&self) -> Result<impl Read + Send + 'static, FeedFailure> {
        let response = self
            .stream_agent
            .get(&self.stream_url)
            .header("Authorization", &self.sdk_key)
            .header("Accept", "text/event-stream")
            .header("Cache-Control", "no-cache")
            .call()
            .map_err(from_ureq)?;
        Ok(response.into_body().into_reader())
    }
}

/// What the stream thread reports.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// The stream is open (HTTP 200).
    Opened,
    /// Opening it failed.
    Refused(FeedFailure),
    /// One event's data (non-empty).
    Event(String),
    /// The stream ended: cleanly (`None`) or with an error.
    Ended(Option<FeedFailure>),
}

/// Opens the stream and reads it to its end, reporting through `send` (which returns false
/// once nobody listens). `cancel` stops the reading at the next chunk that arrives, or at the
/// next read timeout.
pub(crate) fn run_stream(
    feed: &Feed,
    cancel: &AtomicBool,
    mut send: impl FnMut(StreamItem) -> bool,
) {
    let reader = match feed.open_stream() {
        Ok(reader) => reader,
        Err(failure) => {
            send(StreamItem::Refused(failure));
            return;
        }
    };
    if !send(StreamItem::Opened) {
        return;
    }
    let chunks = ReadChunks {
        reader,
        cancel,
        buf: vec![0; STREAM_READ_CHUNK],
        done: false,
        events: EventBounds::new(feed.max_event_bytes),
    };
    let mut events = chunks.eventsource();
    let mut events = Pin::new(&mut events);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        // `ReadChunks` never returns `Pending` (it blocks instead), so neither does the parser
        // over it: one poll is one step of a blocking read loop.
        let item = match events.as_mut().poll_next(&mut cx) {
            Poll::Ready(Some(Ok(event))) => {
                if event.data.trim().is_empty() {
                    continue;
                }
                StreamItem::Event(event.data)
            }
            Poll::Ready(Some(Err(e))) => {
                StreamItem::Ended(Some(FeedFailure::Network(format!("stream: {e}"))))
            }
            Poll::Ready(None) => StreamItem::Ended(None),
            Poll::Pending => StreamItem::Ended(Some(FeedFailure::Network(
                "stream reader stalled".to_owned(),
            ))),
        };
        let end = matches!(item, StreamItem::Ended(_));
        if cancel.load(Ordering::Acquire) || !send(item) || end {
            return;
        }
    }
}

/// A blocking reader presented as a stream of byte chunks, for the SSE parser.
struct ReadChunks<'a, R> {
    reader: R,
    cancel: &'a AtomicBool,
    buf: Vec<u8>,
    done: bool,
    /// Where the bytes stand against the end of the current event.
    events: EventBounds,
}

/// Tracks SSE event boundaries (a blank line, with `\n`, `\r\n` or `\r` line ends) in the
/// raw bytes, so that one event larger than `max` fails the stream instead of growing the
/// parser's buffer without end: a broken or hostile server cannot exhaust memory.
#[derive(Debug)]
struct EventBounds {
    max: u64,
    /// Bytes since the last blank line.
    in_event: u64,
    /// Bytes of the current line so far.
    in_line: u64,
    last_was_cr: bool,
}

impl EventBounds {
    fn new(max: u64) -> Self {
        EventBounds {
            max,
            in_event: 0,
            in_line: 0,
            last_was_cr: false,
        }
    }

    /// Accounts for `bytes`; an error once an event has grown past `max`.
    fn feed(&mut self, bytes: &[u8]) -> io::Result<()> {
        for &b in bytes {
            let line_end = match b {
                b'\r' => true,
                b'\n' => !self.last_was_cr,
                _ => false,
            };
            self.last_was_cr = b == b'\r';
            if line_end {
                if self.in_line == 0 {
                    self.in_event = 0;
                    continue;
                }
                self.in_line = 0;
            } else if b != b'\n' {
                self.in_line += 1;
            }
            self.in_event += 1;
            if self.in_event > self.max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("an event larger than {} bytes", self.max),
                ));
            }
        }
        Ok(())
    }
}

impl<R: Read + Unpin> Stream for ReadChunks<'_, R> {
    type Item = io::Result<Vec<u8>>;

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done || this.cancel.load(Ordering::Acquire) {
                return Poll::Ready(None);
            }
            match this.reader.read(&mut this.buf) {
                Ok(0) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Ok(n) => {
                    let chunk = this.buf.get(..n).unwrap_or_default().to_vec();
                    if let Err(e) = this.events.feed(&chunk) {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    return Poll::Ready(Some(Ok(chunk)));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }
}

/// A cancel flag shared by the engine and one stream thread.
pub(crate) type CancelFlag = Arc<AtomicBool>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_sort_into_the_two_schedules() {
        for code in [408, 429, 500, 502, 503] {
            assert_eq!(FeedFailure::Status(code).retry(), Retry::Soon, "{code}");
        }
        for code in [400, 401, 403, 404] {
            assert_eq!(FeedFailure::Status(code).retry(), Retry::Later, "{code}");
        }
        assert_eq!(FeedFailure::Network("x".into()).retry(), Retry::Soon);
    }

    #[test]
    fn a_page_must_be_an_array_of_patches() {
        assert_eq!(parse_patches("[]").unwrap(), vec![]);
        let page = r#"[{"segmentId": "s.g1", "version": "v1", "previousVersion": "",
                        "changes": {"included": {"add": ["k"]}}}]"#;
        let patches = parse_patches(page).unwrap();
        assert_eq!(patches[0].version, "v1");
        assert!(parse_patches(r#"{"segmentId": "s.g1", "version": "v1"}"#).is_err());
        assert!(parse_patches("[{]").is_err());
        assert!(parse_patches(r#"[{"version": "v1"}]"#).is_err());
    }

    #[test]
    fn sse_events_are_parsed_from_a_blocking_reader() {
        let cancel = AtomicBool::new(false);
        let text = ": comment\n\nevent: put\ndata: [1,\ndata: 2]\n\ndata:\n\ndata: [3]\n\n";
        let chunks = ReadChunks {
            reader: io::Cursor::new(text.as_bytes().to_vec()),
            cancel: &cancel,
            buf: vec![0; 5],
            done: false,
            events: EventBounds::new(1 << 20),
        };
        let mut events = chunks.eventsource();
        let mut events = Pin::new(&mut events);
        let mut cx = Context::from_waker(Waker::noop());
        let mut data = Vec::new();
        while let Poll::Ready(Some(item)) = events.as_mut().poll_next(&mut cx) {
            data.push(item.unwrap().data);
        }
        let data: Vec<_> = data.into_iter().filter(|d| !d.is_empty()).collect();
        assert_eq!(data, vec!["[1,\n2]".to_owned(), "[3]".to_owned()]);
    }

    #[test]
    fn event_bounds_reset_at_blank_lines_of_every_line_ending() {
        // Each event is at most 12 bytes; the stream as a whole is far longer than the cap.
        for sep in ["\n", "\r\n", "\r"] {
            let event = format!("data: [1]{sep}{sep}");
            let mut bounds = EventBounds::new(12);
            for _ in 0..1000 {
                bounds.feed(event.as_bytes()).unwrap();
            }
            // Split at every position: the state carries across chunks.
            let text = event.repeat(3);
            for cut in 0..text.len() {
                let mut bounds = EventBounds::new(12);
                bounds.feed(&text.as_bytes()[..cut]).unwrap();
                bounds.feed(&text.as_bytes()[cut..]).unwrap();
            }
        }
        // `\r\n` is one line end, not a line end and a blank line.
        let mut bounds = EventBounds::new(20);
        let err = bounds
            .feed(b"data: 1\r\ndata: 2\r\ndata: 3\r\n")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn an_oversized_event_ends_the_stream_with_an_error() {
        let cancel = AtomicBool::new(false);
        let big = format!("data: [{}]\n\n", "1,".repeat(100));
        let text = format!("data: [1]\n\n{big}data: [2]\n\n");
        let chunks = ReadChunks {
            reader: io::Cursor::new(text.into_bytes()),
            cancel: &cancel,
            buf: vec![0; 7],
            done: false,
            events: EventBounds::new(64),
        };
        let mut events = chunks.eventsource();
        let mut events = Pin::new(&mut events);
        let mut cx = Context::from_waker(Waker::noop());
        let mut seen = Vec::new();
        let mut failed = false;
        while let Poll::Ready(Some(item)) = events.as_mut().poll_next(&mut cx) {
            match item {
                Ok(event) => seen.push(event.data),
                Err(e) => {
                    assert!(e.to_string().contains("larger than 64 bytes"), "{e}");
                    failed = true;
                }
            }
        }
        assert!(failed);
        assert_eq!(
            seen,
            vec!["[1]".to_owned()],
            "nothing of or after the big event"
        );
    }
}
