//! Every file operation of the engine goes through [`Io`], so that tests can make the N-th
//! write, fsync, rename or read fail (EIO, ENOSPC, a short write) and check what the engine
//! does about it. In production no [`FaultInjector`] is installed and each call is the plain
//! `std::fs` call.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The kinds of file operation the engine performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// Creating a file.
    Create,
    /// Writing bytes to a file.
    Write,
    /// fsync/fdatasync of a file.
    Sync,
    /// fsync of a directory.
    SyncDir,
    /// Renaming a file.
    Rename,
    /// Removing a file or directory.
    Remove,
    /// Reading or mapping a file.
    Read,
    /// Truncating a file.
    Truncate,
}

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call fails with this OS error (e.g. `libc::EIO`, `libc::ENOSPC`) and does nothing.
    Error(i32),
    /// A write stores only this many bytes of its buffer, then fails with `ENOSPC`.
    ShortWrite(usize),
}

/// The error inside an [`io::Error`] when a path the store reads or writes is not a regular
/// file (a FIFO, socket, device or directory). [`crate::Error::io`] turns it into
/// [`crate::Error::NotRegularFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRegularFile {
    /// What the path is: `"FIFO"`, `"socket"`, `"character device"`, ...
    pub file_type: &'static str,
}

impl std::fmt::Display for NotRegularFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "is a {}, not a regular file", self.file_type)
    }
}

impl std::error::Error for NotRegularFile {}

fn describe(file_type: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_block_device() {
        "block device"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_symlink() {
        "symbolic link"
    } else {
        "special file"
    }
}

fn not_regular(file_type: std::fs::FileType) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        NotRegularFile {
            file_type: describe(file_type),
        },
    )
}

/// Opens an existing file with `options` without ever blocking on it, and only if it is a
/// regular file (after following symbolic links).
///
/// Opening a FIFO for reading blocks until a writer appears (and for writing, until a
/// reader): a FIFO where a store file belongs would hang every command. So the file is opened
/// with `O_NONBLOCK` (which opens a FIFO at once, or fails with `ENXIO` for writing), its type
/// is checked on the open descriptor (no window between check and open), and `O_NONBLOCK` is
/// cleared again before the file is used.
pub fn open_regular(path: &Path, options: &OpenOptions) -> io::Result<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = options.clone();
    options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    let file = match options.open(path) {
        Ok(file) => file,
        // A FIFO without a reader (opened for writing) or a socket.
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(match std::fs::metadata(path) {
                Ok(m) if !m.is_file() => not_regular(m.file_type()),
                _ => e,
            });
        }
        Err(e) => return Err(e),
    };
    let file_type = file.metadata()?.file_type();
    if !file_type.is_file() {
        return Err(not_regular(file_type));
    }
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is the open descriptor owned by `file`, alive for both calls; F_GETFL and
    // F_SETFL only read and set its status flags and touch no memory.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

/// Opens an existing regular file for reading (see [`open_regular`]).
pub fn open_read(path: &Path) -> io::Result<File> {
    open_regular(path, OpenOptions::new().read(true))
}

/// Decides, before each file operation, whether it fails. Tests implement this.
pub trait FaultInjector: Send + Sync + Debug {
    /// Called before `op` on `path`; `None` lets the operation run.
    fn inject(&self, op: IoOp, path: &Path) -> Option<Fault>;
}

/// The engine's file-operation layer: plain `std::fs` calls, each first offered to the
/// fault injector if one is installed.
#[derive(Debug, Clone, Default)]
pub struct Io {
    injector: Option<Arc<dyn FaultInjector>>,
}

fn fault_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl Io {
    /// An `Io` that consults `injector` before every operation.
    pub fn with_injector(injector: Arc<dyn FaultInjector>) -> Io {
        Io {
            injector: Some(injector),
        }
    }

    fn fault(&self, op: IoOp, path: &Path) -> Option<Fault> {
        self.injector.as_ref().and_then(|i| i.inject(op, path))
    }

    /// Fails if a fault is injected for a non-write operation.
    pub fn check(&self, op: IoOp, path: &Path) -> io::Result<()> {
        match self.fault(op, path) {
            None => Ok(()),
            Some(Fault::Error(errno)) => Err(fault_error(errno)),
            Some(Fault::ShortWrite(_)) => Err(fault_error(libc::ENOSPC)),
        }
    }

    /// Creates a new file for writing (`O_CREAT|O_EXCL`).
    pub fn create_new(&self, path: &Path) -> io::Result<File> {
        self.check(IoOp::Create, path)?;
        OpenOptions::new().write(true).create_new(true).open(path)
    }

    /// Creates or truncates a file for writing.
    pub fn create_truncate(&self, path: &Path) -> io::Result<File> {
        self.check(IoOp::Create, path)?;
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
    }

    /// Writes all of `buf` at `offset`.
    pub fn write_all_at(
        &self,
        file: &File,
        buf: &[u8],
        offset: u64,
        path: &Path,
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        match self.fault(IoOp::Write, path) {
            None => file.write_all_at(buf, offset),
            Some(Fault::Error(errno)) => Err(fault_error(errno)),
            Some(Fault::ShortWrite(n)) => {
                file.write_all_at(buf.get(..n.min(buf.len())).unwrap_or_default(), offset)?;
                Err(fault_error(libc::ENOSPC))
            }
        }
    }

    /// fsyncs a file's data and metadata.
    pub fn sync_all(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(IoOp::Sync, path)?;
        file.sync_all()
    }

    /// fdatasyncs a file.
    pub fn sync_data(&self, file: &File, path: &Path) -> io::Result<()> {
        self.check(IoOp::Sync, path)?;
        file.sync_data()
    }

    /// fsyncs a directory.
    pub fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(IoOp::SyncDir, dir)?;
        File::open(dir)?.sync_all()
    }

    /// Renames `from` to `to`.
    pub fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(IoOp::Rename, to)?;
        std::fs::rename(from, to)
    }

    /// Removes a file.
    pub fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.check(IoOp::Remove, path)?;
        std::fs::remove_file(path)
    }

    /// Removes a directory and its contents.
    pub fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.check(IoOp::Remove, path)?;
        std::fs::remove_dir_all(path)
    }

    /// Reads a whole regular file (anything else is an error at once, see [`open_regular`]).
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        use std::io::Read;
        self.check(IoOp::Read, path)?;
        let mut file = open_read(path)?;
        let len = file.metadata()?.len();
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(usize::try_from(len).unwrap_or(usize::MAX))
            .map_err(|_| io::Error::from(io::ErrorKind::OutOfMemory))?;
        file.read_to_end(&mut bytes)?;
        Ok(bytes)
    }

    /// Truncates (or extends) a file to `len` bytes.
    pub fn set_len(&self, file: &File, len: u64, path: &Path) -> io::Result<()> {
        self.check(IoOp::Truncate, path)?;
        file.set_len(len)
    }

    /// Wraps `file` so that every `write` goes through the injector.
    pub fn writer(&self, file: File, path: &Path) -> IoWriter {
        IoWriter {
            file,
            io: self.clone(),
            path: path.to_owned(),
        }
    }
}

