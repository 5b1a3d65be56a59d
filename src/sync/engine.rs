//! The sync loop: catch up, go live, retry; one thread that owns the store's writes and waits
//! on one channel for everything else (helper threads' results, stop requests, deadlines).

use super::backoff::Backoff;
use super::chain::{applicable_prefix, event_batches};
use super::feed::{parse_patches, run_stream, CancelFlag, Feed, FeedFailure, Retry, StreamItem};
use super::{SyncConfig, SyncControl, SyncError, SyncSummary};
use crate::change::{Batch, Patch};
use crate::store::Store;
use crate::Error;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, info, warn};

/// What the engine's channel carries.
pub(crate) enum Msg {
    /// Stop after the batch in hand.
    Stop,
    /// A poll finished.
    Poll {
        id: u64,
        result: Result<Vec<Patch>, FeedFailure>,
    },
    /// News from a stream thread.
    Stream { id: u64, item: StreamItem },
}

/// Why a cycle of the loop ended.
enum Interrupt {
    /// A stop was requested.
    Stop,
    /// Something failed that waiting may fix.
    Retry { schedule: Retry, reason: String },
    /// The store failed.
    Fatal(SyncError),
}

/// The loop's states, each logged once when entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Starting,
    CatchingUp,
    Connecting,
    ClosingGap,
    Live,
    BackingOff,
    Stopped,
}

impl State {
    fn describe(self) -> &'static str {
        match self {
            State::Starting => "starting",
            State::CatchingUp => "catching up (polling)",
            State::Connecting => "connecting the stream",
            State::ClosingGap => "stream open; polling once to close the gap",
            State::Live => "live (streaming)",
            State::BackingOff => "backing off",
            State::Stopped => "stopped",
        }
    }
}

/// What applying one poll page did.
struct PageOutcome {
    applied: usize,
    /// Set when a patch did not match the cursor and stopped the page.
    mismatch: Option<String>,
}

pub(crate) struct Engine<'a> {
    store: &'a Store,
    config: &'a SyncConfig,
    feed: Arc<Feed>,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    next_id: u64,
    /// The current stream: its id and its cancel flag.
    stream: Option<(u64, CancelFlag)>,
    /// Items of the current stream that arrived while the engine waited for a poll.
    pending: VecDeque<StreamItem>,
    soon: Backoff,
    later: Backoff,
    state: State,
    summary: SyncSummary,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn retry(schedule: Retry, reason: impl Into<String>) -> Interrupt {
    Interrupt::Retry {
        schedule,
        reason: reason.into(),
    }
}

fn ops_of(patches: &[Patch]) -> u64 {
    patches.iter().map(|p| p.change.op_count() as u64).sum()
}

impl<'a> Engine<'a> {
    pub(crate) fn new(store: &'a Store, config: &'a SyncConfig, control: SyncControl) -> Self {
        Engine {
            store,
            config,
            feed: Arc::new(Feed::new(config)),
            tx: control.tx,
            rx: control.rx,
            next_id: 0,
            stream: None,
            pending: VecDeque::new(),
            soon: Backoff::new(config.transient_backoff, config.jitter),
            later: Backoff::new(config.rejected_backoff, config.jitter),
            state: State::Starting,
            summary: SyncSummary::default(),
        }
    }

    pub(crate) fn run(mut self) -> Result<SyncSummary, SyncError> {
        info!(
            base_uri = %self.config.base_uri,
            stream_uri = %self.config.stream_uri,
            cursor = ?self.cursor(),
            "sync starting"
        );
        loop {
            let result = self.cycle();
            self.drop_stream();
            match result {
                Ok(()) => continue,
                Err(Interrupt::Stop) => return Ok(self.stopped()),
                Err(Interrupt::Fatal(e)) => {
                    error!(error = %e, "sync stopped: the store failed");
                    return Err(e);
                }
                Err(Interrupt::Retry { schedule, reason }) => {
                    let delay = match schedule {
                        Retry::Soon => self.soon.next_delay(),
                        Retry::Later => self.later.next_delay(),
                    };
                    self.summary.retries += 1;
                    warn!(
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "{reason}"
                    );
                    self.enter(State::BackingOff);
                    if let Err(Interrupt::Stop) = self.sleep(delay) {
                        return Ok(self.stopped());
                    }
                }
            }
        }
    }

    fn stopped(&mut self) -> SyncSummary {
        self.enter(State::Stopped);
        let s = &self.summary;
        info!(
            events = s.events,
            patches = s.patches,
            key_ops = s.ops,
            retries = s.retries,
            cursor = ?self.cursor(),
            "sync stopped on request; every applied batch is durable"
        );
        self.summary.clone()
    }

