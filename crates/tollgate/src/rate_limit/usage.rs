//! [`Usage`]: the tokens an answer reports it used, read from the body as the caller reads it.
//!
//! The scanner looks for a `"usage"` (OpenAI, Anthropic) or `"usageMetadata"` (Gemini) key in
//! the bytes going by, with one substring search per frame, and copies out only that object
//! (a few hundred bytes; an object longer than 4 KiB is not a usage report and is skipped). It
//! works the same on a JSON answer and on a stream of server-sent events: each report found
//! updates the fields it carries, so Anthropic's `message_start` input count and its final
//! `message_delta` output count add up to the whole usage. Nothing of the body is buffered or
//! changed.

use memchr::memmem;
use serde::Deserialize;

/// The tokens an answer used, as the provider reports them.
///
/// ```
/// use tollgate::rate_limit::Usage;
///
/// let openai = br#"{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30}}"#;
/// let usage = Usage::from_json(openai).unwrap();
/// assert_eq!((usage.input_tokens, usage.output_tokens), (Some(12), Some(30)));
///
/// // Anthropic counts cache reads and writes apart from `input_tokens`; they are added back.
/// let anthropic = br#"{"usage":{"input_tokens":10,"cache_read_input_tokens":90,"output_tokens":5}}"#;
/// let usage = Usage::from_json(anthropic).unwrap();
/// assert_eq!((usage.input_tokens, usage.cache_read_tokens), (Some(100), Some(90)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Usage {
    /// Every prompt token, cache reads and writes included.
    pub input_tokens: Option<u64>,
    /// The answer's tokens (reasoning included).
    pub output_tokens: Option<u64>,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_tokens: Option<u64>,
}

impl Usage {
    /// The usage a whole JSON answer (or a whole event stream) reports, if it reports one.
    pub fn from_json(body: &[u8]) -> Option<Usage> {
        let mut scan = UsageScan::default();
        scan.feed(body);
        scan.found()
    }

    /// Updates the fields a later report carries.
    pub fn merge(&mut self, later: Usage) {
        self.input_tokens = later.input_tokens.or(self.input_tokens);
        self.output_tokens = later.output_tokens.or(self.output_tokens);
        self.cache_read_tokens = later.cache_read_tokens.or(self.cache_read_tokens);
    }

    fn is_empty(&self) -> bool {
        self.input_tokens.is_none() && self.output_tokens.is_none()
    }
}

/// A usage object in any provider's shape.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Report {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    prompt_tokens_details: Option<Cached>,
    input_tokens_details: Option<Cached>,
    #[serde(rename = "promptTokenCount")]
    prompt_token_count: Option<u64>,
    #[serde(rename = "candidatesTokenCount")]
    candidates_token_count: Option<u64>,
    #[serde(rename = "thoughtsTokenCount")]
    thoughts_token_count: Option<u64>,
    #[serde(rename = "cachedContentTokenCount")]
    cached_content_token_count: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Cached {
    cached_tokens: Option<u64>,
}

impl Report {
    fn usage(self) -> Usage {
        // Anthropic reports cache reads and writes apart from `input_tokens`; OpenAI's counts
        // include cached tokens and detail them.
        let anthropic_cache = self
            .cache_read_input_tokens
            .unwrap_or(0)
            .saturating_add(self.cache_creation_input_tokens.unwrap_or(0));
        let input = self
            .prompt_tokens
            .or(self
                .input_tokens
                .map(|tokens| tokens.saturating_add(anthropic_cache)))
            .or(self.prompt_token_count);
        let output = self.completion_tokens.or(self.output_tokens).or(self
            .candidates_token_count
            .map(|tokens| tokens.saturating_add(self.thoughts_token_count.unwrap_or(0))));
        let cached = |details: Option<Cached>| details.and_then(|d| d.cached_tokens);
        let cache_read = self
            .cache_read_input_tokens
            .or(cached(self.prompt_tokens_details))
            .or(cached(self.input_tokens_details))
            .or(self.cached_content_token_count);
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_read_tokens: cache_read,
        }
    }
}

const KEY: &[u8] = b"\"usage";
const METADATA: &[u8] = b"Metadata\"";
/// A usage object longer than this is something else.
const MAX_OBJECT: usize = 4096;

/// Where the scanner is between two bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Looking for the key; `matched` bytes of it ended the last frame.
    Search { matched: usize },
    /// After `"usage`: its closing quote, or `Metadata"` (`matched` bytes of it so far).
    KeyEnd { matched: usize },
    /// Before the colon.
    Colon,
    /// Before the value.
    Value,
    /// Inside the object, copying it.
    Object {
        depth: u32,
        in_string: bool,
        escaped: bool,
    },
}

/// Finds usage reports in a body read frame by frame.
#[derive(Debug)]
pub(crate) struct UsageScan {
    step: Step,
    object: Vec<u8>,
    found: Usage,
}

impl Default for UsageScan {
    fn default() -> Self {
        UsageScan {
            step: Step::Search { matched: 0 },
            object: Vec::new(),
            found: Usage::default(),
        }
    }
}

impl UsageScan {
    /// What the reports seen so far say.
    pub(crate) fn found(&self) -> Option<Usage> {
        (!self.found.is_empty()).then_some(self.found)
    }

