//! The processor queue on NATS JetStream: [`NatsQueue`] (the consumer side, a [`Queue`])
//! and [`NatsPublisher`] with [`forward`] (the producer side, used by `processor forward`).
//!
//! Layout (`docs/processor-queue.md`, "NATS JetStream"):
//!
//! * stream [`DEFAULT_STREAM`] (`LINECORD_JOBS`), file storage, subjects
//!   `linecord.jobs.>`; a job is published to `linecord.jobs.<type>` (`recording`, `event`,
//!   `other`) with the spool job's name in the `Nats-Msg-Id` header (the stream drops a
//!   second publish of the same name within its duplicate window) and in [`JOB_HEADER`];
//! * a durable pull consumer ([`DEFAULT_CONSUMER`], explicit acks): the processor fetches
//!   one job at a time and acks it **after** the index commit, waiting for the server to
//!   confirm the ack. A processor that dies before the ack gets the job again after the
//!   ack wait; the idempotent upserts make that harmless;
//! * a job that cannot be applied is copied with its reason ([`REASON_HEADER`]) to the
//!   stream [`DEFAULT_FAILED_STREAM`] (`LINECORD_FAILED`, subjects `linecord.failed.>`) and
//!   then terminated (`+TERM`: never redelivered). If that copy cannot be written the job
//!   is nak'ed (redelivered later) rather than lost.
//!
//! Producers (`recorder`, `sipctl`) keep writing to a local spool directory, so the media
//! process never does network I/O to the queue; `processor forward` moves the spool's jobs
//! into the stream (publish, wait for the stream's ack, then complete the spool job: at
//! least once, and exactly once in the stream within the duplicate window).

use std::future::IntoFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures_util::StreamExt;
use linecord_jobs::Spool;

use crate::blocking::BlockingRuntime;
use crate::queue::{Delivery, Queue, QueueError, QueueStats};

/// Default name of the jobs stream.
pub const DEFAULT_STREAM: &str = "LINECORD_JOBS";
/// Default name of the failed-jobs stream.
pub const DEFAULT_FAILED_STREAM: &str = "LINECORD_FAILED";
/// Default durable consumer name (every processor sharing it shares the work).
pub const DEFAULT_CONSUMER: &str = "processor";
/// Subject prefix of jobs: `linecord.jobs.<type>`.
pub const JOB_SUBJECT_PREFIX: &str = "linecord.jobs";
/// Subject prefix of failed jobs: `linecord.failed.<type>`.
pub const FAILED_SUBJECT_PREFIX: &str = "linecord.failed";
/// Header carrying the job's name (the spool file name).
pub const JOB_HEADER: &str = "Linecord-Job";
/// Header carrying why a job failed (on the failed-jobs stream).
pub const REASON_HEADER: &str = "Linecord-Failure-Reason";
/// Default ack wait: how long a delivered, unacknowledged job stays with its consumer.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(60);
/// Bound on every single request to the server.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to reach JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsOptions {
    /// Server URL(s), e.g. `nats://127.0.0.1:4222` (comma-separated for a cluster).
    pub url: String,
    /// Jobs stream name.
    pub stream: String,
    /// Failed-jobs stream name.
    pub failed_stream: String,
    /// Durable consumer name.
    pub consumer: String,
    /// Ack wait of the consumer (used when it is created).
    pub ack_wait: Duration,
    /// How long one `take` waits for a job before answering "none".
    pub fetch_wait: Duration,
}

impl NatsOptions {
    /// The defaults for the server at `url`.
    pub fn new(url: &str) -> NatsOptions {
        NatsOptions {
            url: url.to_owned(),
            stream: DEFAULT_STREAM.into(),
            failed_stream: DEFAULT_FAILED_STREAM.into(),
            consumer: DEFAULT_CONSUMER.into(),
            ack_wait: DEFAULT_ACK_WAIT,
            fetch_wait: Duration::from_millis(500),
        }
    }
}

fn nats_err(what: &str) -> impl FnOnce(String) -> QueueError + '_ {
    move |e| QueueError::Nats(format!("{what}: {e}"))
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(limit, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(nats_err(what)(e.to_string())),
        Err(_) => Err(nats_err(what)(format!("no answer within {limit:?}"))),
    }
}