    /// One pass: catch up, open the stream, close the gap, stay live. `Ok` means "start over
    /// now" (progress was made); every failure comes back as an `Interrupt`.
    fn cycle(&mut self) -> Result<(), Interrupt> {
        self.catch_up()?;
        self.open_stream()?;
        self.enter(State::ClosingGap);
        let page = self.poll()?;
        if !page.is_empty() {
            let received = page.len();
            let outcome = self.apply_page(page)?;
            self.drop_stream();
            if outcome.applied == 0 {
                let detail = outcome.mismatch.unwrap_or_default();
                return Err(retry(Retry::Soon, format!("gap poll: {detail}")));
            }
            info!(
                patches = received,
                applied = outcome.applied,
                "the gap poll returned patches; catching up again"
            );
            return Ok(());
        }
        self.mark_synced()?;
        self.live()
    }

    /// Polls until a page is empty, then sets `synchronized_on`.
    fn catch_up(&mut self) -> Result<(), Interrupt> {
        self.enter(State::CatchingUp);
        let (mut pages, mut patches) = (0u64, 0u64);
        loop {
            let page = self.poll()?;
            if page.is_empty() {
                break;
            }
            pages += 1;
            let outcome = self.apply_page(page)?;
            patches += outcome.applied as u64;
            if outcome.applied == 0 {
                let detail = outcome.mismatch.unwrap_or_default();
                return Err(retry(Retry::Soon, format!("poll: {detail}")));
            }
            // A page stopped by a mismatch after some progress: poll again from the cursor.
        }
        self.mark_synced()?;
        info!(
            pages,
            patches,
            cursor = ?self.cursor(),
            "caught up"
        );
        Ok(())
    }

    /// Applies the leading patches of a page that chain from the stored cursor.
    fn apply_page(&mut self, page: Vec<Patch>) -> Result<PageOutcome, Interrupt> {
        let cursor = self.cursor();
        let n = applicable_prefix(&cursor, &page);
        let received = page.len();
        let mismatch = page.get(n).map(|p| {
            format!(
                "patch {} of {received} in the page expects previous version {:?}, the cursor \
                 is at {:?}; the patches after it were skipped",
                n + 1,
                p.previous_version,
                if n == 0 {
                    cursor.as_str()
                } else {
                    page.get(n - 1).map(|q| q.version.as_str()).unwrap_or("")
                },
            )
        });
        let applicable: Vec<Patch> = page.into_iter().take(n).collect();
        let ops = ops_of(&applicable);
        let batches = event_batches(applicable, self.config.max_batch_ops, None)
            .map_err(|e| retry(Retry::Soon, format!("poll page: {e}")))?;
        for batch in batches {
            self.write(batch)?;
        }
        self.summary.patches += n as u64;
        self.summary.ops += ops;
        if let Some(detail) = &mismatch {
            warn!(
                applied = n,
                received, "poll page stopped by a cursor mismatch: {detail}"
            );
        } else {
            debug!(patches = n, key_ops = ops, "applied a poll page");
        }
        Ok(PageOutcome {
            applied: n,
            mismatch,
        })
    }

    /// Stays on the stream: applies events, beats the heartbeat, until something ends it.
    fn live(&mut self) -> Result<(), Interrupt> {
        self.soon.reset();
        self.later.reset();
        self.enter(State::Live);
        let mut last_synced = Instant::now();
        loop {
            let item = match self.pending.pop_front() {
                Some(item) => item,
                None => match self.recv(Some(last_synced + self.config.heartbeat))? {
                    None => {
                        self.mark_synced()?;
                        debug!("heartbeat: synchronized_on set");
                        last_synced = Instant::now();
                        continue;
                    }
                    Some(Msg::Stream { id, item }) if self.is_current(id) => item,
                    Some(_) => continue,
                },
            };
            match item {
                StreamItem::Event(data) => {
                    self.apply_event(&data)?;
                    last_synced = Instant::now();
                }
                StreamItem::Ended(None) => {
                    return Err(retry(Retry::Soon, "the stream ended; reconnecting"))
                }
                StreamItem::Ended(Some(f)) => {
                    return Err(retry(f.retry(), format!("stream failed: {f}")))
                }
                StreamItem::Opened | StreamItem::Refused(_) => {}
            }
        }
    }

    /// One stream event: one atomic batch with its cursor advance and `synchronized_on`.
    fn apply_event(&mut self, data: &str) -> Result<(), Interrupt> {
        let patches = parse_patches(data).map_err(|f| {
            retry(
                Retry::Soon,
                format!("stream event: {f}; dropping the stream and resyncing"),
            )
        })?;
        if patches.is_empty() {
            return self.mark_synced();
        }
        let count = patches.len();
        let ops = ops_of(&patches);
        let batches =
            event_batches(patches, self.config.max_batch_ops, Some(now_ms())).map_err(|e| {
                retry(
                    Retry::Soon,
                    format!(
                        "stream event: cursor mismatch: {e}; nothing of it was applied; \
                         dropping the stream and resyncing from cursor {:?}",
                        self.cursor()
                    ),
                )
            })?;
        for batch in batches {
            self.write(batch)?;
        }
        self.summary.events += 1;
        self.summary.patches += count as u64;
        self.summary.ops += ops;
        info!(
            patches = count,
            key_ops = ops,
            cursor = ?self.cursor(),
            "applied a stream event"
        );
        Ok(())
    }

