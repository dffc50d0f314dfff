//! A private Tokio runtime for the synchronous [`crate::queue::Queue`] and
//! [`crate::storage::Storage`] backends whose clients are async (NATS, object storage).
//!
//! Those traits block by contract; their callers are plain threads (the consumer, the
//! forwarder) or `spawn_blocking` threads of the API. [`BlockingRuntime::block_on`] works
//! from both, and also from inside a multi-threaded runtime's task (through
//! `block_in_place`). Dropping it never blocks (`shutdown_background`), so the last clone
//! may go away anywhere.

use std::future::Future;

/// A small multi-threaded runtime (one worker: it keeps client connections alive between
/// calls) that is shut down in the background when dropped.
#[derive(Debug)]
pub struct BlockingRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl BlockingRuntime {
    /// A runtime with one worker thread named `name`.
    pub fn new(name: &str) -> std::io::Result<BlockingRuntime> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()?;
        Ok(BlockingRuntime { rt: Some(rt) })
    }

    /// Runs `f` to completion on this runtime, blocking the calling thread.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        let Some(rt) = self.rt.as_ref() else {
            unreachable!("the runtime exists until drop")
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(|| rt.block_on(f))
            }
            _ => rt.block_on(f),
        }
    }

    /// A handle to spawn tasks on it.
    pub fn handle(&self) -> Option<&tokio::runtime::Handle> {
        self.rt.as_ref().map(tokio::runtime::Runtime::handle)
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
