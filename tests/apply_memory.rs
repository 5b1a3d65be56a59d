//! How much heap one large `apply` line takes, from parsing to the write returning: the
//! line is read as it parses (never held whole), and its keys are held once, in the blocks
//! of a `Keys` that the log record is written from and the overlay run points into; beside
//! them, the run's entries and hash index. Measured with a counting allocator (this test
//! binary's only test, so nothing else allocates meanwhile).

use segstore::ingest::{parse_one_batch_from, Format, Parsed};
use segstore::{context_hash, Batch, List, Options, Status, Store};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const KEYS: usize = 200_000;

#[test]
fn one_large_line_holds_a_bounded_multiple_of_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::create(
        dir.path(),
        Options {
            auto_compact: false,
            ..Options::default()
        },
    )
    .unwrap();
    // A list with a table under it, as a sync's later lines find it.
    let base = (0..KEYS).map(|i| Ok(context_hash(&format!("base-{i}")).into_bytes()));
    store
        .replace_list("big.g1", None, List::Included, base)
        .unwrap();
    store
        .write(Batch::new().add("other.g1", List::Included, "k"))
        .unwrap();
    let keys: Vec<String> = (0..KEYS)
        .map(|i| context_hash(&format!("new-{i}")))
        .collect();
    let line = format!(
        "{{\"segment\": \"big.g1\", \"included\": {{\"add\": {}, \"remove\": {}}}}}",
        serde_json::to_string(&keys).unwrap(),
        serde_json::to_string(&keys[..KEYS / 10]).unwrap(),
    );
    let line_len = line.len();
    let path = dir.path().join("line.json");
    std::fs::write(&path, &line).unwrap();
    drop(line);

    let before = CURRENT.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let reader = std::io::BufReader::with_capacity(64 << 10, std::fs::File::open(&path).unwrap());
    let Parsed::Changes(changes) = parse_one_batch_from(&Format::Updates, reader, false).unwrap()
    else {
        panic!("an updates line gives changes");
    };
    let mut batch = Batch::new();
    for change in changes {
        batch = batch.change(change);
    }
    store.write(batch).unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    let ratio = peak as f64 / line_len as f64;
    println!("line {line_len} bytes, peak heap {peak} bytes: {ratio:.2}× the line");

    let snapshot = store.snapshot();
    assert_eq!(
        snapshot.check("big.g1", keys[KEYS - 1].as_bytes()).unwrap(),
        Status::Included
    );
    assert_eq!(
        snapshot.check("big.g1", keys[0].as_bytes()).unwrap(),
        Status::Unknown
    );
    // The goal: at most twice the line. The keys alone take 1.02× (4 bytes of length for
    // the 3 of quotes and comma); a copy of them anywhere would pass 2×.
    assert!(ratio <= 2.0, "{ratio:.2}× the line");
}
