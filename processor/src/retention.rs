//! Removing recordings: by an admin (`DELETE`) and by retention. Both remove the stored
//! file and its WAV cache first, then the index rows, and write the audit trail.

use std::sync::Arc;

use crate::access::Access;
use crate::model::{AuditEntry, RecordingRow};
use crate::repo::{RepoError, Repository};
use crate::storage::{wav_cache_key, Storage, StorageError};

/// Why a recording could not be removed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// Removing the file failed (the rows are kept, so it can be tried again).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The index failed.
    #[error("index: {0}")]
    Repo(#[from] RepoError),
}

/// Recordings removed per retention batch.
pub const RETENTION_BATCH: u32 = 200;

/// Removes `rec` everywhere and audits it as `action` by `who` at `now_ms`.
pub fn remove_recording(
    repo: &dyn Repository,
    storage: &dyn Storage,
    rec: &RecordingRow,
    who: &Access,
    action: &str,
    now_ms: u64,
) -> Result<(), RemoveError> {
    if let Some(key) = &rec.storage_key {
        storage.delete(&wav_cache_key(key))?;
        storage.delete(key)?;
    }
    repo.delete_recording(&rec.recording_id)?;
    repo.append_audit(&AuditEntry {
        time_ms: now_ms,
        token_name: who.name.clone(),
        role: who.role.as_str().to_owned(),
        action: action.to_owned(),
        recording_id: rec.recording_id.clone(),
        interaction_id: Some(rec.interaction_id.clone()),
    })?;
    Ok(())
}

/// One retention run: removes every recording that started more than `days` days before
/// `now_ms` and is not under legal hold. Returns how many were removed. A recording that
/// cannot be removed is logged and skipped (tried again on the next run).
pub fn run_retention(
    repo: &Arc<dyn Repository>,
    storage: &Arc<dyn Storage>,
    days: u32,
    now_ms: u64,
) -> Result<u64, RepoError> {
    let before = now_ms.saturating_sub(u64::from(days) * 86_400_000);
    let who = Access::system("retention");
    let mut removed = 0u64;
    loop {
        let batch = repo.expired(before, RETENTION_BATCH)?;
        let mut progress = false;
        for rec in &batch {
            match remove_recording(&**repo, &**storage, rec, &who, "retention", now_ms) {
                Ok(()) => {
                    removed += 1;
                    progress = true;
                }
                Err(e) => {
                    tracing::warn!(recording = %rec.recording_id, error = %e, "retention failed")
                }
            }
        }
        if !progress || batch.len() < RETENTION_BATCH as usize {
            return Ok(removed);
        }
    }
}