async fn connect(opts: &NatsOptions) -> Result<jetstream::Context, QueueError> {
    let client = bounded(
        "connecting",
        REQUEST_TIMEOUT,
        async_nats::ConnectOptions::new()
            .name("linecord-processor")
            .connection_timeout(REQUEST_TIMEOUT)
            .connect(opts.url.as_str()),
    )
    .await?;
    let mut ctx = jetstream::new(client);
    ctx.set_timeout(REQUEST_TIMEOUT);
    Ok(ctx)
}

async fn ensure_streams(
    js: &jetstream::Context,
    opts: &NatsOptions,
) -> Result<(jetstream::stream::Stream, jetstream::stream::Stream), QueueError> {
    let jobs = bounded(
        "creating the jobs stream",
        REQUEST_TIMEOUT,
        js.get_or_create_stream(jetstream::stream::Config {
            name: opts.stream.clone(),
            subjects: vec![format!("{JOB_SUBJECT_PREFIX}.>")],
            storage: jetstream::stream::StorageType::File,
            duplicate_window: Duration::from_secs(600),
            ..Default::default()
        }),
    )
    .await?;
    let failed = bounded(
        "creating the failed-jobs stream",
        REQUEST_TIMEOUT,
        js.get_or_create_stream(jetstream::stream::Config {
            name: opts.failed_stream.clone(),
            subjects: vec![format!("{FAILED_SUBJECT_PREFIX}.>")],
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }),
    )
    .await?;
    Ok((jobs, failed))
}

/// The subject token for a job: its `type` field (`recording`, `event`), else `other`.
pub fn job_type(bytes: &[u8]) -> &'static str {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "type")]
        kind: Option<String>,
    }
    match serde_json::from_slice::<Head>(bytes)
        .ok()
        .and_then(|h| h.kind)
    {
        Some(k) if k == "recording" => "recording",
        Some(k) if k == "event" => "event",
        _ => "other",
    }
}

/// A header value made safe (no control characters, at most 1000 bytes).
fn header_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 1000 {
        let mut cut = 1000;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

struct Inner {
    // Declared first so it is dropped first: the clients below stop with it.
    rt: BlockingRuntime,
    js: jetstream::Context,
    opts: NatsOptions,
    consumer: PullConsumer,
    jobs: jetstream::stream::Stream,
    failed: jetstream::stream::Stream,
}

/// The consumer side of the JetStream queue.
#[derive(Clone)]
pub struct NatsQueue {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsQueue")
            .field("stream", &self.inner.opts.stream)
            .field("consumer", &self.inner.opts.consumer)
            .finish()
    }
}

/// A job fetched from JetStream, not yet acknowledged.
pub struct NatsDelivery {
    name: String,
    seq: u64,
    msg: jetstream::Message,
}

impl Delivery for NatsDelivery {
    fn name(&self) -> &str {
        &self.name
    }

    fn bytes(&self) -> &[u8] {
        &self.msg.payload
    }
}

impl NatsQueue {
    /// Connects, creates the streams and the durable consumer if they do not exist.
    pub fn connect(opts: &NatsOptions) -> Result<NatsQueue, QueueError> {
        let rt = BlockingRuntime::new("nats-queue").map_err(|e| QueueError::Nats(e.to_string()))?;
        let (js, jobs, failed, consumer) = rt.block_on(async {
            let js = connect(opts).await?;
            let (jobs, failed) = ensure_streams(&js, opts).await?;
            let consumer: PullConsumer = bounded(
                "creating the consumer",
                REQUEST_TIMEOUT,
                jobs.get_or_create_consumer(
                    &opts.consumer,
                    jetstream::consumer::pull::Config {
                        durable_name: Some(opts.consumer.clone()),
                        ack_policy: jetstream::consumer::AckPolicy::Explicit,
                        ack_wait: opts.ack_wait,
                        max_deliver: -1,
                        filter_subject: format!("{JOB_SUBJECT_PREFIX}.>"),
                        ..Default::default()
                    },
                ),
            )
            .await?;
            Ok::<_, QueueError>((js, jobs, failed, consumer))
        })?;
        Ok(NatsQueue {
            inner: Arc::new(Inner {
                rt,
                js,
                opts: opts.clone(),
                consumer,
                jobs,
                failed,
            }),
        })
    }

