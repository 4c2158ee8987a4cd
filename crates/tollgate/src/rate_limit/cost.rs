//! What a request costs against a token limit: [`Cost`], [`EstimateTokens`], [`TokenCost`].

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::Request;
use http_body::Body;

/// Decides how many tokens a request costs. Closures `Fn(&Request<B>) -> u64` are costs.
///
/// ```
/// use tollgate::rate_limit::Cost;
///
/// let flat = |_: &http::Request<String>| 1_000u64;
/// assert_eq!(flat.cost(&http::Request::new(String::new())), 1_000);
/// ```
pub trait Cost<B>: Clone + Send + Sync + 'static {
    /// The request's cost in tokens.
    fn cost(&self, request: &Request<B>) -> u64;
}

impl<B, F> Cost<B> for F
where
    F: Fn(&Request<B>) -> u64 + Clone + Send + Sync + 'static,
{
    fn cost(&self, request: &Request<B>) -> u64 {
        self(request)
    }
}

/// A request extension that states the request's cost, overriding any estimate.
///
/// ```
/// let mut request = http::Request::new(String::new());
/// request.extensions_mut().insert(tollgate::rate_limit::TokenCost(4_096));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenCost(pub u64);

/// The default cost: estimates an AI request's tokens the way the provider charges at admission.
///
/// OpenAI charges the greater of `max_tokens` (or `max_completion_tokens`) and the prompt's
/// characters / 4; [`sum`](Self::sum) charges both added together, the more conservative rule.
/// A [`TokenCost`] extension wins; a body it cannot read costs [`fallback`](Self::fallback).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tollgate::rate_limit::{Cost, EstimateTokens};
///
/// let body = r#"{"model":"gpt-4o","max_tokens":500,"messages":[{"role":"user","content":"Hello!"}]}"#;
/// let request = http::Request::new(Full::new(Bytes::from_static(body.as_bytes())));
/// assert_eq!(EstimateTokens::new().cost(&request), 500);
/// assert_eq!(EstimateTokens::new().sum().cost(&request), 502);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EstimateTokens {
    fallback: u64,
    sum: bool,
}

impl Default for EstimateTokens {
    fn default() -> Self {
        EstimateTokens {
            fallback: 1_000,
            sum: false,
        }
    }
}

impl EstimateTokens {
    /// Greater of `max_tokens` and prompt / 4; 1,000 tokens for bodies it cannot read.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cost of a body that cannot be read (default 1,000).
    pub fn fallback(mut self, tokens: u64) -> Self {
        self.fallback = tokens;
        self
    }

    /// Charge `max_tokens` plus the prompt estimate, not the greater of the two.
    pub fn sum(mut self) -> Self {
        self.sum = true;
        self
    }

    /// Sums (`true`) or takes the greater (`false`), as a [`LimitConfig`](super::LimitConfig)
    /// says.
    pub(crate) fn summing(mut self, sum: bool) -> Self {
        self.sum = sum;
        self
    }

    /// The estimate for a JSON request body, or `None` if it is not a JSON object.
    pub fn estimate_json(&self, body: &[u8]) -> Option<u64> {
        let request: AdmissionFields = serde_json::from_slice(body).ok()?;
        let max_tokens = request
            .max_tokens
            .or(request.max_completion_tokens)
            .or(request.max_output_tokens)
            .unwrap_or(0);
        let chars = [
            request.messages,
            request.system,
            request.prompt,
            request.input,
            request.contents,
        ]
        .iter()
        .map(|text| text.0)
        .sum::<usize>();
        let prompt = (chars as u64).div_ceil(4);
        let output = max_tokens.saturating_mul(request.n.unwrap_or(1).max(1));
        Some(
            if self.sum {
                prompt.saturating_add(output)
            } else {
                prompt.max(output)
            }
            .max(1),
        )
    }
}

/// The fields of an AI request that its admission cost depends on. Deserialized without
/// building a JSON tree: text is counted, not kept.
#[derive(serde::Deserialize)]
struct AdmissionFields {
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    n: Option<u64>,
    #[serde(default)]
    messages: TextChars,
    #[serde(default)]
    system: TextChars,
    #[serde(default)]
    prompt: TextChars,
    #[serde(default)]
    input: TextChars,
    #[serde(default)]
    contents: TextChars,
}

/// Characters of text anywhere in a message structure: strings, and the `content`, `text` and
/// `parts` fields of objects, at any depth.
#[derive(Default, Clone, Copy)]
struct TextChars(usize);

impl<'de> serde::Deserialize<'de> for TextChars {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TextCharsVisitor)
    }
}

struct TextCharsVisitor;

impl<'de> serde::de::Visitor<'de> for TextCharsVisitor {
    type Value = TextChars;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("message text")
    }

    fn visit_str<E>(self, text: &str) -> Result<TextChars, E> {
        Ok(TextChars(text.chars().count()))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<TextChars, A::Error> {
        let mut total = 0;
        while let Some(TextChars(chars)) = items.next_element()? {
            total += chars;
        }
        Ok(TextChars(total))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TextChars, A::Error> {
        let mut total = 0;
        while let Some(key) = map.next_key::<TextKey>()? {
            match key {
                TextKey::Text => total += map.next_value::<TextChars>()?.0,
                TextKey::Other => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
        }
        Ok(TextChars(total))
    }

    fn visit_bool<E>(self, _: bool) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_i64<E>(self, _: i64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_u64<E>(self, _: u64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_f64<E>(self, _: f64) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }

    fn visit_unit<E>(self) -> Result<TextChars, E> {
        Ok(TextChars(0))
    }
}

/// An object key: one of the text-bearing fields, or anything else.
enum TextKey {
    Text,
    Other,
}

impl<'de> serde::Deserialize<'de> for TextKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = TextKey;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, key: &str) -> Result<TextKey, E> {
                Ok(match key {
                    "content" | "text" | "parts" => TextKey::Text,
                    _ => TextKey::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

impl<B: PeekBody> Cost<B> for EstimateTokens {
    fn cost(&self, request: &Request<B>) -> u64 {
        if let Some(TokenCost(cost)) = request.extensions().get::<TokenCost>() {
            return *cost;
        }
        request
            .body()
            .peek()
            .and_then(|bytes| self.estimate_json(&bytes))
            .unwrap_or(self.fallback)
    }
}

/// A request body whose bytes can be read without consuming it (bodies held in memory).
///
/// ```
/// use tollgate::rate_limit::PeekBody;
/// assert_eq!(String::from("{}").peek().as_deref(), Some(&b"{}"[..]));
/// ```
pub trait PeekBody {
    /// The whole body, if it is in memory; `None` for streams.
    fn peek(&self) -> Option<Bytes>;
}

impl PeekBody for String {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl PeekBody for Bytes {
    fn peek(&self) -> Option<Bytes> {
        Some(self.clone())
    }
}

impl PeekBody for Vec<u8> {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(self))
    }
}

impl PeekBody for &'static str {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::from_static(self.as_bytes()))
    }
}

impl PeekBody for () {
    fn peek(&self) -> Option<Bytes> {
        Some(Bytes::new())
    }
}

impl PeekBody for http_body_util::Full<Bytes> {
    fn peek(&self) -> Option<Bytes> {
        // `Full` yields its one chunk at once; a cheap clone (a reference count) reads it.
        let mut copy = self.clone();
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut copy).poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => frame.into_data().ok(),
            Poll::Ready(None) => Some(Bytes::new()),
            _ => None,
        }
    }
}

impl<D, E> PeekBody for http_body_util::combinators::BoxBody<D, E> {
    fn peek(&self) -> Option<Bytes> {
        None
    }
}