/// The unit [`ChunkWriter`] writes in: the size of a huge page on x86-64 and aarch64.
pub const CHUNK_LEN: usize = 2 << 20;

/// A buffered writer that writes whole [`CHUNK_LEN`] chunks at chunk-aligned offsets (only
/// the last write is shorter), for files written once from the start and then memory-mapped.
///
/// Why: on Linux filesystems with large folios (ext4 from 6.16, xfs, ...) a buffered write of
/// a whole aligned 2 MiB range is cached as one 2 MiB folio, and a later `mmap` of the file
/// maps such folios with huge-page TLB entries: random lookups in a large table then skip
/// most TLB misses (measured: 190 ns per dependent random read in a 337 MB table against
/// 241–264 ns for the same file written in 64 KiB pieces). Elsewhere it is an ordinary
/// buffered writer.
#[derive(Debug)]
pub struct ChunkWriter {
    inner: IoWriter,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// A chunked writer over `inner`, which must be positioned at a multiple of
    /// [`CHUNK_LEN`] (a new file is).
    pub fn new(inner: IoWriter) -> Self {
        ChunkWriter {
            inner,
            buf: Vec::with_capacity(CHUNK_LEN),
        }
    }

    /// Writes what is buffered and returns the file.
    pub fn into_inner(mut self) -> io::Result<IoWriter> {
        self.flush()?;
        Ok(self.inner)
    }
}

impl Write for ChunkWriter {
    /// Takes all of `data` or fails: never a short write. Callers above (fst's counting
    /// writer, which adds a buffer to its CRC before passing it on) would otherwise see the
    /// rest of a buffer offered again at each chunk boundary and count it twice.
    ///
    /// On error part of `data` may have been taken; the file is then abandoned by its builder.
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let mut rest = data;
        while !rest.is_empty() {
            let room = CHUNK_LEN.saturating_sub(self.buf.len());
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.buf.extend_from_slice(now);
            rest = later;
            if self.buf.len() >= CHUNK_LEN {
                self.inner.write_all(&self.buf)?;
                self.buf.clear();
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
            self.buf.clear();
        }
        self.inner.flush()
    }
}

/// A file whose writes go through [`Io`] (used under a buffered writer for streamed files).
#[derive(Debug)]
pub struct IoWriter {
    file: File,
    io: Io,
    path: PathBuf,
}

impl IoWriter {
    /// fsyncs the file through [`Io`] and returns it.
    pub fn sync_all(self) -> io::Result<File> {
        self.io.sync_all(&self.file, &self.path)?;
        Ok(self.file)
    }
}

impl Write for IoWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.io.fault(IoOp::Write, &self.path) {
            None => self.file.write(buf),
            Some(Fault::Error(errno)) => Err(fault_error(errno)),
            Some(Fault::ShortWrite(n)) => {
                let part = buf.get(..n.min(buf.len())).unwrap_or_default();
                self.file.write_all(part)?;
                Err(fault_error(libc::ENOSPC))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_writer_takes_every_write_whole_across_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunked");
        let io = Io::default();
        let file = io.create_new(&path).unwrap();
        let mut writer = ChunkWriter::new(io.writer(file, &path));
        // Pieces of odd sizes, one larger than a chunk, so that writes straddle boundaries.
        let sizes = [
            1,
            1_000_003,
            CHUNK_LEN + 17,
            3,
            777_777,
            CHUNK_LEN - 5,
            65_536,
        ];
        let mut expected = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            let piece: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            assert_eq!(writer.write(&piece).unwrap(), size, "write {i} was short");
            expected.extend_from_slice(&piece);
        }
        writer.into_inner().unwrap().sync_all().unwrap();
        assert!(expected.len() > 2 * CHUNK_LEN);
        assert_eq!(std::fs::read(&path).unwrap(), expected);
    }
}
