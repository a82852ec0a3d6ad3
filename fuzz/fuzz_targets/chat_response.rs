//! Parses arbitrary bytes as a non-streaming chat-completion response body.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/client.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let _ = checks::check_chat_response(data);
});