    /// The options it was opened with.
    pub fn options(&self) -> &NatsOptions {
        &self.inner.opts
    }
}

impl Queue for NatsQueue {
    type Delivery = NatsDelivery;

    /// Nothing to do: JetStream redelivers what a dead consumer left unacknowledged once the
    /// ack wait has passed.
    fn recover(&self) -> Result<Vec<String>, QueueError> {
        Ok(Vec::new())
    }

    fn take(&self) -> Result<Option<NatsDelivery>, QueueError> {
        let inner = &self.inner;
        let wait = inner.opts.fetch_wait;
        inner.rt.block_on(async {
            let mut batch = bounded(
                "fetching",
                REQUEST_TIMEOUT,
                inner
                    .consumer
                    .fetch()
                    .max_messages(1)
                    .expires(wait)
                    .messages(),
            )
            .await?;
            let next = match tokio::time::timeout(wait + REQUEST_TIMEOUT, batch.next()).await {
                Ok(n) => n,
                Err(_) => return Ok(None),
            };
            let msg = match next {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(nats_err("fetching")(e.to_string())),
            };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            let name = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(JOB_HEADER))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| format!("{}#{seq}", msg.subject));
            Ok(Some(NatsDelivery { name, seq, msg }))
        })
    }

    fn complete(&self, d: NatsDelivery) -> Result<(), QueueError> {
        self.inner
            .rt
            .block_on(bounded("acking", REQUEST_TIMEOUT * 2, d.msg.double_ack()))
    }

    fn fail(&self, d: NatsDelivery, reason: &str) -> Result<(), QueueError> {
        let inner = &self.inner;
        inner.rt.block_on(async {
            let subject = format!("{FAILED_SUBJECT_PREFIX}.{}", job_type(&d.msg.payload));
            // Deduplicated by the job's stream sequence: a repeat after a crash between
            // this publish and the term is dropped by the failed-jobs stream.
            let publish = jetstream::message::PublishMessage::build()
                .payload(d.msg.payload.clone())
                .message_id(format!("{}#{}", inner.opts.stream, d.seq))
                .header(JOB_HEADER, header_text(&d.name).as_str())
                .header(REASON_HEADER, header_text(reason).as_str());
            let recorded = async {
                let ack = bounded(
                    "recording the failure",
                    REQUEST_TIMEOUT,
                    inner.js.send_publish(subject, publish),
                )
                .await?;
                bounded("recording the failure", REQUEST_TIMEOUT, ack.into_future()).await
            }
            .await;
            if let Err(e) = recorded {
                // Keep the job rather than lose it with its reason: try again later.
                let _ = d
                    .msg
                    .ack_with(AckKind::Nak(Some(Duration::from_secs(5))))
                    .await;
                return Err(e);
            }
            bounded(
                "terminating",
                REQUEST_TIMEOUT * 2,
                d.msg.double_ack_with(AckKind::Term),
            )
            .await
        })
    }

    fn stats(&self) -> Result<QueueStats, QueueError> {
        let inner = &self.inner;
        inner.rt.block_on(async {
            let c = bounded("consumer info", REQUEST_TIMEOUT, inner.consumer.get_info()).await?;
            let f = bounded("stream info", REQUEST_TIMEOUT, inner.failed.get_info()).await?;
            Ok(QueueStats {
                pending: c.num_pending + c.num_ack_pending as u64,
                failed: f.state.messages,
            })
        })
    }
}

impl NatsQueue {
    /// Jobs in the jobs stream (delivered or not; for tests and diagnostics).
    pub fn stream_messages(&self) -> Result<u64, QueueError> {
        let inner = &self.inner;
        inner.rt.block_on(async {
            let i = bounded("stream info", REQUEST_TIMEOUT, inner.jobs.get_info()).await?;
            Ok(i.state.messages)
        })
    }
}

