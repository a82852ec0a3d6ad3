//! Invariants of the client-side parsers, checked on one input.
//!
//! The fuzz targets `sse_decoder`, `chat_response` and `stream_events` call these checks, and
//! `crates/infphys/tests/fuzz_corpus.rs` runs them over the committed corpus, so the corpus is
//! replayed on stable Rust by `cargo test`. Every check panics when an invariant breaks.

// Each fuzz target includes this file and calls only its own check.
#![allow(dead_code)]

use infphys::ErrorKind;
use infphys::client::{MAX_BODY_BYTES, parse_chat_response};
use infphys::sse::{Decoder, Event, MAX_EVENT_BYTES, MAX_LINE_BYTES, SseError};
use infphys::stream::{DecodedStream, decode_stream};
use serde_json::Value;

/// Maximum length of a failure message from the parsers, in bytes. They quote at most 200
/// characters of what the server sent, so a hostile server cannot bloat logs and CSV files.
pub const MAX_MESSAGE_BYTES: usize = 2048;

/// Splits `data` into reads of a fixed size.
fn fixed_reads(data: &[u8], size: usize) -> Vec<&[u8]> {
    data.chunks(size).collect()
}

/// Splits `data` into reads of 1 to 64 bytes, with sizes drawn from a generator seeded by the
/// input itself, so a failure replays from the input alone.
fn mixed_reads(data: &[u8]) -> Vec<&[u8]> {
    // FNV-1a hash of the input as the seed, then xorshift64.
    let mut state = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    }) | 1;
    let mut reads = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = usize::try_from(state % 64).unwrap_or(0) + 1;
        let (read, tail) = rest.split_at(size.min(rest.len()));
        reads.push(read);
        rest = tail;
    }
    reads
}

/// Returns every way a check splits one input into reads: whole, one byte at a time, a few fixed sizes
/// that straddle `data:` prefixes and UTF-8 sequences, and mixed sizes.
pub fn read_patterns(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let mut patterns = vec![vec![data]];
    for size in [1, 2, 3, 5, 7] {
        patterns.push(fixed_reads(data, size));
    }
    patterns.push(mixed_reads(data));
    patterns
}

/// Events a decoder produced before it stopped, and the error that stopped it.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub error: Option<SseError>,
}

/// Feeds `reads` to a new decoder, stopping at the first error as the client does.
pub fn decode_events(reads: &[&[u8]]) -> Decoded {
    let mut decoder = Decoder::new();
    let mut events = Vec::new();
    for read in reads {
        if let Err(error) = decoder.push(read, &mut events) {
            return Decoded {
                events,
                error: Some(error),
            };
        }
    }
    let error = decoder.finish(&mut events).err();
    Decoded { events, error }
}

/// Checks the SSE decoder on `data`: the same events and error however the bytes are split,
/// no event larger than the caps, and no more event bytes than input bytes.
pub fn check_sse_decoder(data: &[u8]) -> Decoded {
    let whole = decode_events(&[data]);
    for reads in read_patterns(data).iter().skip(1) {
        let split = decode_events(reads);
        assert_eq!(split, whole, "split into {} reads", reads.len());
    }

    let mut event_bytes = 0;
    for event in &whole.events {
        assert!(
            event.data.len() <= MAX_EVENT_BYTES,
            "event data over the cap"
        );
        let name_bytes = event.name.as_ref().map_or(0, String::len);
        assert!(name_bytes <= MAX_LINE_BYTES, "event name over the line cap");
        event_bytes += event.data.len() + name_bytes;
    }
    assert!(
        event_bytes <= data.len(),
        "{event_bytes} event bytes from {} input bytes",
        data.len()
    );
    whole
}

/// Checks the non-streaming response parser on `body`, as a 200 response and as a 503 response.
/// Returns the result for status 200.
pub fn check_chat_response(body: &[u8]) -> Result<infphys::ChatReply, infphys::RequestFailure> {
    let result = parse_chat_response(200, body);
    match &result {
        Ok(reply) => {
            assert!(!reply.text.is_empty(), "a successful reply has no text");
            assert_eq!(
                reply.text,
                reply.text.trim(),
                "the reply text is not trimmed"
            );
            assert!(reply.text.len() <= body.len(), "the text outgrew the body");
            assert_eq!(reply.status, 200);
            assert_eq!(reply.stream, None);
        }
        Err(failure) => {
            assert!(
                matches!(failure.kind, ErrorKind::Decode | ErrorKind::Empty),
                "unexpected kind {:?}",
                failure.kind
            );
            assert_eq!(failure.status, Some(200));
            check_message(&failure.message);
        }
    }

    // Oracle: a JSON body whose first choice has non-blank `message.content` must parse to
    // exactly that text, trimmed.
    if let Ok(json) = serde_json::from_slice::<Value>(body)
        && let Some(content) = json["choices"][0]["message"]["content"].as_str()
        && !content.trim().is_empty()
    {
        let text = result.as_ref().map(|reply| reply.text.as_str());
        assert_eq!(text, Ok(content.trim()), "the parser lost the content");
    }

    let failure = parse_chat_response(503, body).expect_err("a 503 response parsed as a reply");
    assert_eq!(failure.kind, ErrorKind::HttpStatus);
    assert_eq!(failure.status, Some(503));
    assert!(
        failure.message.starts_with("HTTP 503: "),
        "{}",
        failure.message
    );
    check_message(&failure.message);
    result
}

/// Checks the stream's event handling on `data`: the same outcome however the bytes are
/// split, a well-formed success and a bounded failure message.
pub fn check_stream_events(data: &[u8]) -> Result<DecodedStream, (ErrorKind, String)> {
    let whole = decode_stream([data]);
    for reads in read_patterns(data).iter().skip(1) {
        let split = decode_stream(reads.iter().copied());
        assert_eq!(split, whole, "split into {} reads", reads.len());
    }

    match &whole {
        Ok(stream) => {
            assert!(
                stream.token_chunks >= 1,
                "a successful stream has no tokens"
            );
            assert_eq!(stream.text, stream.text.trim(), "the text is not trimmed");
            assert!(
                stream.text.len() <= MAX_BODY_BYTES,
                "the text outgrew its cap"
            );
            assert!(
                stream.text.len() <= data.len(),
                "the text outgrew the input"
            );
            let reported = stream.usage.and_then(|usage| usage.completion_tokens);
            assert_eq!(
                stream.output_tokens,
                reported.unwrap_or(stream.token_chunks),
                "output tokens neither reported nor counted"
            );
        }
        Err((kind, message)) => {
            assert!(
                matches!(
                    kind,
                    ErrorKind::Decode
                        | ErrorKind::StreamError
                        | ErrorKind::StreamTruncated
                        | ErrorKind::Empty
                ),
                "unexpected kind {kind:?}"
            );
            check_message(message);
        }
    }
    whole
}

fn check_message(message: &str) {
    assert!(!message.is_empty(), "a failure has no message");
    assert!(
        message.len() <= MAX_MESSAGE_BYTES,
        "a failure message of {} bytes",
        message.len()
    );
}
