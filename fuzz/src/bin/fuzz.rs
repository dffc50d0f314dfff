//! The libFuzzer entry point for every target: `LINECORD_FUZZ_TARGET=<name>` picks the target
//! (scripts/fuzz.sh sets it; `LINECORD_FUZZ_LIST=1` lists them). Both are read once, in
//! libFuzzer's initialisation, before any input runs. Each input runs under the counting
//! allocator and must stay within its target's bound; a broken bound aborts like a crash, so
//! libFuzzer keeps the input.

#![no_main]

use std::sync::OnceLock;

use linecord_fuzz::alloc::CountingAllocator;
use linecord_fuzz::Target;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn target() -> &'static Target {
    static TARGET: OnceLock<&'static Target> = OnceLock::new();
    TARGET.get_or_init(|| {
        if std::env::var_os("LINECORD_FUZZ_LIST").is_some() {
            // For scripts/fuzz.sh: one line per target, "name max_len what".
            for t in linecord_fuzz::TARGETS {
                println!("{} {} {}", t.name, t.max_len, t.what);
            }
            std::process::exit(0);
        }
        let name = std::env::var("LINECORD_FUZZ_TARGET").unwrap_or_default();
        match linecord_fuzz::find(&name) {
            Some(t) => t,
            None => {
                let names: Vec<&str> = linecord_fuzz::TARGETS.iter().map(|t| t.name).collect();
                eprintln!(
                    "set LINECORD_FUZZ_TARGET to one of: {} (got {name:?})",
                    names.join(", ")
                );
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(init: { target(); }, |data: &[u8]| {
    let t = target();
    if let Err(e) = t.run_checked(data) {
        panic!("{}: resource bound broken: {e}", t.name);
    }
});