/// The producer side: publishes jobs into the jobs stream and waits for its ack.
pub struct NatsPublisher {
    rt: BlockingRuntime,
    js: jetstream::Context,
}

impl std::fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NatsPublisher")
    }
}

impl NatsPublisher {
    /// Connects and creates the streams if they do not exist.
    pub fn connect(opts: &NatsOptions) -> Result<NatsPublisher, QueueError> {
        let rt =
            BlockingRuntime::new("nats-publish").map_err(|e| QueueError::Nats(e.to_string()))?;
        let js = rt.block_on(async {
            let js = connect(opts).await?;
            ensure_streams(&js, opts).await?;
            Ok::<_, QueueError>(js)
        })?;
        Ok(NatsPublisher { rt, js })
    }

    /// Publishes the job `name` with `bytes` to `linecord.jobs.<type>` and waits for the
    /// stream to store it. Returns `true` if the stream already had it (a repeat within the
    /// duplicate window, e.g. after a crash between publish and spool completion).
    pub fn publish(&self, name: &str, bytes: &[u8]) -> Result<bool, QueueError> {
        let subject = format!("{JOB_SUBJECT_PREFIX}.{}", job_type(bytes));
        let publish = jetstream::message::PublishMessage::build()
            .payload(bytes::Bytes::copy_from_slice(bytes))
            .message_id(name)
            .header(JOB_HEADER, header_text(name).as_str());
        self.rt.block_on(async {
            let ack = bounded(
                "publishing",
                REQUEST_TIMEOUT,
                self.js.send_publish(subject, publish),
            )
            .await?;
            let ack = bounded("publishing", REQUEST_TIMEOUT, ack.into_future()).await?;
            Ok(ack.duplicate)
        })
    }
}

/// What [`forward`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Forwarded {
    /// Jobs published and completed in the spool.
    pub published: u64,
    /// Of those, how many the stream already had.
    pub duplicates: u64,
}

/// Moves the jobs of `spool` into JetStream until `stop` is set (or, with `once`, until
/// the spool is empty): recover claimed jobs, then for each job publish it (retrying every
/// `poll` while the server is unreachable), then complete it in the spool. A job is
/// completed only after the stream acknowledged it (at least once).
pub fn forward(
    spool: &Spool,
    publisher: &NatsPublisher,
    stop: &AtomicBool,
    poll: Duration,
    once: bool,
) -> Result<Forwarded, QueueError> {
    let recovered = spool.recover_claimed()?;
    if !recovered.is_empty() {
        tracing::warn!(
            jobs = recovered.len(),
            "recovered jobs claimed before a crash"
        );
    }
    let mut done = Forwarded::default();
    while !stop.load(Ordering::Relaxed) {
        let Some(job) = spool.take_next()? else {
            if once {
                break;
            }
            std::thread::sleep(poll);
            continue;
        };
        let mut published = None;
        while !stop.load(Ordering::Relaxed) {
            match publisher.publish(job.name(), job.bytes()) {
                Ok(dup) => {
                    published = Some(dup);
                    break;
                }
                Err(e) => {
                    tracing::warn!(job = job.name(), error = %e, "cannot publish; retrying");
                    std::thread::sleep(poll.max(Duration::from_millis(200)));
                }
            }
        }
        let Some(dup) = published else {
            // Stopping: the job stays claimed and is recovered at the next start.
            break;
        };
        tracing::debug!(job = job.name(), duplicate = dup, "forwarded");
        spool.complete(job)?;
        done.published += 1;
        done.duplicates += u64::from(dup);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_headers() {
        assert_eq!(job_type(br#"{"type":"recording"}"#), "recording");
        assert_eq!(job_type(br#"{"type":"event","x":1}"#), "event");
        assert_eq!(job_type(br#"{"type":"bogus"}"#), "other");
        assert_eq!(job_type(b"not json"), "other");
        assert_eq!(header_text("a\r\nb"), "a  b");
        assert_eq!(header_text(&"é".repeat(600)).len(), 1000);
    }
}
