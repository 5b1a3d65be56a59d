//! Helpers shared by the sync tests.

pub mod fake_ld;

use segstore::{Options, ReadOnlyStore};
use std::path::Path;
use std::time::{Duration, Instant};

/// A read-only handle on `dir` (no background poll), once the sync has created the store.
pub fn open_reader(dir: &Path) -> ReadOnlyStore {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let options = Options {
            poll_interval: None,
            ..Options::default()
        };
        match ReadOnlyStore::open(dir, options) {
            Ok(r) => return r,
            Err(e) if Instant::now() > deadline => panic!("no store: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}
