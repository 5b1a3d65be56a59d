//! Worker threads for connections: one single-threaded tokio runtime per thread, each
//! connection pinned to one of them.
//!
//! A request here costs a few microseconds of work, so on a multi-threaded, work-stealing
//! runtime the time goes to waking parked workers and moving tasks between them (measured:
//! 40% of the server's cycles in the scheduler and `epoll_wait`). With each connection on one
//! thread that only it and its neighbours use, a reply is written by the thread that read the
//! request, and the threads still answer in parallel.

use std::thread::JoinHandle;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// A set of worker threads, each driving its own single-threaded runtime until stopped.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
}

impl Workers {
    /// Starts `count` workers (at least one).
    pub fn start(count: usize) -> std::io::Result<Workers> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let mut stopped = stopped.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("segstore-serve-{i}"))
                    .spawn(move || {
                        runtime.block_on(async move {
                            while !*stopped.borrow() {
                                if stopped.changed().await.is_err() {
                                    break;
                                }
                            }
                        });
                    })?,
            );
        }
        Ok(Workers {
            handles,
            threads,
            stop,
        })
    }

    /// One runtime handle per worker, to spawn connections on.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// Stops every worker once its runtime is idle of the caller's waiting (tasks still
    /// running are dropped), and joins the threads.
    pub fn stop(self) {
        let _ = self.stop.send(true);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
