//! Invariants of the simulator's request parser, checked on one input.
//!
//! The fuzz target `sim_request` calls this check, and
//! `crates/infphys-sim/tests/fuzz_corpus.rs` runs it over the committed corpus, so the corpus is
//! replayed on stable Rust by `cargo test`. The check panics when an invariant breaks.

use infphys_sim::parse_request_for_fuzzing;

/// Fixed part of the longest rejection the parser may produce, in bytes, beyond the share of
/// the request it quotes back.
pub const MESSAGE_OVERHEAD_BYTES: usize = 2048;

/// Checks the request parser on `body`: no panic, and a rejection always has a message.
/// A rejection grows at most linearly with the request, because the parser quotes invalid
/// values back, escaped to up to a few times their size, and nothing else of the request.
pub fn check_sim_request(body: &[u8]) -> Result<(), String> {
    let result = parse_request_for_fuzzing(body);
    if let Err(message) = &result {
        assert!(!message.is_empty(), "a rejection has no message");
        let limit = MESSAGE_OVERHEAD_BYTES + 8 * body.len();
        assert!(
            message.len() <= limit,
            "a rejection of {} bytes for a {}-byte request",
            message.len(),
            body.len()
        );
    }

    // The same body with insignificant whitespace around it parses the same way.
    let mut padded = b" \n".to_vec();
    padded.extend_from_slice(body);
    padded.extend_from_slice(b"\r\n\t");
    assert_eq!(
        parse_request_for_fuzzing(&padded).is_ok(),
        result.is_ok(),
        "surrounding whitespace changed the outcome"
    );
    result
}