    fn write(&mut self, batch: Batch) -> Result<(), Interrupt> {
        match self.store.write(batch) {
            Ok(_) => Ok(()),
            Err(Error::CursorMismatch { expected, found }) => Err(retry(
                Retry::Soon,
                format!(
                    "cursor mismatch: the patch expects previous version {expected:?}, the \
                     store is at {found:?}; nothing of it was applied; resyncing from the cursor"
                ),
            )),
            Err(e) => Err(Interrupt::Fatal(e.into())),
        }
    }

    fn mark_synced(&mut self) -> Result<(), Interrupt> {
        self.store
            .mark_synced(now_ms())
            .map(|_| ())
            .map_err(|e| Interrupt::Fatal(e.into()))
    }

    fn cursor(&self) -> String {
        self.store.snapshot().metadata().cursor
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn is_current(&self, id: u64) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|(current, _)| *current == id)
    }

    /// One poll on a helper thread, from the stored cursor. Items of the current stream that
    /// arrive meanwhile are kept for [`Engine::live`].
    fn poll(&mut self) -> Result<Vec<Patch>, Interrupt> {
        let id = self.fresh_id();
        let cursor = self.cursor();
        let feed = Arc::clone(&self.feed);
        let tx = self.tx.clone();
        debug!(cursor = ?cursor, "polling");
        spawn("segstore-sync-poll", move || {
            let result = feed.poll(&cursor);
            let _ = tx.send(Msg::Poll { id, result });
        })?;
        loop {
            match self.recv(None)? {
                Some(Msg::Poll { id: got, result }) if got == id => {
                    return result.map_err(|f| retry(f.retry(), format!("poll failed: {f}")));
                }
                Some(Msg::Stream { id: got, item }) if self.is_current(got) => {
                    self.pending.push_back(item)
                }
                _ => {}
            }
        }
    }

    /// Opens the stream on a helper thread and waits for its answer.
    fn open_stream(&mut self) -> Result<(), Interrupt> {
        self.enter(State::Connecting);
        self.drop_stream();
        let id = self.fresh_id();
        let cancel: CancelFlag = Arc::new(AtomicBool::new(false));
        let feed = Arc::clone(&self.feed);
        let tx = self.tx.clone();
        let thread_cancel = Arc::clone(&cancel);
        spawn("segstore-sync-stream", move || {
            run_stream(&feed, &thread_cancel, |item| {
                tx.send(Msg::Stream { id, item }).is_ok()
            });
        })?;
        self.stream = Some((id, cancel));
        loop {
            match self.recv(None)? {
                Some(Msg::Stream { id: got, item }) if got == id => match item {
                    StreamItem::Opened => {
                        debug!("stream open");
                        return Ok(());
                    }
                    StreamItem::Refused(f) => {
                        return Err(retry(f.retry(), format!("stream connection failed: {f}")))
                    }
                    StreamItem::Ended(f) => {
                        let detail = f.map(|f| f.to_string()).unwrap_or_default();
                        return Err(retry(Retry::Soon, format!("stream ended at once {detail}")));
                    }
                    StreamItem::Event(_) => {}
                },
                _ => {}
            }
        }
    }

    fn drop_stream(&mut self) {
        if let Some((_, cancel)) = self.stream.take() {
            cancel.store(true, Ordering::Release);
        }
        self.pending.clear();
    }

    /// The next message, or `None` once `deadline` passes. A stop request is `Err(Stop)`.
    fn recv(&mut self, deadline: Option<Instant>) -> Result<Option<Msg>, Interrupt> {
        let msg = match deadline {
            None => self.rx.recv().map_err(|_| Interrupt::Stop)?,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.rx.recv_timeout(left) {
                    Ok(msg) => msg,
                    Err(RecvTimeoutError::Timeout) => return Ok(None),
                    Err(RecvTimeoutError::Disconnected) => return Err(Interrupt::Stop),
                }
            }
        };
        match msg {
            Msg::Stop => Err(Interrupt::Stop),
            other => Ok(Some(other)),
        }
    }

    /// Waits `delay`, waking only for a stop request.
    fn sleep(&mut self, delay: Duration) -> Result<(), Interrupt> {
        let deadline = Instant::now() + delay;
        while self.recv(Some(deadline))?.is_some() {}
        Ok(())
    }

    fn enter(&mut self, state: State) {
        if self.state != state {
            self.state = state;
            info!("sync state: {}", state.describe());
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<(), Interrupt> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .map(|_| ())
        .map_err(|e| Interrupt::Fatal(SyncError::Thread(e)))
}
