//! An incremental decoder for server-sent events, as chat-completion streams use them.
//!
//! Bytes arrive in arbitrary chunks: a chunk may end inside a line, inside a `data:` prefix or
//! inside a multi-byte UTF-8 character, so the decoder buffers bytes until a line ends and only
//! then decodes them. Lines end with `\n` or `\r\n`; a blank line ends an event, whose `data:`
//! lines are joined with `\n`. Comment lines (starting with `:`) and fields other than `data`
//! and `event` are ignored.
//!
//! NOTE: a lone `\r` is not treated as a line end, although the SSE format allows it; no
//! chat-completion server is known to send one.

/// Longest line the decoder accepts; a longer one is an error, so a server that never sends a
/// newline cannot exhaust memory.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Maximum `data` one event may collect over its lines, in bytes. More is an error, so a server
/// that sends `data:` lines without ever ending the event cannot exhaust memory.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when present.
    pub name: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// An error that stops the byte stream from being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line grew past [`MAX_LINE_BYTES`] without ending.
    #[error("a stream line exceeds {MAX_LINE_BYTES} bytes without a newline")]
    LineTooLong,
    /// An event's `data` lines grew past [`MAX_EVENT_BYTES`] before a blank line ended it.
    #[error("a stream event's data exceeds {MAX_EVENT_BYTES} bytes without a blank line")]
    EventTooLong,
    /// A line is not valid UTF-8.
    #[error("a stream line is not valid UTF-8")]
    InvalidUtf8,
}

/// Decodes events from a byte stream fed in pieces.
#[derive(Debug, Default)]
pub struct Decoder {
    line: Vec<u8>,
    name: Option<String>,
    data: Option<String>,
}

impl Decoder {
    /// Creates a decoder with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes` and appends every event they complete to `events`.
    pub fn push(&mut self, bytes: &[u8], events: &mut Vec<Event>) -> Result<(), SseError> {
        let mut rest = bytes;
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.extend_line(&rest[..newline])?;
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.process_line(&line, events)?;
            rest = &rest[newline + 1..];
        }
        self.extend_line(rest)
    }

    /// Ends the stream: an event whose blank line never came is still returned, since some
    /// servers close the connection right after the last `data:` line.
    pub fn finish(&mut self, events: &mut Vec<Event>) -> Result<(), SseError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, events)?;
        }
        self.dispatch(events);
        Ok(())
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if self.line.len() + bytes.len() > MAX_LINE_BYTES {
            self.line.clear();
            return Err(SseError::LineTooLong);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn process_line(&mut self, line: &[u8], events: &mut Vec<Event>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(events);
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        if line.starts_with(':') {
            return Ok(());
        }

        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "data" => match self.data.as_mut() {
                Some(data) => {
                    if data.len() + 1 + value.len() > MAX_EVENT_BYTES {
                        self.data = None;
                        self.name = None;
                        return Err(SseError::EventTooLong);
                    }
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            "event" => self.name = Some(value.to_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        let name = self.name.take();
        if let Some(data) = self.data.take() {
            events.push(Event { name, data });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> Vec<Event> {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        for chunk in input.chunks(piece) {
            decoder.push(chunk, &mut events).unwrap();
        }
        decoder.finish(&mut events).unwrap();
        events
    }

    fn data(events: &[Event]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn events_split_at_every_byte() {
        let input = "data: {\"a\":\"h\u{e9}llo \u{1f600}\"}\n\ndata: [DONE]\n\n".as_bytes();
        for piece in 1..input.len() {
            let events = decode_in_pieces(input, piece);
            assert_eq!(
                data(&events),
                ["{\"a\":\"h\u{e9}llo \u{1f600}\"}", "[DONE]"],
                "piece size {piece}"
            );
        }
    }

    #[test]
    fn crlf_line_ends() {
        let events = decode_in_pieces(b"data: one\r\n\r\ndata: two\r\n\r\n", 3);
        assert_eq!(data(&events), ["one", "two"]);
    }

    #[test]
    fn multi_line_data_and_event_name() {
        let events = decode_in_pieces(b"event: error\ndata: a\ndata: b\n\n", 64);
        assert_eq!(
            events,
            [Event {
                name: Some("error".into()),
                data: "a\nb".into()
            }]
        );
    }

    #[test]
    fn comments_and_unknown_fields_ignored() {
        let events = decode_in_pieces(b": keep-alive\nid: 4\nretry: 10\ndata:x\n\n", 5);
        assert_eq!(data(&events), ["x"]);
    }

    #[test]
    fn unterminated_last_event_is_kept() {
        let events = decode_in_pieces(b"data: last", 4);
        assert_eq!(data(&events), ["last"]);
    }

    #[test]
    fn endless_line_is_rejected() {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let block = vec![b'a'; 1024 * 1024];
        let mut result = Ok(());
        for _ in 0..8 {
            result = decoder.push(&block, &mut events);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::LineTooLong));
    }

    #[test]
    fn endless_event_is_rejected() {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        let mut line = vec![b'a'; 64 * 1024];
        line.splice(0..0, *b"data: ");
        line.push(b'\n');
        let mut result = Ok(());
        for _ in 0..(MAX_EVENT_BYTES / (64 * 1024) + 2) {
            result = decoder.push(&line, &mut events);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::EventTooLong));
        assert!(events.is_empty());
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        let mut decoder = Decoder::new();
        let mut events = Vec::new();
        assert_eq!(
            decoder.push(b"data: \xff\xfe\n", &mut events),
            Err(SseError::InvalidUtf8)
        );
    }
}
