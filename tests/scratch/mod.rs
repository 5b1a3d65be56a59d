//! Where tests put their stores.

/// A fresh temporary directory, on tmpfs (`/dev/shm`) where one is mounted: fsync there is
/// free, so tests that write thousands of stores run in seconds.
pub fn dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().expect("a temporary directory")
}
