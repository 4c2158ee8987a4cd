//! A server-sent events scanner: what each event of a `text/event-stream` answer means for the
//! stream's health, read incrementally as the bytes go by.
//!
//! It never copies or buffers the stream: each line is judged from its first bytes (the field
//! name, and the first few bytes of a `data` value), the rest is skipped with one `memchr` per
//! line. Only the data of an error event is copied (at most 4 KiB), to classify it. A line or an
//! event split across frames anywhere gives the same events as the whole stream (a property test
//! checks it).
//!
//! What an event is:
//! - an **error**: Anthropic's `event: error`, or a `data` value that is a JSON object whose first
//!   key is `error` (OpenAI's and Gemini's error chunks);
//! - the **end**: OpenAI's `data: [DONE]`, Anthropic's `message_stop`;
//! - **content**: any other event with data, except Anthropic's preamble (`message_start`,
//!   `ping`, `content_block_start`, which opens a block before its first token): the first one
//!   is the stream's first token, after which the caller owns the stream;
//! - **other**: events with no data (comments, `retry`, `id`) and the preamble.

use memchr::memchr;

use super::verdict::{Classification, Kind, LimitKind};

/// The longest error event data copied to classify it.
const MAX_ERROR_DATA: usize = 4096;
/// Event names longer than this are not one of the names that matter.
const MAX_NAME: usize = 24;
/// How many bytes of a data value decide whether it is an error or the end.
const PREFIX: usize = 8;

/// What one event means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The stream's content: a token, a chunk.
    Content,
    /// The provider reported an error inside the stream.
    Error(StreamFailure),
    /// The provider said the stream is complete.
    End,
    /// Anything else (the preamble, keep-alives, events without data).
    Other,
}

/// An error event: its verdict and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamFailure {
    pub(crate) verdict: Classification,
    pub(crate) message: String,
}

/// Which field the current line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Event,
    Data,
    Other,
}

/// Where the scanner is within the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At its first byte.
    Start,
    /// Reading the field name (`len` bytes of it so far, in `field`).
    Name,
    /// After the colon, where one space may be skipped.
    AfterColon(Field),
    /// In the value.
    Value(Field),
    /// A comment or a field that does not matter: skipped to its end.
    Skip,
}

/// The scanner's state between bytes.
#[derive(Debug)]
pub(crate) struct SseScanner {
    line: Line,
    field: [u8; 8],
    field_len: usize,
    /// The current event's name (truncated past [`MAX_NAME`]).
    name: [u8; MAX_NAME],
    name_len: usize,
    name_too_long: bool,
    /// Whether the current event has data.
    has_data: bool,
    /// The first non-blank bytes of its data.
    prefix: [u8; PREFIX],
    prefix_len: usize,
    /// The data of an error event, copied.
    error_data: Option<Vec<u8>>,
}

impl Default for SseScanner {
    fn default() -> Self {
        SseScanner {
            line: Line::Start,
            field: [0; 8],
            field_len: 0,
            name: [0; MAX_NAME],
            name_len: 0,
            name_too_long: false,
            has_data: false,
            prefix: [0; PREFIX],
            prefix_len: 0,
            error_data: None,
        }
    }
}

impl SseScanner {
    /// Scans the next bytes; `on_event` is called for each event completed in them.
    pub(crate) fn feed(&mut self, mut data: &[u8], on_event: &mut impl FnMut(&Event)) {
        while !data.is_empty() {
            if self.line == Line::Start {
                // The common case: the whole line is in this frame, read at once.
                if let Some(end) = memchr(b'\n', data) {
                    self.whole_line(&data[..end], on_event);
                    data = &data[end + 1..];
                    continue;
                }
            }
            if self.line == Line::Skip || self.skips_value() {
                // The rest of a line that does not matter: one search for its end.
                match memchr(b'\n', data) {
                    Some(at) => {
                        data = &data[at + 1..];
                        self.line = Line::Start;
                    }
                    None => return,
                }
                continue;
            }
            let (&byte, rest) = data.split_first().expect("not empty");
            data = rest;
            self.step(byte, on_event);
        }
    }

    /// One whole line, without its `\n`: the same as [`step`](Self::step) byte by byte, in a
    /// few slice operations.
    fn whole_line(&mut self, line: &[u8], on_event: &mut impl FnMut(&Event)) {
        // Carriage returns at a line's start belong to no field.
        let start = line.iter().position(|&b| b != b'\r').unwrap_or(line.len());
        let line = &line[start..];
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let Some(colon) = memchr(b':', line) else {
            return;
        };
        let (name, rest) = (&line[..colon], &line[colon + 1..]);
        if rest.is_empty() || name.len() > self.field.len() {
            // A field with no value, or a name too long to matter.
            return;
        }
        let field = match name {
            b"event" => Field::Event,
            b"data" => Field::Data,
            _ => Field::Other,
        };
        self.start_value(field);
        let value = rest.strip_prefix(b" ").unwrap_or(rest);
        match field {
            Field::Event => {
                for &byte in value {
                    self.value_byte(field, byte);
                }
            }
            Field::Data => {
                for (i, &byte) in value.iter().enumerate() {
                    if self.error_data.is_none() && self.prefix_len == PREFIX {
                        break;
                    }
                    if let Some(copy) = &mut self.error_data {
                        // An error event: the rest of its data, bounded.
                        for &byte in &value[i..] {
                            push_bounded(copy, byte);
                        }
                        break;
                    }
                    self.value_byte(field, byte);
                }
            }
            Field::Other => {}
        }
        self.line = Line::Start;
    }

