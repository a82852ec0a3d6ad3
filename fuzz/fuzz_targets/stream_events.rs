//! Runs the SSE decoder and the stream's event handling over arbitrary bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/client.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let _ = checks::check_stream_events(data);
});