    /// Scans the next bytes of the body.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            data = match self.step {
                Step::Search { matched } => self.search(matched, data),
                _ => self.step_byte(data),
            };
        }
    }

    /// Finds the key (or the start of it at the end of `data`); returns what follows it.
    fn search<'a>(&mut self, matched: usize, data: &'a [u8]) -> &'a [u8] {
        if matched > 0 {
            let rest = &KEY[matched..];
            let n = rest.len().min(data.len());
            if data[..n] == rest[..n] {
                self.step = if n == rest.len() {
                    Step::KeyEnd { matched: 0 }
                } else {
                    Step::Search {
                        matched: matched + n,
                    }
                };
                return &data[n..];
            }
            self.step = Step::Search { matched: 0 };
        }
        let mut from = 0;
        while let Some(at) = memmem::find(&data[from..], KEY) {
            let at = from + at;
            // An escaped quote is inside a string: the key itself is never escaped.
            if at == 0 || data[at - 1] != b'\\' {
                self.step = Step::KeyEnd { matched: 0 };
                return &data[at + KEY.len()..];
            }
            from = at + 1;
        }
        // The key may begin at the end of this frame and end in the next.
        let partial = (1..KEY.len())
            .rev()
            .find(|&k| data.ends_with(&KEY[..k]))
            .unwrap_or(0);
        self.step = Step::Search { matched: partial };
        &[]
    }

    /// Advances through the few bytes between the key and its object, and through the object.
    fn step_byte<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let mut rest = data;
        while let Some((&byte, tail)) = rest.split_first() {
            match &mut self.step {
                Step::Search { .. } => return rest,
                Step::KeyEnd { matched } => {
                    self.step = match (*matched, byte) {
                        (0, b'"') => Step::Colon,
                        (m, b) if METADATA.get(m) == Some(&b) => {
                            if m + 1 == METADATA.len() {
                                Step::Colon
                            } else {
                                Step::KeyEnd { matched: m + 1 }
                            }
                        }
                        _ => Step::Search { matched: 0 },
                    };
                }
                Step::Colon => match byte {
                    b':' => self.step = Step::Value,
                    b if b.is_ascii_whitespace() => {}
                    _ => self.step = Step::Search { matched: 0 },
                },
                Step::Value => match byte {
                    b'{' => {
                        self.object.clear();
                        self.object.push(b'{');
                        self.step = Step::Object {
                            depth: 1,
                            in_string: false,
                            escaped: false,
                        };
                    }
                    b if b.is_ascii_whitespace() => {}
                    // `null` (OpenAI's stream chunks before the last) or anything else.
                    _ => self.step = Step::Search { matched: 0 },
                },
                Step::Object { .. } => return self.copy_object(rest),
            }
            rest = tail;
        }
        rest
    }

    /// Copies the object's bytes up to its closing brace; parses it when complete.
    fn copy_object<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Step::Object {
            mut depth,
            mut in_string,
            mut escaped,
        } = self.step
        else {
            return data;
        };
        for (i, &byte) in data.iter().enumerate() {
            if in_string {
                match (escaped, byte) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match byte {
                b'"' => in_string = true,
                b'{' => depth += 1,
                b'}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                self.object.extend_from_slice(&data[..=i]);
                self.finish_object();
                return &data[i + 1..];
            }
        }
        if self.object.len() + data.len() > MAX_OBJECT {
            self.object.clear();
            self.step = Step::Search { matched: 0 };
            return &[];
        }
        self.object.extend_from_slice(data);
        self.step = Step::Object {
            depth,
            in_string,
            escaped,
        };
        &[]
    }

    fn finish_object(&mut self) {
        if let Ok(report) = serde_json::from_slice::<Report>(&self.object) {
            self.found.merge(report.usage());
        }
        self.object.clear();
        self.step = Step::Search { matched: 0 };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_split(body: &[u8], at: &[usize]) -> Option<Usage> {
        let mut scan = UsageScan::default();
        let mut from = 0;
        for &cut in at {
            scan.feed(&body[from..cut]);
            from = cut;
        }
        scan.feed(&body[from..]);
        scan.found()
    }

    #[test]
    fn finds_usage_split_anywhere() {
        let body = br#"{"id":"x","content":[{"text":"say \"usage\": {\"input_tokens\": 1}"}],"usage":{"input_tokens":7,"output_tokens":42,"note":"a } in a string"}}"#;
        let whole = Usage::from_json(body).unwrap();
        assert_eq!(whole.input_tokens, Some(7));
        assert_eq!(whole.output_tokens, Some(42));
        for a in 0..body.len() {
            for b in [a, (a + 7).min(body.len()), (a + 20).min(body.len())] {
                assert_eq!(scan_split(body, &[a, b]), Some(whole), "cut at {a} and {b}");
            }
        }
    }

    #[test]
    fn merges_the_reports_of_a_stream() {
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let usage = Usage::from_json(stream).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (Some(25), Some(15))
        );
        let openai = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":3,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n";
        let usage = Usage::from_json(openai).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_tokens
            ),
            (Some(9), Some(3), Some(4))
        );
    }

    #[test]
    fn reads_gemini_usage_metadata() {
        let body = br#"{"candidates":[],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":5,"thoughtsTokenCount":2,"totalTokenCount":18}}"#;
        let usage = Usage::from_json(body).unwrap();
        assert_eq!(
            (usage.input_tokens, usage.output_tokens),
            (Some(11), Some(7))
        );
    }

    #[test]
    fn no_usage_no_report() {
        assert_eq!(Usage::from_json(br#"{"usage": null}"#), None);
        assert_eq!(Usage::from_json(br#"{"usage_notes": {"a": 1}}"#), None);
        let huge = format!(r#"{{"usage":{{"pad":"{}"}}}}"#, "x".repeat(5000));
        assert_eq!(Usage::from_json(huge.as_bytes()), None);
    }
}
