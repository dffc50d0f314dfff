//! Counting what a relay recorded, to check it against what was sent: linecord's spool jobs
//! (`docs/processor-queue.md`) or rtpengine's pcap files.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// What a relay recorded for a set of calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Recorded {
    /// Recordings found.
    pub recordings: u64,
    /// RTP packets in them.
    pub packets: u64,
    /// Recordings not marked complete.
    pub incomplete: u64,
}

/// Sums the RTP packets of linecord recording jobs in `spool/new` whose `call_id` is in
/// `call_ids`, waiting up to `wait` for one job per call (jobs appear when recordings are
/// finished, after `delete`).
pub fn from_spool(
    spool: &Path,
    call_ids: &HashSet<String>,
    wait: Duration,
) -> io::Result<Recorded> {
    from_spool_timed(spool, call_ids, wait).map(|(r, _)| r)
}

/// [`from_spool`], also giving when the last of those jobs entered `spool/new`: its
/// status-change time (the producer renames the job in, which sets it), so the time does
/// not depend on how often the spool is looked at.
pub fn from_spool_timed(
    spool: &Path,
    call_ids: &HashSet<String>,
    wait: Duration,
) -> io::Result<(Recorded, Option<SystemTime>)> {
    let deadline = Instant::now() + wait;
    loop {
        let r = scan_spool(spool, call_ids)?;
        if r.0.recordings >= call_ids.len() as u64 || Instant::now() >= deadline {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status-change time of a file's metadata.
fn changed(m: &fs::Metadata) -> Option<SystemTime> {
    let secs = u64::try_from(m.ctime()).ok()?;
    let nanos = u32::try_from(m.ctime_nsec()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

fn scan_spool(
    spool: &Path,
    call_ids: &HashSet<String>,
) -> io::Result<(Recorded, Option<SystemTime>)> {
    let mut r = Recorded::default();
    let mut last: Option<SystemTime> = None;
    let dir = match fs::read_dir(spool.join("new")) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((r, None)),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let path = entry?.path();
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(job) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let call = job.get("call_id").and_then(|v| v.as_str()).unwrap_or("");
        if !call_ids.contains(call) {
            continue;
        }
        r.recordings += 1;
        if job.get("complete").and_then(|v| v.as_bool()) != Some(true) {
            r.incomplete += 1;
        }
        r.packets += rtp_packets(&job);
        if let Some(t) = fs::metadata(&path).ok().as_ref().and_then(changed) {
            last = Some(last.map_or(t, |l| l.max(t)));
        }
    }
    Ok((r, last))
}

fn rtp_packets(job: &serde_json::Value) -> u64 {
    job.get("streams")
        .and_then(|s| s.as_array())
        .map(|streams| {
            streams
                .iter()
                .filter(|s| s.get("component").and_then(|c| c.as_str()) == Some("rtp"))
                .filter_map(|s| s.get("packets").and_then(|p| p.as_u64()))
                .sum()
        })
        .unwrap_or(0)
}

/// Counts the packets of every pcap file under `dir` whose name starts with `prefix`
/// (rtpengine's `--recording-method=pcap` names files after the call-id), waiting up to
/// `wait` for `expected_files` files.
pub fn from_pcaps(
    dir: &Path,
    prefix: &str,
    expected_files: u64,
    wait: Duration,
) -> io::Result<Recorded> {
    let deadline = Instant::now() + wait;
    loop {
        let mut r = Recorded::default();
        scan_pcaps(dir, prefix, &mut r)?;
        if r.recordings >= expected_files || Instant::now() >= deadline {
            return Ok(r);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn scan_pcaps(dir: &Path, prefix: &str, r: &mut Recorded) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            scan_pcaps(&path, prefix, r)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(prefix) && name.ends_with(".pcap") {
            r.recordings += 1;
            r.packets += pcap_records(&fs::read(&path)?);
        }
    }
    Ok(())
}

/// Number of records in a classic pcap file (either byte order); a truncated last record
/// is not counted.
pub fn pcap_records(bytes: &[u8]) -> u64 {
    let Some(magic) = bytes.get(0..4) else {
        return 0;
    };
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return 0,
    };
    let mut at = 24;
    let mut n = 0;
    while let Some(h) = bytes.get(at..at + 16) {
        let b = [h[8], h[9], h[10], h[11]];
        let incl = if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as usize;
        at += 16 + incl;
        if at > bytes.len() {
            break;
        }
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pcap_records() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1];
        f.resize(24, 0);
        for len in [10u32, 200, 0] {
            f.extend_from_slice(&[0; 8]);
            f.extend_from_slice(&len.to_le_bytes());
            f.extend_from_slice(&len.to_le_bytes());
            f.resize(f.len() + len as usize, 7);
        }
        assert_eq!(pcap_records(&f), 3);
        assert_eq!(pcap_records(&f[..f.len() - 1]), 2, "cut in the last header");
        assert_eq!(
            pcap_records(&f[..24 + 16 + 10 + 16 + 100]),
            1,
            "cut in record 2"
        );
        assert_eq!(pcap_records(b"garbage"), 0);
    }

    #[test]
    fn sums_spool_jobs_of_our_calls() {
        let dir = std::env::temp_dir().join(format!("bench-spool-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("new")).unwrap();
        let job = |call: &str, complete: bool| {
            serde_json::json!({
                "schema": "linecord.recording.v1", "call_id": call, "complete": complete,
                "streams": [
                    {"component": "rtp", "packets": 100},
                    {"component": "rtcp", "packets": 5},
                    {"component": "rtp", "packets": 98}
                ]
            })
            .to_string()
        };
        fs::write(dir.join("new/1.json"), job("x-1", true)).unwrap();
        fs::write(dir.join("new/2.json"), job("x-2", false)).unwrap();
        fs::write(dir.join("new/3.json"), job("other", true)).unwrap();
        fs::write(dir.join("new/4.json"), "not json").unwrap();
        let ids: HashSet<String> = ["x-1".to_string(), "x-2".to_string()].into();
        let before = SystemTime::now() - Duration::from_secs(5);
        let (r, last) = from_spool_timed(&dir, &ids, Duration::ZERO).unwrap();
        let last = last.expect("a job time");
        assert!(last >= before && last <= SystemTime::now(), "{last:?}");
        assert_eq!(from_spool(&dir, &ids, Duration::ZERO).unwrap(), r);
        assert_eq!(
            r,
            Recorded {
                recordings: 2,
                packets: 396,
                incomplete: 1
            }
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