    /// Whether the bytes so far end inside an event: a line or an event not terminated.
    pub(crate) fn mid_event(&self) -> bool {
        self.line != Line::Start || self.has_data || self.name_len > 0
    }

    /// Whether the current value's remaining bytes can be skipped unread.
    fn skips_value(&self) -> bool {
        match self.line {
            Line::Value(Field::Other) => true,
            Line::Value(Field::Data) => self.error_data.is_none() && self.prefix_len == PREFIX,
            _ => false,
        }
    }

    fn step(&mut self, byte: u8, on_event: &mut impl FnMut(&Event)) {
        if byte == b'\n' {
            if self.line == Line::Start {
                self.dispatch(on_event);
            } else {
                self.line = Line::Start;
            }
            return;
        }
        match self.line {
            // A CRLF line ending: the carriage return belongs to no field.
            Line::Start if byte == b'\r' => {}
            Line::Start if byte == b':' => self.line = Line::Skip,
            Line::Start | Line::Name => {
                if self.line == Line::Start {
                    self.field_len = 0;
                    self.line = Line::Name;
                }
                if byte == b':' {
                    self.line = Line::AfterColon(self.field());
                } else if self.field_len < self.field.len() {
                    self.field[self.field_len] = byte;
                    self.field_len += 1;
                } else {
                    self.line = Line::Skip;
                }
            }
            Line::AfterColon(field) => {
                self.start_value(field);
                if byte != b' ' {
                    self.value_byte(field, byte);
                }
            }
            Line::Value(field) => self.value_byte(field, byte),
            Line::Skip => {}
        }
    }

    fn field(&self) -> Field {
        match &self.field[..self.field_len] {
            b"event" => Field::Event,
            b"data" => Field::Data,
            _ => Field::Other,
        }
    }

    fn start_value(&mut self, field: Field) {
        self.line = Line::Value(field);
        match field {
            Field::Event => {
                self.name_len = 0;
                self.name_too_long = false;
            }
            Field::Data => {
                if self.has_data {
                    // Multi-line data: a newline joins the lines.
                    if let Some(copy) = &mut self.error_data {
                        push_bounded(copy, b'\n');
                    }
                }
                self.has_data = true;
                if self.is_named("error") && self.error_data.is_none() {
                    self.error_data = Some(Vec::new());
                }
            }
            Field::Other => {}
        }
    }

    fn value_byte(&mut self, field: Field, byte: u8) {
        match field {
            Field::Event => {
                if byte == b'\r' {
                    return;
                }
                if self.name_len < MAX_NAME {
                    self.name[self.name_len] = byte;
                    self.name_len += 1;
                } else {
                    self.name_too_long = true;
                }
            }
            Field::Data => {
                if let Some(copy) = &mut self.error_data {
                    push_bounded(copy, byte);
                    return;
                }
                if byte.is_ascii_whitespace() || self.prefix_len == PREFIX {
                    return;
                }
                self.prefix[self.prefix_len] = byte;
                self.prefix_len += 1;
                if &self.prefix[..self.prefix_len] == b"{\"error\"" {
                    // An error chunk: keep its data to classify it.
                    self.error_data = Some(self.prefix[..self.prefix_len].to_vec());
                }
            }
            Field::Other => {}
        }
    }

    fn is_named(&self, name: &str) -> bool {
        !self.name_too_long && &self.name[..self.name_len] == name.as_bytes()
    }

    /// A blank line: the event is complete.
    fn dispatch(&mut self, on_event: &mut impl FnMut(&Event)) {
        let event = if let Some(data) = self.error_data.take() {
            Event::Error(failure(&data))
        } else if !self.has_data {
            Event::Other
        } else if &self.prefix[..self.prefix_len] == b"[DONE]" || self.is_named("message_stop") {
            Event::End
        } else if self.is_named("message_start")
            || self.is_named("ping")
            || self.is_named("content_block_start")
        {
            Event::Other
        } else {
            Event::Content
        };
        self.name_len = 0;
        self.name_too_long = false;
        self.has_data = false;
        self.prefix_len = 0;
        on_event(&event);
    }
}

fn push_bounded(copy: &mut Vec<u8>, byte: u8) {
    if copy.len() < MAX_ERROR_DATA && byte != b'\r' {
        copy.push(byte);
    }
}

