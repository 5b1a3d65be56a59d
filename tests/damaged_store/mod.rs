//! A store whose one table (20,000 context hashes in `big.g1`'s included list, about 60 blocks
//! of 16 KiB) has one flipped bit in the middle of its codes: what the `--verify-on-read` tests
//! of each front door open.

use segstore::{context_hash, List, Options, Store};
use std::path::Path;

/// The segment the store holds.
pub const SEGMENT: &str = "big.g1";

/// Creates the store in `dir` (which must not hold one) and damages its table; returns the
/// hashes the list holds.
pub fn create(dir: &Path) -> Vec<String> {
    let hashes: Vec<String> = (0..20_000)
        .map(|i| context_hash(&format!("u{i}")))
        .collect();
    let store = Store::create(dir, Options::default()).unwrap();
    let keys = hashes.iter().map(|h| Ok(h.clone().into_bytes()));
    store
        .replace_list(SEGMENT, None, List::Included, keys)
        .unwrap();
    drop(store);
    let table = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "sstbl"))
        .unwrap();
    let mut bytes = std::fs::read(&table).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&table, &bytes).unwrap();
    hashes
}
