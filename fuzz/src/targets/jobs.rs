//! Processor-queue jobs: the JSON files the processor takes from the spool (or JetStream).

/// Parses a job; a job that parses must serialise and parse back to the same job.
pub fn job(data: &[u8]) {
    let Ok(job) = linecord_jobs::parse(data) else {
        return;
    };
    let bytes = job.to_json().expect("a parsed job serialises");
    match linecord_jobs::parse(&bytes) {
        Ok(again) => assert_eq!(again, job, "a job changed in a JSON round trip"),
        Err(e) => panic!("a serialised job does not parse: {e}"),
    }
}
