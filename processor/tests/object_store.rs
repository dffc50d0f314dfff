//! Object storage ([`ObjectStorage`]) through `object_store`'s `LocalFileSystem` backend
//! (`file://`): the same code path as `s3://` (put, multipart upload, ranged GET, HEAD,
//! DELETE) without an S3 server, which the test machines do not have.
//!
//! 1. The trait directly: store (small and multipart), size, range reads (inside, across
//!    the end, past the end), put/read_all, delete, bad keys.
//! 2. The real `processor` binary with `--storage file:///…`: a recording job is stored
//!    through it, the API serves the original and the WAV with `Range` from it, and DELETE
//!    removes the object.

mod common;

use common::*;
use processor::storage::Storage;
use processor::storage_object::{ObjectStorage, S3Options, MULTIPART_THRESHOLD};
use serde_json::json;

/// 2026-11-25T09:00:00Z.
const T_A: u64 = 1_795_597_200_000;

fn file_url(p: &std::path::Path) -> String {
    format!("file://{}", p.display())
}

#[test]
fn object_storage_trait_on_local_file_system() {
    let dir = TempDir::new("objstore");
    let s =
        ObjectStorage::open(&file_url(&dir.join("objects")), &S3Options::default()).expect("open");
    let src = dir.join("src.lcr");
    std::fs::write(&src, b"0123456789").expect("write");
    assert_eq!(s.store_file("2026/01/02/r.lcr", &src).expect("store"), 10);
    assert_eq!(s.store_file("2026/01/02/r.lcr", &src).expect("again"), 10);
    assert!(dir.join("objects/2026/01/02/r.lcr").is_file());
    assert_eq!(s.size("2026/01/02/r.lcr").expect("size"), Some(10));
    assert_eq!(s.size("2026/01/02/none.lcr").expect("size"), None);
    assert_eq!(
        s.read_range("2026/01/02/r.lcr", 3, 4).expect("range"),
        b"3456"
    );
    assert_eq!(s.read_range("2026/01/02/r.lcr", 8, 9).expect("end"), b"89");
    assert_eq!(s.read_range("2026/01/02/r.lcr", 10, 5).expect("past"), b"");
    assert_eq!(s.read_range("2026/01/02/r.lcr", 0, 0).expect("empty"), b"");
    assert!(s.read_range("2026/01/02/none.lcr", 0, 4).is_err());
    s.put("2026/01/02/cache/r.wav", b"RIFF").expect("put");
    assert_eq!(s.read_all("2026/01/02/cache/r.wav").expect("all"), b"RIFF");
    s.put("2026/01/02/cache/r.wav", b"RIFF2").expect("replace");
    assert_eq!(s.read_all("2026/01/02/cache/r.wav").expect("all"), b"RIFF2");
    assert!(s.delete("2026/01/02/r.lcr").expect("delete"));
    assert!(!s.delete("2026/01/02/r.lcr").expect("delete again"));
    assert_eq!(s.size("2026/01/02/r.lcr").expect("size"), None);
    assert!(s.size("../x").is_err());
    assert!(s.put("a//b", b"x").is_err());

    // A file above the multipart threshold goes up in parts and reads back exactly.
    let big: Vec<u8> = (0..MULTIPART_THRESHOLD * 2 + 12_345)
        .map(|i| (i % 251) as u8)
        .collect();
    let big_src = dir.join("big.lcr");
    std::fs::write(&big_src, &big).expect("write big");
    assert_eq!(
        s.store_file("2026/01/03/big.lcr", &big_src)
            .expect("multipart"),
        big.len() as u64
    );
    assert_eq!(
        s.size("2026/01/03/big.lcr").expect("size"),
        Some(big.len() as u64)
    );
    let off = MULTIPART_THRESHOLD as u64 - 7;
    assert_eq!(
        s.read_range("2026/01/03/big.lcr", off, 100).expect("range"),
        big[off as usize..off as usize + 100]
    );
    assert_eq!(s.read_all("2026/01/03/big.lcr").expect("all"), big);
    assert!(s.delete("2026/01/03/big.lcr").expect("delete"));
}

#[test]
fn processor_stores_serves_ranges_and_deletes_through_object_storage() {
    let dir = TempDir::new("objstore-e2e");
    let spool_dir = dir.join("spool");
    let objects = dir.join("objects");
    let f = Fixture {
        recording_id: rid(T_A + 2000, 1),
        call_id: "obj-call-1".into(),
        start_ms: T_A + 2000,
        secs: 2,
        metadata: Some("caller=+4930111;callee=1001;dn=1001".into()),
        lose_every: 0,
    };
    let path = write_lcr(&dir.join("recordings"), &f);
    let original = std::fs::read(&path).expect("lcr");
    let job = serde_json::to_vec(&recording_job(&f, &path)).expect("json");
    push_raw(&spool_dir, 1, &f.recording_id, &job);
    let config = write_config(&dir.0, "");
    let s = Server::start_args(
        &config,
        &[
            "--spool-dir".as_ref(),
            spool_dir.as_os_str(),
            "--storage".as_ref(),
            file_url(&objects).as_ref(),
            "--db".as_ref(),
            dir.join("index.sqlite").as_os_str(),
        ],
    );
    wait_until(60, "the job processed", || {
        s.status()["jobs_processed"] == json!(1)
    });
    let key = format!("2026/11/25/{}.lcr", f.recording_id);
    assert_eq!(
        std::fs::read(objects.join(&key)).expect("object"),
        original,
        "stored as an object under its key"
    );
    let rid = &f.recording_id;
    let r = s.get(
        &format!("/v1/recordings/{rid}/original.lcr"),
        Some(ADMIN),
        Some("bytes=100-199"),
    );
    assert_eq!(r.status, 206, "{}", r.text());
    assert_eq!(r.body, original[100..200]);
    let tail = s.get(
        &format!("/v1/recordings/{rid}/original.lcr"),
        Some(ADMIN),
        Some("bytes=-10"),
    );
    assert_eq!(tail.status, 206);
    assert_eq!(tail.body, original[original.len() - 10..]);
    let whole = s.get(
        &format!("/v1/recordings/{rid}/audio.wav"),
        Some(ADMIN),
        None,
    );
    assert_eq!(whole.status, 200, "{}", whole.text());
    assert_eq!(&whole.body[..4], b"RIFF");
    assert!(
        !objects.join(format!("2026/11/25/cache/{rid}.wav")).exists(),
        "the WAV is generated for each request, never stored"
    );
    let part = s.get(
        &format!("/v1/recordings/{rid}/audio.wav"),
        Some(ADMIN),
        Some("bytes=44-1043"),
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[44..1044]);
    let del = s.send("DELETE", &format!("/v1/recordings/{rid}"), ADMIN, None);
    assert_eq!(del.status, 204, "{}", del.text());
    assert!(!objects.join(&key).exists(), "object removed");
    let gone = s.get(
        &format!("/v1/recordings/{rid}/original.lcr"),
        Some(ADMIN),
        None,
    );
    assert_eq!(gone.status, 404);
    assert!(s.terminate(30), "SIGTERM");
}
