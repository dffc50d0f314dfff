//! The processor queue as the consumer sees it: a [`Queue`] trait and its spool-directory
//! implementation ([`SpoolQueue`], over [`linecord_jobs::Spool`]). The NATS JetStream
//! backend ([`crate::queue_nats::NatsQueue`]) implements the same trait (take = fetch,
//! complete = ack, fail = term with the reason published to a failure stream).

use std::path::Path;

use linecord_jobs::{Claimed, Spool, SpoolError};

/// Why the queue could not be used.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The spool directory failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// NATS JetStream failed (connection, request, timeout).
    #[error("nats: {0}")]
    Nats(String),
}

/// One job handed to the consumer: it stays claimed until [`Queue::complete`] or
/// [`Queue::fail`] (or, after a crash, until [`Queue::recover`] puts it back).
pub trait Delivery: Send {
    /// The job's name in the queue (for logs and failure records).
    fn name(&self) -> &str;
    /// The job's bytes (JSON).
    fn bytes(&self) -> &[u8];
}

impl Delivery for Claimed {
    fn name(&self) -> &str {
        Claimed::name(self)
    }

    fn bytes(&self) -> &[u8] {
        Claimed::bytes(self)
    }
}

/// How much is waiting, and how much failed, as far as the queue can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueueStats {
    /// Jobs waiting.
    pub pending: u64,
    /// Jobs in the failed set.
    pub failed: u64,
}

/// A queue of jobs with at-least-once delivery.
pub trait Queue: Send + Sync {
    /// The claimed-job handle.
    type Delivery: Delivery;
    /// Puts back the jobs a dead consumer had claimed; returns their names. Call at
    /// start-up, before [`Queue::take`].
    fn recover(&self) -> Result<Vec<String>, QueueError>;
    /// Claims the next job, oldest first; `None` when there is none.
    fn take(&self) -> Result<Option<Self::Delivery>, QueueError>;
    /// The job is applied: it is never delivered again.
    fn complete(&self, d: Self::Delivery) -> Result<(), QueueError>;
    /// The job cannot be applied: it is set aside with `reason`, never delivered again.
    fn fail(&self, d: Self::Delivery, reason: &str) -> Result<(), QueueError>;
    /// What is waiting and what failed.
    fn stats(&self) -> Result<QueueStats, QueueError>;
}

/// The spool directory (`docs/processor-queue.md`) as a [`Queue`].
#[derive(Debug, Clone)]
pub struct SpoolQueue {
    spool: Spool,
}

impl SpoolQueue {
    /// Opens (creating the layout if needed) the spool at `dir`.
    pub fn open(dir: &Path) -> Result<SpoolQueue, QueueError> {
        Ok(SpoolQueue {
            spool: Spool::open(dir)?,
        })
    }

    /// The spool itself.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }
}

impl Queue for SpoolQueue {
    type Delivery = Claimed;

    fn recover(&self) -> Result<Vec<String>, QueueError> {
        Ok(self.spool.recover_claimed()?)
    }

    fn take(&self) -> Result<Option<Claimed>, QueueError> {
        Ok(self.spool.take_next()?)
    }

    fn complete(&self, d: Claimed) -> Result<(), QueueError> {
        self.spool.complete(d)?;
        Ok(())
    }

    fn fail(&self, d: Claimed, reason: &str) -> Result<(), QueueError> {
        self.spool.fail(d, reason)?;
        Ok(())
    }

    fn stats(&self) -> Result<QueueStats, QueueError> {
        let failed = std::fs::read_dir(self.spool.dir().join("failed"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| !n.starts_with('.') && n.ends_with(".json"))
                    .count() as u64
            })
            .unwrap_or(0);
        Ok(QueueStats {
            pending: self.spool.pending()?.len() as u64,
            failed,
        })
    }
}
