//! Parses arbitrary bytes as a chat-completion request body, as the simulator does.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/sim.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    let _ = checks::check_sim_request(data);
});
