//! Group commit for the HTTP door: requests that arrive while a write is being made durable
//! are merged into the next one, so one fsync answers many requests.
//!
//! Each request's changes stay whole and in arrival order (a merged batch applies its changes
//! in order, atomically). If a merged write is refused for anything but I/O, each request is
//! written alone, so a bad one fails by itself; an I/O failure fails them all, as it leaves
//! the store refusing writes.

use crate::change::Batch;
use crate::error::Error;
use crate::store::Store;
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// The most key operations one merged write carries.
const MAX_GROUP_OPS: usize = 1 << 20;

type Request = (Batch, oneshot::Sender<Result<(), Error>>);

/// One writer thread per store, fed by a queue.
#[derive(Debug)]
pub struct Committer {
    queue: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the writer thread of `store`; it ends when the committer is dropped.
    pub fn start(store: Arc<Store>) -> std::io::Result<Committer> {
        let (queue, requests) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("segstore-http-commit".into())
            .spawn(move || run(&store, &requests))?;
        Ok(Committer { queue })
    }

    /// Writes `batch` durably (perhaps together with others); returns once it is on disk.
    pub async fn write(&self, batch: Batch) -> Result<(), Error> {
        let (done, answer) = oneshot::channel();
        let gone = || Error::io("", std::io::Error::other("the commit thread has stopped"));
        self.queue.send((batch, done)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

/// A batch that carries more than changes (a cursor, `synchronized_on`) is written alone.
fn mergeable(batch: &Batch) -> bool {
    batch.expect_cursor.is_none() && batch.set_cursor.is_none() && batch.synchronized_on.is_none()
}

fn run(store: &Store, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let mut group = vec![first];
        let mut ops = group[0].0.op_count();
        if mergeable(&group[0].0) {
            while ops < MAX_GROUP_OPS {
                match requests.try_recv() {
                    Ok(next) if mergeable(&next.0) => {
                        ops += next.0.op_count();
                        group.push(next);
                    }
                    Ok(next) => {
                        // Written after the group, keeping the order.
                        commit(store, std::mem::take(&mut group));
                        group.push(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        commit(store, group);
    }
}

fn commit(store: &Store, group: Vec<Request>) {
    if group.len() == 1 {
        for (batch, done) in group {
            let _ = done.send(store.write(batch).map(|_| ()));
        }
        return;
    }
    let mut merged = Batch::new();
    for (batch, _) in &group {
        merged.changes.extend(batch.changes.iter().cloned());
    }
    match store.write(merged) {
        Ok(_) => {
            for (_, done) in group {
                let _ = done.send(Ok(()));
            }
        }
        Err(e @ (Error::Io { .. } | Error::PreviousIo(_))) => {
            let message = e.to_string();
            for (_, done) in group {
                let _ = done.send(Err(Error::PreviousIo(message.clone())));
            }
        }
        Err(_) => {
            for (batch, done) in group {
                let _ = done.send(store.write(batch).map(|_| ()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{List, Options, Status};

    #[test]
    fn concurrent_requests_share_writes_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::create(dir.path(), Options::default()).unwrap());
        let committer = Arc::new(Committer::start(store.clone()).unwrap());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Requests sent at once; `bad` is refused by the store (an empty key).
        let round = |from: usize, count: usize, bad: Option<usize>| {
            runtime.block_on(async {
                let writes: Vec<_> = (from..from + count)
                    .map(|i| {
                        let committer = committer.clone();
                        let key = if Some(i) == bad {
                            Vec::new()
                        } else {
                            format!("k{i}").into_bytes()
                        };
                        let batch = Batch::new().add("s.g1", List::Included, key);
                        tokio::spawn(async move { committer.write(batch).await })
                    })
                    .collect();
                let mut results = Vec::new();
                for w in writes {
                    results.push(w.await.unwrap());
                }
                results
            })
        };
        let first = round(0, 30, None);
        assert!(first.iter().all(Result::is_ok));
        let merged_writes = store.snapshot().last_seq();
        assert!(
            merged_writes < 30,
            "30 requests took {merged_writes} writes"
        );
        let second = round(30, 20, Some(40));
        for (i, r) in (30..50).zip(&second) {
            assert_eq!(r.is_ok(), i != 40, "request {i}: {r:?}");
        }
        let snapshot = store.snapshot();
        for i in (0..50).filter(|i| *i != 40) {
            assert_eq!(
                snapshot.check("s.g1", format!("k{i}").as_bytes()).unwrap(),
                Status::Included
            );
        }
    }
}
