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
