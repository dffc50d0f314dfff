//! The spool directory: the embedded processor queue (layout in `docs/processor-queue.md`).
//!
//! ```text
//! DIR/tmp/     jobs being written (never read by consumers)
//! DIR/new/     complete jobs, `<unix-ms>-<id>.json`, oldest first by name
//! DIR/work/    jobs claimed by a consumer (renamed out of new/)
//! DIR/done/    handled jobs
//! DIR/failed/  failed jobs, each with `<name>.reason` beside it
//! ```
//!
//! Producers write to `tmp/`, fsync, rename into `new/` and fsync `new/`, so consumers see
//! whole jobs only and a pushed job survives a crash. A consumer claims a job by renaming it
//! from `new/` into `work/`: rename is atomic, so of two consumers racing for one job one
//! wins and the other gets "not found" and moves on. Delivery is at least once: a job whose
//! consumer died is put back by [`Spool::recover_claimed`], so consumers must be idempotent
//! (dedupe by `recording_id` / `event_id`).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::job::{parse, Job, JobError};

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file-system operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was done (`creating`, `renaming`, …).
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A job id or name that cannot be a spool file name.
    #[error("{0:?} cannot be used in a spool file name")]
    InvalidName(String),
    /// Bytes pushed are not a valid job.
    #[error("refusing to spool an invalid job: {0}")]
    InvalidJob(#[from] JobError),
    /// The job could not be encoded.
    #[error("encoding the job: {0}")]
    Encode(#[source] serde_json::Error),
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SpoolError {
    let path = path.to_owned();
    move |source| SpoolError::Io { op, path, source }
}

/// A spool directory (see the module documentation). Cheap to clone; several `Spool`
/// values, threads or processes may use the same directory at once.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// A job taken out of `new/` by [`Spool::take_next`]: it sits in `work/` until it is
/// [`Spool::complete`]d or [`Spool::fail`]ed (or recovered after a crash).
#[derive(Debug)]
pub struct Claimed {
    name: String,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl Claimed {
    /// The job's file name (`<unix-ms>-<id>.json`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the claimed job is now (in `work/`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The job file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The job, parsed (an error means the consumer should [`Spool::fail`] it).
    pub fn parse(&self) -> Result<Job, JobError> {
        parse(&self.bytes)
    }
}

/// The spool file name of job `id` pushed at `unix_ms`: `<unix-ms>-<id>.json` (the same
/// names `recorder` writes). The id must be non-empty, at most 200 bytes of
/// `[A-Za-z0-9._@+-]`, and not start with a dot.
pub fn job_file_name(unix_ms: u64, id: &str) -> Result<String, SpoolError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b));
    if ok {
        Ok(format!("{unix_ms}-{id}.json"))
    } else {
        Err(SpoolError::InvalidName(id.to_owned()))
    }
}

/// Sort key of a job name: the leading Unix ms (names without one sort last), then the name.
fn sort_key(name: &str) -> (u64, &str) {
    let ms = name
        .split_once('-')
        .and_then(|(ms, _)| ms.parse().ok())
        .unwrap_or(u64::MAX);
    (ms, name)
}

fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// A name that may be a job file (not hidden, not a reason or temporary file).
fn is_job_name(name: &str) -> bool {
    !name.starts_with('.') && name.ends_with(".json")
}

