//! Small filesystem helpers with the durability rules of the format spec.

use crate::error::{Error, Result};
use crate::io::Io;
use std::path::Path;

/// fsyncs a directory so that names created, renamed or removed in it are durable.
pub fn sync_dir(io: &Io, dir: &Path) -> Result<()> {
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Replaces `dir/name` with `bytes` atomically: write `dir/name.tmp`, fsync it, rename it over
/// `name`, fsync the directory. A crash leaves either the old file or the new one, whole.
pub fn replace_file(io: &Io, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    {
        let file = io.create_truncate(&tmp).map_err(|e| Error::io(&tmp, e))?;
        io.write_all_at(&file, bytes, 0, &tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        io.sync_all(&file, &tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    io.rename(&tmp, &target)
        .map_err(|e| Error::io(&target, e))?;
    sync_dir(io, dir)
}

/// Reads a whole file, naming it in the error.
pub fn read_file(io: &Io, path: &Path) -> Result<Vec<u8>> {
    io.read(path).map_err(|e| Error::io(path, e))
}

/// Frees the disk blocks under `len` bytes of `file` from `offset` (`fallocate` with
/// `FALLOC_FL_PUNCH_HOLE`); the file keeps its size and the range reads back as zeros. For
/// files read once front to back, such as the sorter's runs, so that their disk space shrinks
/// as they are consumed. `Unsupported` off Linux or where the file system cannot do it.
pub fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len))
        else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        // SAFETY: `fallocate` takes a file descriptor and three integers; no memory is passed.
        // The descriptor is valid for the call because `file` owns it and is borrowed here.
        let rc = unsafe {
            libc::fallocate(
                file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                Err(std::io::Error::new(std::io::ErrorKind::Unsupported, e))
            }
            _ => Err(e),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, offset, len);
        Err(std::io::ErrorKind::Unsupported.into())
    }
}