/// The verdict on an error event's data, in any provider's shape: Anthropic's
/// `{"type":"error","error":{"type":"overloaded_error",...}}`, OpenAI's `{"error":{"type":...,
/// "code":...}}`, Gemini's `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED",...}}`.
fn failure(data: &[u8]) -> StreamFailure {
    let json: serde_json::Value = serde_json::from_slice(data).unwrap_or_default();
    let error = &json["error"];
    let text = |key: &str| error[key].as_str().unwrap_or_default();
    let message = [
        text("message"),
        json["message"].as_str().unwrap_or_default(),
    ]
    .into_iter()
    .find(|m| !m.is_empty())
    .unwrap_or("error event in the stream")
    .to_owned();
    let code = error["code"].as_u64();
    let kind_words = [text("type"), text("code"), text("status")];
    let said = |words: &[&str]| kind_words.iter().any(|k| words.contains(k));
    let verdict = if said(&["overloaded_error", "UNAVAILABLE"]) || code == Some(529) {
        Classification::new(Kind::Overloaded)
    } else if said(&[
        "rate_limit_error",
        "rate_limit_exceeded",
        "RESOURCE_EXHAUSTED",
        "tokens",
        "requests",
    ]) || code == Some(429)
    {
        let limit = super::body_rules::limit_in_message(&message).or(match text("type") {
            "tokens" => Some(LimitKind::Tokens),
            "requests" => Some(LimitKind::Requests),
            _ => None,
        });
        Classification::new(Kind::RateLimited).with_limit(limit)
    } else if said(&[
        "invalid_request_error",
        "INVALID_ARGUMENT",
        "authentication_error",
        "permission_error",
    ]) {
        Classification::new(Kind::ClientError)
    } else {
        Classification::new(Kind::ServerError)
    };
    StreamFailure { verdict, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(stream: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut scanner = SseScanner::default();
        let mut seen = Vec::new();
        let mut from = 0;
        for &cut in cuts.iter().chain([&stream.len()]) {
            let cut = cut.clamp(from, stream.len());
            scanner.feed(&stream[from..cut], &mut |event| seen.push(event.clone()));
            from = cut;
        }
        seen
    }

    const ANTHROPIC: &[u8] = b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
        event: ping\ndata: {\"type\": \"ping\"}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n\
        event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n";

    #[test]
    fn reads_anthropic_events() {
        let seen = events(ANTHROPIC, &[]);
        assert_eq!(seen.len(), 5);
        assert_eq!(
            seen[..4],
            [Event::Other, Event::Other, Event::Other, Event::Content]
        );
        let Event::Error(failure) = &seen[4] else {
            panic!("{seen:?}")
        };
        assert_eq!(failure.verdict.kind(), Kind::Overloaded);
        assert_eq!(failure.message, "Overloaded");
    }

    #[test]
    fn reads_openai_chunks_errors_and_the_end() {
        let stream = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\n\
            : keep-alive\n\n\
            data: {\"error\":{\"message\":\"Rate limit reached on tokens per min (TPM)\",\"type\":\"tokens\",\"code\":\"rate_limit_exceeded\"}}\n\n\
            data: [DONE]\n\n";
        let seen = events(stream, &[]);
        assert_eq!(seen[0], Event::Content);
        assert_eq!(
            seen[1],
            Event::Other,
            "a comment alone is no event with data"
        );
        let Event::Error(failure) = &seen[2] else {
            panic!("{seen:?}")
        };
        assert_eq!(failure.verdict.kind(), Kind::RateLimited);
        assert_eq!(failure.verdict.limit(), Some(LimitKind::Tokens));
        assert_eq!(seen[3], Event::End);
    }

    #[test]
    fn reads_gemini_error_chunks() {
        let stream = b"data: {\"error\": {\"code\": 503, \"message\": \"The model is overloaded.\", \"status\": \"UNAVAILABLE\"}}\n\n";
        let Event::Error(failure) = &events(stream, &[])[0] else {
            panic!()
        };
        assert_eq!(failure.verdict.kind(), Kind::Overloaded);
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere, give the same events as the whole: nothing panics and no
        /// event depends on where a frame ended.
        #[test]
        fn cuts_never_change_the_events(
            stream in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(b"\n\r: {}\"[]".to_vec()),
                    proptest::sample::select(b"eventdaERROR".to_vec()),
                    proptest::num::u8::ANY,
                ],
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..300, 0..8),
        ) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            proptest::prop_assert_eq!(events(&stream, &cuts), events(&stream, &[]));
        }

        #[test]
        fn real_streams_cut_anywhere_read_the_same(cuts in proptest::collection::vec(0usize..400, 0..10)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            proptest::prop_assert_eq!(events(ANTHROPIC, &cuts), events(ANTHROPIC, &[]));
        }
    }
}