impl Spool {
    /// Opens (creating if missing) the spool directory `dir` and its `tmp/`, `new/`,
    /// `work/`, `done/` and `failed/` subdirectories.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let s = Spool { dir: dir.into() };
        for sub in ["tmp", "new", "work", "done", "failed"] {
            let d = s.dir.join(sub);
            fs::create_dir_all(&d).map_err(io_err("creating", &d))?;
        }
        Ok(s)
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` as `dst_dir/name` atomically through `tmp/`.
    fn write_atomic(
        &self,
        dst_dir: &Path,
        name: &str,
        bytes: &[u8],
    ) -> Result<PathBuf, SpoolError> {
        let tmp = self.sub("tmp").join(format!("{name}.tmp"));
        let dst = dst_dir.join(name);
        let written = File::create(&tmp)
            .map_err(io_err("creating", &tmp))
            .and_then(|mut f| {
                f.write_all(bytes)
                    .and_then(|()| f.sync_all())
                    .map_err(io_err("writing", &tmp))
            })
            .and_then(|()| fs::rename(&tmp, &dst).map_err(io_err("renaming into", &dst)));
        if let Err(e) = written {
            // A failed write (a full disk) leaves nothing behind: no half job in tmp/.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fsync_dir(dst_dir)?;
        Ok(dst)
    }

    /// Pushes a job: its JSON is written to `tmp/`, fsynced, renamed into
    /// `new/<now_unix_ms>-<job id>.json`, and `new/` is fsynced. Returns the path in `new/`.
    pub fn push(&self, job: &Job, now_unix_ms: u64) -> Result<PathBuf, SpoolError> {
        let name = job_file_name(now_unix_ms, job.id())?;
        let bytes = job.to_json().map_err(SpoolError::Encode)?;
        self.write_atomic(&self.sub("new"), &name, &bytes)
    }

    /// Pushes a job already encoded as JSON, named `<now_unix_ms>-<name_hint>.json`. The
    /// bytes must [`parse`] as a known job (garbage never enters the queue).
    pub fn push_bytes(
        &self,
        bytes: &[u8],
        name_hint: &str,
        now_unix_ms: u64,
    ) -> Result<PathBuf, SpoolError> {
        let name = job_file_name(now_unix_ms, name_hint)?;
        parse(bytes)?;
        self.write_atomic(&self.sub("new"), &name, bytes)
    }

    fn list(&self, sub: &str) -> Result<Vec<String>, SpoolError> {
        let dir = self.sub(sub);
        let mut names: Vec<String> = fs::read_dir(&dir)
            .map_err(io_err("listing", &dir))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| is_job_name(n))
            .collect();
        names.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        Ok(names)
    }

    /// Names of the jobs waiting in `new/`, oldest first.
    pub fn pending(&self) -> Result<Vec<String>, SpoolError> {
        self.list("new")
    }

    /// Names of the jobs claimed (in `work/`), oldest first.
    pub fn claimed(&self) -> Result<Vec<String>, SpoolError> {
        self.list("work")
    }

    /// Claims the oldest job of `new/` by renaming it into `work/` and reads it. `None`
    /// when `new/` is empty. Jobs another consumer claims first are skipped. If reading
    /// fails the job stays in `work/` (see [`Spool::recover_claimed`]).
    pub fn take_next(&self) -> Result<Option<Claimed>, SpoolError> {
        let new = self.sub("new");
        let work = self.sub("work");
        for name in self.pending()? {
            let src = new.join(&name);
            let dst = work.join(&name);
            match fs::rename(&src, &dst) {
                Ok(()) => {
                    let bytes = fs::read(&dst).map_err(io_err("reading", &dst))?;
                    return Ok(Some(Claimed {
                        name,
                        path: dst,
                        bytes,
                    }));
                }
                // Another consumer was faster.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("claiming", &src)(e)),
            }
        }
        Ok(None)
    }

    /// Marks a claimed job handled: moves it into `done/`. Returns its new path.
    pub fn complete(&self, claimed: Claimed) -> Result<PathBuf, SpoolError> {
        let done = self.sub("done");
        let dst = done.join(&claimed.name);
        fs::rename(&claimed.path, &dst).map_err(io_err("renaming into", &dst))?;
        fsync_dir(&done)?;
        Ok(dst)
    }

    /// Marks a claimed job failed: writes `failed/<name>.reason` (the reason as UTF-8 text,
    /// atomically), then moves the job into `failed/`. Returns the job's new path.
    pub fn fail(&self, claimed: Claimed, reason: &str) -> Result<PathBuf, SpoolError> {
        let failed = self.sub("failed");
        self.write_atomic(
            &failed,
            &format!("{}.reason", claimed.name),
            reason.as_bytes(),
        )?;
        let dst = failed.join(&claimed.name);
        fs::rename(&claimed.path, &dst).map_err(io_err("renaming into", &dst))?;
        fsync_dir(&failed)?;
        Ok(dst)
    }

    /// The reason a failed job was given (`None` if there is no such failed job reason).
    pub fn failure_reason(&self, name: &str) -> Result<Option<String>, SpoolError> {
        let path = self.sub("failed").join(format!("{name}.reason"));
        match fs::read(&path) {
            Ok(b) => Ok(Some(String::from_utf8_lossy(&b).into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path)(e)),
        }
    }

    /// Puts every job left in `work/` back into `new/` (same name, so it keeps its place in
    /// the order) and returns their names. Call it when no consumer of this spool is running
    /// (at start-up of the only consumer, or of the first of several): it cannot tell a
    /// crashed consumer's job from a running one's.
    pub fn recover_claimed(&self) -> Result<Vec<String>, SpoolError> {
        let work = self.sub("work");
        let new = self.sub("new");
        let mut out = Vec::new();
        for name in self.claimed()? {
            let dst = new.join(&name);
            match fs::rename(work.join(&name), &dst) {
                Ok(()) => out.push(name),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("renaming into", &dst)(e)),
            }
        }
        if !out.is_empty() {
            fsync_dir(&new)?;
        }
        Ok(out)
    }

    /// Removes files in `tmp/` last modified before `before` (left by producers that died
    /// while writing) and returns how many. Pass a time well in the past (e.g. an hour ago)
    /// so jobs being written are left alone.
    pub fn remove_stale_tmp(&self, before: SystemTime) -> Result<usize, SpoolError> {
        let tmp = self.sub("tmp");
        let mut n = 0;
        for e in fs::read_dir(&tmp)
            .map_err(io_err("listing", &tmp))?
            .flatten()
        {
            let stale = e
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < before);
            if stale && fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::tests::{event_example, RECORDING_EXAMPLE};
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "linecord-jobs-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&p);
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn event_job(i: u64) -> Job {
        let mut e = event_example(i);
        e.event_id = crate::uuid_v7(1_000 + i, [(i % 251) as u8; 10]);
        Job::Event(e)
    }

    #[test]
    fn open_creates_the_layout() {
        let t = TempDir::new("layout");
        let s = Spool::open(&t.0).expect("open");
        for sub in ["tmp", "new", "work", "done", "failed"] {
            assert!(t.0.join(sub).is_dir(), "{sub}");
        }
        assert_eq!(s.dir(), t.0);
        assert!(s.take_next().expect("take").is_none());
    }

    #[test]
    fn a_failed_push_leaves_no_tmp_file() {
        let t = TempDir::new("failed-push");
        let s = Spool::open(&t.0).expect("open");
        // new/ gone: the rename fails after the tmp file was written.
        fs::remove_dir_all(t.0.join("new")).expect("remove new/");
        let e = s.push(&event_job(1), 1_000).expect_err("no new/ dir");
        assert!(e.to_string().contains("renaming"), "{e}");
        assert_eq!(fs::read_dir(t.0.join("tmp")).expect("tmp").count(), 0);
    }

    #[test]
    fn push_take_complete_in_order() {
        let t = TempDir::new("order");
        let s = Spool::open(&t.0).expect("open");
        // Pushed out of time order: taken oldest (by name) first; 999 < 1000 numerically.
        let late = s.push(&event_job(2), 1_795_000_000_000).expect("push");
        let early = s.push(&event_job(1), 999_999_999_999).expect("push");
        assert!(late.starts_with(t.0.join("new")));
        assert_eq!(fs::read_dir(t.0.join("tmp")).expect("tmp").count(), 0);
        let name = early.file_name().and_then(|n| n.to_str()).expect("name");
        assert!(name.starts_with("999999999999-0"), "{name}");
        let c = s.take_next().expect("take").expect("a job");
        assert_eq!(c.path().parent(), Some(t.0.join("work").as_path()));
        assert_eq!(c.parse().expect("parses"), event_job(1));
        let done = s.complete(c).expect("complete");
        assert!(done.is_file());
        assert_eq!(done.parent(), Some(t.0.join("done").as_path()));
        let c = s.take_next().expect("take").expect("a job");
        assert_eq!(c.parse().expect("parses"), event_job(2));
        s.complete(c).expect("complete");
        assert!(s.take_next().expect("take").is_none());
        assert!(s.claimed().expect("claimed").is_empty());
    }

    #[test]
    fn recorder_job_bytes_and_names_are_compatible() {
        let t = TempDir::new("compat");
        let s = Spool::open(&t.0).expect("open");
        let id = "019ab3c4-5d6e-7f80-9a1b-2c3d4e5f6071";
        let p = s
            .push_bytes(RECORDING_EXAMPLE.as_bytes(), id, 1_795_598_141_010)
            .expect("push");
        assert_eq!(p, t.0.join("new").join(format!("1795598141010-{id}.json")));
        // A file dropped into new/ the way recorder's store.rs does it is taken as well.
        fs::write(
            t.0.join("new").join(format!("1795598141011-{id}.json")),
            RECORDING_EXAMPLE,
        )
        .expect("write");
        for _ in 0..2 {
            let c = s.take_next().expect("take").expect("job");
            assert_eq!(c.parse().expect("parses").id(), id);
            s.complete(c).expect("complete");
        }
    }

    #[test]
    fn push_refuses_bad_names_and_invalid_jobs() {
        let t = TempDir::new("refuse");
        let s = Spool::open(&t.0).expect("open");
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            assert!(
                matches!(
                    s.push_bytes(RECORDING_EXAMPLE.as_bytes(), bad, 1),
                    Err(SpoolError::InvalidName(_))
                ),
                "{bad:?}"
            );
        }
        let v9 = RECORDING_EXAMPLE.replace(".v1", ".v9");
        assert!(matches!(
            s.push_bytes(v9.as_bytes(), "x", 1),
            Err(SpoolError::InvalidJob(JobError::UnknownSchema(_)))
        ));
        assert!(matches!(
            s.push_bytes(b"not json", "x", 1),
            Err(SpoolError::InvalidJob(JobError::InvalidJson(_)))
        ));
        assert!(s.pending().expect("pending").is_empty());
    }

    #[test]
    fn two_consumers_never_get_the_same_job() {
        let t = TempDir::new("race");
        let s = Spool::open(&t.0).expect("open");
        let n = 300u64;
        for i in 0..n {
            s.push(&event_job(i), 1_000_000 + i).expect("push");
        }
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let s = Spool::open(&t.0).expect("open");
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Some(c) = s.take_next().expect("take") {
                        got.push(c.name().to_owned());
                        s.complete(c).expect("complete");
                    }
                    got
                })
            })
            .collect();
        let mut all = Vec::new();
        for w in workers {
            all.extend(w.join().expect("worker"));
        }
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(all.len(), n as usize, "every job taken exactly once");
        assert_eq!(unique.len(), n as usize);
        assert_eq!(
            fs::read_dir(t.0.join("done")).expect("done").count(),
            n as usize
        );
    }

    #[test]
    fn a_crashed_consumer_job_is_recovered() {
        let t = TempDir::new("crash");
        let s = Spool::open(&t.0).expect("open");
        s.push(&event_job(1), 10).expect("push");
        s.push(&event_job(2), 20).expect("push");
        let c = s.take_next().expect("take").expect("job");
        let name = c.name().to_owned();
        drop(c); // the consumer dies: neither completed nor failed
        assert_eq!(s.claimed().expect("claimed"), std::slice::from_ref(&name));
        // A new consumer starts.
        let s2 = Spool::open(&t.0).expect("reopen");
        assert_eq!(
            s2.recover_claimed().expect("recover"),
            std::slice::from_ref(&name)
        );
        assert!(s2.claimed().expect("claimed").is_empty());
        // It is the oldest again, so it is taken first.
        let c = s2.take_next().expect("take").expect("job");
        assert_eq!(c.name(), name);
        assert_eq!(c.parse().expect("parses"), event_job(1));
    }

    #[test]
    fn failed_jobs_carry_their_reason() {
        let t = TempDir::new("fail");
        let s = Spool::open(&t.0).expect("open");
        fs::write(
            t.0.join("new").join("5-garbage.json"),
            b"{\"schema\":\"x\"}",
        )
        .expect("write");
        let c = s.take_next().expect("take").expect("job");
        let err = c.parse().expect_err("unknown schema");
        assert!(matches!(err, JobError::UnknownSchema(_)));
        let path = s.fail(c, &err.to_string()).expect("fail");
        assert_eq!(path, t.0.join("failed").join("5-garbage.json"));
        assert!(path.is_file());
        assert_eq!(
            s.failure_reason("5-garbage.json")
                .expect("reason")
                .as_deref(),
            Some("unknown job schema \"x\"")
        );
        assert_eq!(s.failure_reason("6-other.json").expect("reason"), None);
        assert!(s.take_next().expect("take").is_none());
        assert!(s.claimed().expect("claimed").is_empty());
    }

    #[test]
    fn stale_tmp_files_are_removed_and_ignored() {
        let t = TempDir::new("tmp");
        let s = Spool::open(&t.0).expect("open");
        fs::write(t.0.join("tmp").join("1-x.json.tmp"), b"{").expect("write");
        fs::write(t.0.join("new").join(".hidden.json"), b"{").expect("write");
        fs::write(t.0.join("new").join("7-notes.txt"), b"{").expect("write");
        assert!(s.take_next().expect("take").is_none());
        assert_eq!(
            s.remove_stale_tmp(SystemTime::UNIX_EPOCH).expect("clean"),
            0
        );
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(s.remove_stale_tmp(later).expect("clean"), 1);
    }

    #[test]
    fn sort_key_orders_numerically() {
        let mut v = vec!["10-a.json", "9-b.json", "x-c.json", "10-0.json"];
        v.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        assert_eq!(v, ["9-b.json", "10-0.json", "10-a.json", "x-c.json"]);
    }
}
