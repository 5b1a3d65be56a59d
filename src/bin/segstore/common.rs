//! What every subcommand shares: the failure type and exit codes, store opening, stdout
//! handling (a closed pipe is a clean stop), input lines, progress bars, keys and time.

use indicatif::{ProgressBar, ProgressStyle};
use segstore::{Options, ReadOnlyStore, Store};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, IsTerminal, Read, StdoutLock, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Set by the global `--quiet`: no progress bars and no informational lines.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Turns quiet mode on or off for the rest of the process (`--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Set by the global `--verify-on-read`: open at `Verification::Structure`.
static VERIFY_ON_READ: AtomicBool = AtomicBool::new(false);

/// Chooses how every store this process opens checks its tables (`--verify-on-read`).
pub fn set_verify_on_read(on: bool) {
    VERIFY_ON_READ.store(on, Ordering::Relaxed);
}

/// The verification level of the stores this process opens.
fn verification() -> segstore::Verification {
    if VERIFY_ON_READ.load(Ordering::Relaxed) {
        segstore::Verification::Structure
    } else {
        segstore::Verification::Checksum
    }
}

/// Set by the global `--huge-folios`: map tables with `Residency::PageCacheHugeFolios`.
static HUGE_FOLIOS: AtomicBool = AtomicBool::new(false);

/// Chooses where every store this process opens keeps its tables (`--huge-folios`).
pub fn set_huge_folios(on: bool) {
    HUGE_FOLIOS.store(on, Ordering::Relaxed);
}

/// The residency of the tables of the stores this process opens.
fn residency() -> segstore::Residency {
    if HUGE_FOLIOS.load(Ordering::Relaxed) {
        segstore::Residency::PageCacheHugeFolios
    } else {
        segstore::Residency::PageCache
    }
}

/// True under `--quiet`: progress bars are hidden and informational lines (the summaries of
/// `init`, `import` and `apply`) are not printed. Answers, dry-run reports, warnings and
/// errors still are.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Exit code of a runtime error: I/O, corruption, bad input.
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of a usage error (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a cursor mismatch in `apply --format patches`.
pub const EXIT_CURSOR: u8 = 3;

/// Why a command stopped. `message: None` is a quiet stop (stdout was closed).
#[derive(Debug)]
pub struct Failure {
    /// The process exit code.
    pub code: u8,
    /// The one-line message printed after `error: `, if any.
    pub message: Option<String>,
}

impl Failure {
    /// A runtime error (exit 1).
    pub fn runtime(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_RUNTIME,
            message: Some(message.into()),
        }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: EXIT_USAGE,
            message: Some(message.into()),
        }
    }

    /// A quiet, successful stop: the reader of stdout went away.
    pub fn closed_stdout() -> Self {
        Failure {
            code: 0,
            message: None,
        }
    }

    /// The same failure with `context: ` in front of its message.
    pub fn context(mut self, context: impl fmt::Display) -> Self {
        if let Some(m) = self.message.take() {
            self.message = Some(format!("{context}: {m}"));
        }
        self
    }
}

/// Exit code for a library error: 3 for a cursor mismatch, 1 for everything else.
pub fn code_of(e: &segstore::Error) -> u8 {
    match e {
        segstore::Error::CursorMismatch { .. } => EXIT_CURSOR,
        _ => EXIT_RUNTIME,
    }
}

impl From<segstore::Error> for Failure {
    fn from(e: segstore::Error) -> Self {
        let code = code_of(&e);
        let message = match &e {
            segstore::Error::Locked { path } => format!(
                "store {} is locked by another writer (a running sync or apply holds it); \
                 read commands (check, membership, export, segments, meta, stats, verify) still work",
                path.display()
            ),
            segstore::Error::NotFound { path } => format!(
                "no store at {} (no MANIFEST file); create one with `segstore --dir {} init`",
                path.display(),
                path.display()
            ),
            _ => e.to_string(),
        };
        Failure {
            code,
            message: Some(message),
        }
    }
}

/// `?` on a stdout write: a closed pipe is a quiet stop, anything else an error.
impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::closed_stdout()
        } else {
            Failure::runtime(format!("writing to stdout: {e}"))
        }
    }
}

/// The result of a command.
pub type CmdResult<T = ()> = Result<T, Failure>;

/// What every command that opens the store for writing accepts.
#[derive(Debug, Clone, Copy, Default, clap::Args)]
pub struct WriterArgs {
    /// Repair what only dropping data can: a live log whose last record is whole but fails its
    /// checksum (a flipped bit, not a torn write) is truncated before that record, and the
    /// write it held is lost. Without --repair such a store is refused (`verify` names the
    /// damage). Nothing else is repaired.
    #[arg(long)]
    pub repair: bool,
}

/// What every open takes from the global flags: `--verify-on-read`, `--huge-folios`.
fn open_options() -> Options {
    Options {
        verification: verification(),
        residency: residency(),
        ..Options::default()
    }
}

/// Options for the writing commands.
pub fn writer_options(args: &WriterArgs) -> Options {
    Options {
        repair: args.repair,
        ..open_options()
    }
}

/// Opens the store for writing; fails fast if another writer holds the lock.
pub fn open_writer(dir: &Path, args: &WriterArgs) -> CmdResult<Store> {
    Ok(Store::open(dir, writer_options(args))?)
}

/// Opens the store read-only, with no background poll: works beside a running writer.
pub fn open_reader(dir: &Path) -> CmdResult<ReadOnlyStore> {
    let options = Options {
        poll_interval: None,
        ..open_options()
    };
    Ok(ReadOnlyStore::open(dir, options)?)
}

/// Buffered stdout. Call [`Out::finish`] to flush and see the flush's error.
pub struct Out {
    inner: BufWriter<StdoutLock<'static>>,
}

impl Out {
    /// Locks stdout.
    pub fn new() -> Self {
        Out {
            inner: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, text: impl fmt::Display) -> CmdResult {
        writeln!(self.inner, "{text}")?;
        Ok(())
    }

    /// Writes raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> CmdResult {
        self.inner.write_all(bytes)?;
        Ok(())
    }

    /// Flushes.
    pub fn finish(mut self) -> CmdResult {
        self.inner.flush()?;
        Ok(())
    }
}

/// Writes a warning line on stderr, ignoring a failure to do so.
pub fn warn(message: impl fmt::Display) {
    let _ = writeln!(io::stderr(), "warning: {}", one_line(&message.to_string()));
}

/// The message with line breaks replaced by spaces, so that an error stays one line.
pub fn one_line(message: &str) -> String {
    if message.contains(['\n', '\r']) {
        message.replace("\r\n", " ").replace(['\n', '\r'], " ")
    } else {
        message.to_owned()
    }
}

/// An input named on the command line: a file, or `-` for stdin.
pub struct Input {
    /// For messages: the path, or `<stdin>`.
    pub name: String,
    /// The bytes.
    pub reader: Box<dyn BufRead>,
    /// The file's length, when known (for a progress bar).
    pub len: Option<u64>,
}

impl Input {
    /// Opens `path` (`-` is stdin).
    pub fn open(path: &Path) -> CmdResult<Input> {
        if path.as_os_str() == "-" {
            return Ok(Input {
                name: "<stdin>".into(),
                reader: Box::new(BufReader::with_capacity(256 * 1024, io::stdin())),
                len: None,
            });
        }
        let name = path.display().to_string();
        let file =
            File::open(path).map_err(|e| Failure::runtime(format!("cannot open {name}: {e}")))?;
        let len = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        Ok(Input {
            name,
            reader: Box::new(BufReader::with_capacity(256 * 1024, file)),
            len,
        })
    }
}

/// Reads lines of at most `limit` bytes, counting them (from 1) and the bytes read.
pub struct LineReader {
    reader: Box<dyn BufRead>,
    /// The number of the line last read (1-based).
    pub line_no: u64,
    /// Bytes read so far.
    pub bytes_read: u64,
    limit: u64,
    /// Bytes of the current line read so far, while it is read in two parts.
    line_bytes: u64,
    /// Set when the rest of a long line ran past `limit`.
    overflowed: bool,
}

/// What [`LineReader::next_line_start`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineStart {
    /// No more lines.
    End,
    /// The whole line is in the buffer (without its line end).
    Whole,
    /// The line is longer than the buffer limit: the buffer holds its first bytes, and
    /// [`LineReader::rest_of_line`] reads the rest.
    Long,
}

impl LineReader {
    /// Reads `reader`, refusing lines longer than `limit` bytes.
    pub fn new(reader: Box<dyn BufRead>, limit: u64) -> Self {
        LineReader {
            reader,
            line_no: 0,
            bytes_read: 0,
            limit,
            line_bytes: 0,
            overflowed: false,
        }
    }

    /// As [`LineReader::next_line`], but holds at most `buffer_limit` bytes of a line in `buf`:
    /// a longer line is [`LineStart::Long`], to be read on with [`LineReader::rest_of_line`]
    /// (so that a huge line is parsed as it is read, not held whole first).
    pub fn next_line_start(
        &mut self,
        buf: &mut Vec<u8>,
        buffer_limit: u64,
    ) -> Result<LineStart, String> {
        buf.clear();
        let line_no = self.line_no + 1;
        let cap = buffer_limit.min(self.limit);
        let n = (&mut self.reader)
            .take(cap + 1)
            .read_until(b'\n', buf)
            .map_err(|e| format!("line {line_no}: read error: {e}"))?;
        if n == 0 {
            return Ok(LineStart::End);
        }
        self.line_no = line_no;
        self.bytes_read += n as u64;
        if buf.last() != Some(&b'\n') && n as u64 > cap {
            if cap == self.limit {
                return Err(format!(
                    "line {line_no}: longer than {} bytes; is this the right file?",
                    self.limit
                ));
            }
            self.line_bytes = n as u64;
            self.overflowed = false;
            return Ok(LineStart::Long);
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(LineStart::Whole)
    }

    /// The rest of a [`LineStart::Long`] line, up to (and consuming) its `\n`. Reading past
    /// the line limit fails, and [`LineReader::overflowed`] then says so.
    pub fn rest_of_line(&mut self) -> RestOfLine<'_> {
        RestOfLine {
            lines: self,
            done: false,
        }
    }

    /// True if the rest of the last long line ran past the line limit.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// The line limit, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Reads the next line into `buf` without its `\n` or `\r\n`. `Ok(false)` at the end.
    /// `Err` carries a message without the input's name (the caller adds it).
    pub fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<bool, String> {
        buf.clear();
        let line_no = self.line_no + 1;
        let n = (&mut self.reader)
            .take(self.limit + 1)
            .read_until(b'\n', buf)
            .map_err(|e| format!("line {line_no}: read error: {e}"))?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no = line_no;
        self.bytes_read += n as u64;
        if buf.last() == Some(&b'\n') {
            buf.pop();
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
        } else if n as u64 > self.limit {
            return Err(format!(
                "line {line_no}: longer than {} bytes; is this the right file?",
                self.limit
            ));
        } else if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        Ok(true)
    }
}

/// The rest of one line, as a reader (see [`LineReader::rest_of_line`]).
pub struct RestOfLine<'a> {
    lines: &'a mut LineReader,
    done: bool,
}

impl Read for RestOfLine<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        let lines = &mut *self.lines;
        let available = lines.reader.fill_buf()?;
        if available.is_empty() {
            self.done = true;
            return Ok(0);
        }
        // Look no further than what fits in `out`: callers may read a byte at a time.
        let window = available.get(..out.len()).unwrap_or(available);
        let (take, end_of_line) = match window.iter().position(|&b| b == b'\n') {
            Some(at) => (at, true),
            None => (window.len(), false),
        };
        let (head, _) = available.split_at(take);
        out.get_mut(..take)
            .ok_or_else(|| io::Error::other("short output buffer"))?
            .copy_from_slice(head);
        let consumed = take + usize::from(end_of_line);
        lines.reader.consume(consumed);
        lines.bytes_read += consumed as u64;
        lines.line_bytes += consumed as u64;
        if end_of_line {
            self.done = true;
        }
        if lines.line_bytes > lines.limit {
            lines.overflowed = true;
            return Err(io::Error::other(format!(
                "longer than {} bytes",
                lines.limit
            )));
        }
        Ok(take)
    }
}

/// True when progress bars should be drawn: stderr is a terminal and `--quiet` is off.
pub fn progress_wanted() -> bool {
    !quiet() && io::stderr().is_terminal()
}

/// A progress bar over `len` bytes, or a spinner counting `unit` when the length is unknown.
/// Hidden when stderr is not a terminal, and under `--quiet`.
pub fn progress(len: Option<u64>, unit: &'static str) -> ProgressBar {
    if !progress_wanted() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta}) {msg}",
            ) {
                bar.set_style(style);
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            let template =
                format!("{{spinner}} [{{elapsed_precise}}] {{pos}} {unit} ({{per_sec}}) {{msg}}");
            if let Ok(style) = ProgressStyle::with_template(&template) {
                bar.set_style(style);
            }
            bar
        }
    };
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// A spinner with a message, for work of unknown length. Hidden when stderr is not a
/// terminal, and under `--quiet`.
pub fn spinner(message: &'static str) -> ProgressBar {
    if !progress_wanted() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Turns a raw key given on the command line into a stored key.
pub fn key_arg(raw: &std::ffi::OsStr, hash: bool) -> CmdResult<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = raw.as_bytes();
    let key = if hash {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Failure::runtime("--hash-key needs a UTF-8 context key"))?;
        if text.is_empty() {
            return Err(Failure::runtime("invalid key: the context key is empty"));
        }
        segstore::context_hash(text).into_bytes()
    } else {
        bytes.to_vec()
    };
    segstore::validate_key(&key)?;
    Ok(key)
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `2023-11-14T22:13:20.000Z` for a Unix ms time.
pub fn format_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let millis = ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem / 60 % 60, rem % 60);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

/// `3d 4h`, `5m 12s`, `850ms`: a short human duration.
pub fn format_age(ms: u64) -> String {
    let secs = ms / 1000;
    if secs == 0 {
        return format!("{ms}ms");
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m {s}s")
    } else {
        format!("{s}s")
    }
}

/// A byte count for people: `1.5 MiB (1572864 bytes)`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!(
        "{value:.1} {} ({bytes} bytes)",
        UNITS.get(unit).unwrap_or(&"PiB")
    )
}

/// Text for a terminal: control characters escaped, so one value stays on one line.
pub fn printable(text: &str) -> String {
    if text.chars().any(char::is_control) {
        text.chars()
            .flat_map(|c| {
                if c.is_control() {
                    c.escape_default().collect::<Vec<_>>()
                } else {
                    vec![c]
                }
            })
            .collect()
    } else {
        text.to_owned()
    }
}

/// The store directory, required by every command but `demo`.
pub fn require_dir(dir: Option<&PathBuf>) -> CmdResult<&Path> {
    dir.map(PathBuf::as_path)
        .ok_or_else(|| Failure::usage("no store directory: pass --dir DIR or set SEGSTORE_DIR"))
}
