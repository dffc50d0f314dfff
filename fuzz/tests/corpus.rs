//! Every seed (`corpus/<target>/`) and every crash ever found (`regressions/<target>/`) runs
//! through its target under the counting allocator, within the target's resource bound. This
//! is how a crash found by `scripts/fuzz.sh` stays fixed.

use std::path::{Path, PathBuf};

use linecord_fuzz::alloc::{counting, CountingAllocator};
use linecord_fuzz::TARGETS;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.file_name().is_some_and(|n| n != "README.md"))
        .collect();
    v.sort();
    v
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `dir`'s inputs through their targets; returns how many ran.
fn run_dir(kind: &str) -> usize {
    assert!(counting(), "the counting allocator is not installed");
    let mut ran = 0;
    let mut failures = Vec::new();
    for t in TARGETS {
        for f in files(&root().join(kind).join(t.name)) {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("read {}: {e}", f.display()));
            let name = f.display().to_string();
            // One thread per input: a panic is reported with its file instead of ending the
            // whole run at the first one.
            let target = *t;
            let outcome = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || target.run_checked(&data))
                .expect("spawn")
                .join();
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(bound)) => failures.push(format!("{name}: {bound}")),
                Err(_) => failures.push(format!("{name}: panicked (see above)")),
            }
            ran += 1;
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        kind,
        failures.join("\n")
    );
    ran
}

#[test]
fn every_target_has_a_seed_corpus() {
    for t in TARGETS {
        let n = files(&root().join("corpus").join(t.name)).len();
        assert!(n > 0, "corpus/{} has no seeds", t.name);
    }
}

#[test]
fn seed_corpus_runs_within_bounds() {
    let ran = run_dir("corpus");
    assert!(ran >= TARGETS.len(), "only {ran} seeds ran");
}

#[test]
fn regressions_stay_fixed() {
    // Every folder under regressions/ must belong to a target (a misspelt folder would
    // silently not run).
    if let Ok(rd) = std::fs::read_dir(root().join("regressions")) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let name = e.file_name().to_string_lossy().into_owned();
                assert!(
                    linecord_fuzz::find(&name).is_some(),
                    "regressions/{name} is not a target"
                );
            }
        }
    }
    run_dir("regressions");
}

#[test]
fn a_bound_is_enforced() {
    // The bound check itself must be able to fail: a target allocating far beyond its input.
    let t = linecord_fuzz::Target {
        name: "amplifier",
        what: "test",
        run: |d| {
            std::hint::black_box(vec![0u8; (d.len() + 1) << 20]);
        },
        max_len: 16,
        bound: TARGETS[0].bound,
    };
    let e = t
        .run_checked(b"abcd")
        .expect_err("a 5 MiB allocation for 4 bytes must fail");
    assert!(e.contains("heap"), "{e}");
}

#[test]
fn sdp_worst_case_shape_stays_within_its_bound() {
    // The densest shape for memory: the most minimal media lines the SDP size limit allows
    // (each ~20-byte `m=` line becomes a parsed media description of ~1.5 KB).
    let target = linecord_fuzz::find("sdp").expect("the sdp target");
    let mut sdp =
        b"v=0\r\no=- 1 1 IN IP4 198.18.0.10\r\ns=-\r\nc=IN IP4 198.18.0.10\r\nt=0 0\r\n".to_vec();
    while sdp.len() + 24 < linecord_sdp::MAX_SDP_SIZE {
        sdp.extend_from_slice(b"m=audio 4000 RTP/AVP 0\r\n");
    }
    let usage = target
        .run_checked(&sdp)
        .unwrap_or_else(|e| panic!("{} bytes of media lines: {e}", sdp.len()));
    eprintln!(
        "sdp: {} bytes of media lines, peak heap {} B ({:.0} per input byte)",
        sdp.len(),
        usage.peak_bytes,
        usage.peak_bytes as f64 / sdp.len() as f64
    );
}
