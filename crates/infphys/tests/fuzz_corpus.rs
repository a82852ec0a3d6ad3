//! Replays the committed fuzz corpus of the client-side targets on stable Rust.
//!
//! Each file under `fuzz/corpus/<target>/` goes through the same check its fuzz target runs
//! (`fuzz/checks/client.rs`). A file named `<expected>--<description>` must also give that
//! outcome: `ok`, an error kind such as `decode`, or `error` for a decoder error; `any` and
//! names without `--` are checked for the invariants only. Inputs too large to commit, such as
//! a 100 000-deep JSON array or a multi-megabyte field, are generated here.

#[path = "../../../fuzz/checks/client.rs"]
mod checks;

use std::path::{Path, PathBuf};

use infphys::ErrorKind;
use infphys::client::{MAX_BODY_BYTES, parse_chat_response};
use infphys::sse::{MAX_EVENT_BYTES, MAX_LINE_BYTES, SseError};

/// Returns every file of one target's corpus with its expected outcome, sorted by name.
fn corpus(target: &str) -> Vec<(PathBuf, String, Vec<u8>)> {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", folder.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "{} holds only {} files",
        folder.display(),
        files.len()
    );
    files
        .into_iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let expected = name
                .split_once("--")
                .map_or("any", |(expected, _)| expected)
                .to_owned();
            let bytes = std::fs::read(&path).unwrap();
            (path, expected, bytes)
        })
        .collect()
}

#[test]
fn sse_decoder_corpus_replays() {
    for (path, expected, bytes) in corpus("sse_decoder") {
        let decoded = checks::check_sse_decoder(&bytes);
        let outcome = if decoded.error.is_some() {
            "error"
        } else {
            "ok"
        };
        if expected != "any" {
            assert_eq!(outcome, expected, "{}: {decoded:?}", path.display());
        }
    }
}

#[test]
fn chat_response_corpus_replays() {
    for (path, expected, bytes) in corpus("chat_response") {
        let result = checks::check_chat_response(&bytes);
        let outcome = match &result {
            Ok(_) => "ok",
            Err(failure) => failure.kind.as_str(),
        };
        if expected != "any" {
            assert_eq!(outcome, expected, "{}: {result:?}", path.display());
        }
    }
}

#[test]
fn stream_events_corpus_replays() {
    for (path, expected, bytes) in corpus("stream_events") {
        let result = checks::check_stream_events(&bytes);
        let outcome = match &result {
            Ok(_) => "ok",
            Err((kind, _)) => kind.as_str(),
        };
        if expected != "any" {
            assert_eq!(outcome, expected, "{}: {result:?}", path.display());
        }
    }
}

#[test]
fn corpus_seeds_give_specific_text() {
    let reply = |name: &str| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(name);
        std::fs::read(path).unwrap()
    };
    let body = reply("chat_response/ok--unicode-escapes");
    assert_eq!(
        parse_chat_response(200, &body).unwrap().text,
        "caf\u{e9} \u{1f600}"
    );

    for name in [
        "stream_events/ok--role-content-usage-done",
        "stream_events/ok--crlf-line-ends",
    ] {
        let stream = checks::check_stream_events(&reply(name)).unwrap();
        assert_eq!(stream.text, "Hello world", "{name}");
        assert_eq!(stream.output_tokens, 2, "{name}");
    }
    let stream = checks::check_stream_events(&reply("stream_events/ok--multibyte-utf8")).unwrap();
    assert_eq!(stream.text, "h\u{e9}llo \u{1f600}\u{4e16}");
}

/// Returns a JSON array nested 100 000 deep. serde_json stops at its recursion limit of 128 instead of
/// overflowing the stack.
fn deep_array() -> String {
    let depth = 100_000;
    let mut text = "[".repeat(depth);
    text.push_str(&"]".repeat(depth));
    text
}

#[test]
fn deep_json_hits_recursion_limit() {
    let body = format!(
        r#"{{"choices":[{{"message":{{"content":{}}}}}]}}"#,
        deep_array()
    );
    let failure = checks::check_chat_response(body.as_bytes()).unwrap_err();
    assert_eq!(failure.kind, ErrorKind::Decode);
    assert!(
        failure.message.contains("recursion limit exceeded"),
        "{}",
        failure.message
    );

    let stream = format!("data: {}\n\n", deep_array());
    let (kind, message) = checks::check_stream_events(stream.as_bytes()).unwrap_err();
    assert_eq!(kind, ErrorKind::Decode);
    assert!(message.contains("recursion limit exceeded"), "{message}");
}

#[test]
fn large_content_parses_within_body_cap() {
    // Just under the client's body cap, which `tests/hostile.rs` enforces on the wire.
    let content = "word ".repeat((MAX_BODY_BYTES - 1024) / 5);
    let body = format!(r#"{{"choices":[{{"message":{{"content":"{content}"}}}}]}}"#);
    assert!(body.len() <= MAX_BODY_BYTES);
    let reply = parse_chat_response(200, body.as_bytes()).unwrap();
    assert_eq!(reply.text.len(), content.trim_end().len());

    let failure = parse_chat_response(503, body.as_bytes()).unwrap_err();
    assert!(failure.message.len() <= checks::MAX_MESSAGE_BYTES);
}

#[test]
fn endless_line_hits_line_cap() {
    let mut input = b"data: ".to_vec();
    input.resize(MAX_LINE_BYTES + 1024, b'a');
    let decoded = checks::decode_events(&[&input]);
    assert_eq!(decoded.error, Some(SseError::LineTooLong));
    assert!(decoded.events.is_empty());

    let (kind, message) = infphys::stream::decode_stream(input.chunks(64 * 1024)).unwrap_err();
    assert_eq!(kind, ErrorKind::Decode);
    assert!(message.contains("without a newline"), "{message}");
}

#[test]
fn endless_event_hits_event_cap() {
    // Each line adds 1024 bytes of data, so these lines pass the cap by about 16 KiB.
    let line = format!("data: {}\n", "a".repeat(1024));
    let lines = MAX_EVENT_BYTES / 1024 + 16;
    let input = line.repeat(lines);
    let decoded = checks::decode_events(&input.as_bytes().chunks(4096).collect::<Vec<_>>());
    assert_eq!(decoded.error, Some(SseError::EventTooLong));
    assert!(decoded.events.is_empty());
}

#[test]
fn event_before_bad_line_counts() {
    // The error event and the invalid line arrive in one read: the error event must win,
    // as it does when the two arrive in separate reads.
    let input = b"data: {\"error\":{\"message\":\"boom\"}}\n\ndata: \xff\n\n";
    let (kind, message) = checks::check_stream_events(input).unwrap_err();
    assert_eq!(kind, ErrorKind::StreamError);
    assert!(message.contains("boom"), "{message}");
}
