//! Feeds arbitrary bytes, split into reads in several ways, to the SSE decoder.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/client.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let _ = checks::check_sse_decoder(data);
});
