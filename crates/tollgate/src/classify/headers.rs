//! Parsers for the headers AI providers use to say "wait" and "how much is left".
//!
//! Every parser takes a raw value and returns `None` for anything it cannot read: a malformed
//! header from the network is ignored, never a panic. Parsers that depend on the wall clock take
//! `now` as an argument so they are deterministic in tests.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::verdict::{HintSource, LimitKind};

/// Parses `retry-after-ms`: a non-negative number of milliseconds, fractions allowed.
///
/// ```text
/// use std::time::Duration;
///
/// assert_eq!(parse_retry_after_ms("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_retry_after_ms("2.5"), Some(Duration::from_micros(2500)));
/// assert_eq!(parse_retry_after_ms("soon"), None);
/// ```
pub(crate) fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    parse_non_negative(value).map(|ms| saturating_secs_f64(ms / 1000.0))
}

/// Parses `Retry-After`: delta-seconds (fractions tolerated, as the OpenAI SDK does) or an
/// HTTP-date, which becomes the time from `now` until then (zero if it is past).
///
/// ```text
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480); // Wed, 21 Oct 2015 07:28:00 GMT
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// assert_eq!(parse_retry_after("-1", now), None);
/// ```
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    if let Some(secs) = parse_non_negative(value) {
        return Some(saturating_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value.trim()).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses `x-should-retry`: `true` or `false` (any case); anything else is `None`.
///
/// ```text
/// assert_eq!(parse_should_retry("true"), Some(true));
/// assert_eq!(parse_should_retry("FALSE"), Some(false));
/// assert_eq!(parse_should_retry("maybe"), None);
/// ```
pub(crate) fn parse_should_retry(value: &str) -> Option<bool> {
    let value = value.trim();
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Parses a Go-style duration as OpenAI and Groq send in `x-ratelimit-reset-*`: a sequence of
/// decimal numbers each with a unit (`h`, `m`, `s`, `ms`, `us`/`µs`, `ns`), such as `1s`,
/// `6m0s`, `20ms` or `1h2m3.5s`. A bare `0` is zero.
///
/// ```text
/// use std::time::Duration;
///
/// assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
/// assert_eq!(parse_go_duration("1h2m3.5s"), Some(Duration::from_millis(3_723_500)));
/// assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
/// assert_eq!(parse_go_duration("6 minutes"), None);
/// ```
pub(crate) fn parse_go_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value == "0" {
        return Some(Duration::ZERO);
    }
    if value.is_empty() {
        return None;
    }
    let mut rest = value;
    let mut total_secs = 0.0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return None;
        }
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total_secs += number * scale;
    }
    if !total_secs.is_finite() {
        return None;
    }
    Some(saturating_secs_f64(total_secs))
}

/// Parses an RFC 3339 UTC timestamp (Anthropic's `anthropic-ratelimit-*-reset`) into the time from
/// `now` until then (zero if past).
///
/// ```text
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(1_772_049_750); // 2026-02-25T20:02:30Z
/// assert_eq!(parse_rfc3339_reset("2026-02-25T20:02:32Z", now), Some(Duration::from_secs(2)));
/// assert_eq!(parse_rfc3339_reset("yesterday", now), None);
/// ```
pub(crate) fn parse_rfc3339_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    // humantime indexes fixed byte offsets; only ASCII input can be valid anyway.
    if !value.is_ascii() {
        return None;
    }
    let when = humantime::parse_rfc3339(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One limit as a provider reports it: its size, what is left, and when it is full again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitWindow {
    /// The limit (`x-ratelimit-limit-*`, `anthropic-ratelimit-*-limit`).
    pub limit: Option<u64>,
    /// What remains (`x-ratelimit-remaining-*`, `anthropic-ratelimit-*-remaining`).
    pub remaining: Option<u64>,
    /// Time until the limit is replenished (`x-ratelimit-reset-*`, `anthropic-ratelimit-*-reset`).
    pub reset: Option<Duration>,
}

impl LimitWindow {
    /// Records one header's value: `field` is `limit`, `remaining` or `reset`.
    fn set(&mut self, field: &str, value: &str, parse_reset: impl Fn(&str) -> Option<Duration>) {
        match field {
            "limit" => self.limit = value.trim().parse().ok(),
            "remaining" => self.remaining = value.trim().parse().ok(),
            "reset" => self.reset = parse_reset(value),
            _ => {}
        }
    }

    /// Whether any of the three values was present.
    pub fn is_known(&self) -> bool {
        self.limit.is_some() || self.remaining.is_some() || self.reset.is_some()
    }

    /// Whether the provider says nothing is left.
    pub fn is_exhausted(&self) -> bool {
        self.remaining == Some(0)
    }
}

/// The provider's view of the caller's quota, parsed from one response's headers.
///
/// [`ClassifyLayer`](crate::classify::ClassifyLayer) puts it in the response's extensions when any
/// of the headers was present; the rate limiter reads it to correct its own buckets.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use http::HeaderMap;
/// use tollgate::classify::RateLimitState;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-ratelimit-limit-requests", "60".parse().unwrap());
/// headers.insert("x-ratelimit-remaining-requests", "59".parse().unwrap());
/// headers.insert("x-ratelimit-reset-requests", "1s".parse().unwrap());
/// let state = RateLimitState::from_headers(&headers, SystemTime::now()).unwrap();
/// assert_eq!(state.requests.remaining, Some(59));
/// assert_eq!(state.requests.reset, Some(Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimitState {
    /// Requests per interval (per minute for OpenAI and Anthropic, per day for Groq).
    pub requests: LimitWindow,
    /// Tokens per interval (OpenAI's TPM, Anthropic's combined tokens).
    pub tokens: LimitWindow,
    /// Anthropic's input tokens per minute.
    pub input_tokens: LimitWindow,
    /// Anthropic's output tokens per minute.
    pub output_tokens: LimitWindow,
}

impl RateLimitState {
    /// Reads the OpenAI-style (`x-ratelimit-*`) and Anthropic (`anthropic-ratelimit-*`) headers.
    /// Returns `None` when none of them is present or readable.
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Self> {
        Self::from_headers_with(headers, || now)
    }

    /// As [`from_headers`](Self::from_headers), reading the wall clock only if an RFC 3339 reset
    /// needs it (most responses carry no rate-limit headers at all).
    pub fn from_headers_with(headers: &HeaderMap, now: impl Fn() -> SystemTime) -> Option<Self> {
        // One pass over the headers with a prefix check: most responses carry none of these,
        // and looking up twenty names one by one would cost more than the rest of the layer.
        // The names alone first: without any, the two states below are not even made.
        if !headers.keys().any(|name| is_rate_limit_name(name.as_str())) {
            return None;
        }
        let mut openai = RateLimitState::default();
        let mut anthropic = RateLimitState::default();
        let mut any = false;
        for (name, value) in headers {
            let name = name.as_str();
            // The name first: most headers are none of these, and their values need no check.
            if !is_rate_limit_name(name) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            any = true;
            if let Some(rest) = name.strip_prefix("x-ratelimit-") {
                let Some((field, family)) = rest.split_once('-') else {
                    continue;
                };
                let window = match family {
                    "requests" => &mut openai.requests,
                    "tokens" => &mut openai.tokens,
                    _ => continue,
                };
                window.set(field, value, parse_go_duration);
            } else if let Some(rest) = name.strip_prefix("anthropic-ratelimit-") {
                let Some((family, field)) = rest.rsplit_once('-') else {
                    continue;
                };
                let window = match family {
                    "requests" => &mut anthropic.requests,
                    "tokens" => &mut anthropic.tokens,
                    "input-tokens" => &mut anthropic.input_tokens,
                    "output-tokens" => &mut anthropic.output_tokens,
                    _ => continue,
                };
                window.set(field, value, |v| parse_rfc3339_reset(v, now()));
            }
        }
        if !any {
            return None;
        }
        let either = |a: LimitWindow, b: LimitWindow| if a.is_known() { a } else { b };
        let state = RateLimitState {
            requests: either(openai.requests, anthropic.requests),
            tokens: either(openai.tokens, anthropic.tokens),
            input_tokens: anthropic.input_tokens,
            output_tokens: anthropic.output_tokens,
        };
        state.is_known().then_some(state)
    }

    fn is_known(&self) -> bool {
        self.requests.is_known()
            || self.tokens.is_known()
            || self.input_tokens.is_known()
            || self.output_tokens.is_known()
    }

    /// The longest reset among the limits that are exhausted, and which limit that is: the wait
    /// a 429 implies when it carries no `Retry-After`.
    pub fn exhausted_reset(&self) -> Option<(Duration, LimitKind)> {
        let candidates = [
            (self.requests, LimitKind::Requests),
            (self.tokens, LimitKind::Tokens),
            (self.input_tokens, LimitKind::InputTokens),
            (self.output_tokens, LimitKind::OutputTokens),
        ];
        candidates
            .into_iter()
            .filter(|(window, _)| window.is_exhausted())
            .filter_map(|(window, kind)| window.reset.map(|reset| (reset, kind)))
            .max_by_key(|(reset, _)| *reset)
    }

    /// Which limit is exhausted, if the headers say exactly one kind is.
    pub fn exhausted_limit(&self) -> Option<LimitKind> {
        let requests = self.requests.is_exhausted();
        let tokens = [
            (self.tokens, LimitKind::Tokens),
            (self.input_tokens, LimitKind::InputTokens),
            (self.output_tokens, LimitKind::OutputTokens),
        ];
        let mut exhausted = tokens.iter().filter(|(window, _)| window.is_exhausted());
        match (requests, exhausted.next(), exhausted.next()) {
            (true, None, _) => Some(LimitKind::Requests),
            (false, Some((_, kind)), None) => Some(*kind),
            (false, Some(_), Some(_)) => Some(LimitKind::Tokens),
            _ => None,
        }
    }
}

/// The wait a response asks for, in order of trust: `retry-after-ms`, then `Retry-After`.
/// (Reset headers are consulted by the classifier only for 429s, see [`RateLimitState`].)
pub(crate) fn wait_hint(headers: &HeaderMap, now: SystemTime) -> Option<(Duration, HintSource)> {
    if let Some(wait) = header_str(headers, "retry-after-ms").and_then(parse_retry_after_ms) {
        return Some((wait, HintSource::RetryAfterMs));
    }
    header_str(headers, "retry-after")
        .and_then(|v| parse_retry_after(v, now))
        .map(|wait| (wait, HintSource::RetryAfter))
}

/// The `x-should-retry` header, when present and readable.
pub(crate) fn should_retry(headers: &HeaderMap) -> Option<bool> {
    header_str(headers, "x-should-retry").and_then(parse_should_retry)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

fn parse_non_negative(value: &str) -> Option<f64> {
    let number: f64 = value.trim().parse().ok()?;
    (number.is_finite() && number >= 0.0).then_some(number)
}

/// A wait of more seconds than `Duration` holds means "not in this lifetime": saturate rather
/// than drop it, so a retry ceiling still sees it as too long.
fn saturating_secs_f64(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

/// The parsers, one header form at a time (the layer-level tables are in `tests/classify.rs`).
/// Whether a header's name is one of the providers' rate-limit headers.
fn is_rate_limit_name(name: &str) -> bool {
    name.starts_with("x-ratelimit-") || name.starts_with("anthropic-ratelimit-")
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn retry_after_http_date_is_relative_to_now() {
        let now = UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("Wednesday", now), None);
    }

    #[test]
    fn header_forms_each_parse_into_typed_values() {
        let table: &[(&str, Option<Duration>)] = &[
            ("1s", Some(Duration::from_secs(1))),
            ("6m0s", Some(Duration::from_secs(360))),
            ("20ms", Some(Duration::from_millis(20))),
            ("1h2m3.5s", Some(Duration::from_millis(3_723_500))),
            ("2m59.56s", Some(Duration::from_millis(179_560))),
            ("7.66s", Some(Duration::from_millis(7_660))),
            ("0", Some(Duration::ZERO)),
            ("", None),
            ("s", None),
            ("5", None),
            ("1.2.3s", None),
            ("5 minutes", None),
            ("-1s", None),
        ];
        for (value, expected) in table {
            let parsed = parse_go_duration(value);
            match (parsed, expected) {
                (Some(p), Some(e)) => assert!(
                    (p.as_secs_f64() - e.as_secs_f64()).abs() < 1e-6,
                    "{value}: {p:?}"
                ),
                _ => assert_eq!(parsed, *expected, "{value}"),
            }
        }
        assert_eq!(
            parse_retry_after_ms("12.5"),
            Some(Duration::from_micros(12_500))
        );
        assert_eq!(parse_retry_after_ms("NaN"), None);
        assert_eq!(parse_retry_after_ms("inf"), None);
        assert_eq!(parse_retry_after_ms("1e400"), None, "parses as infinity");
        assert_eq!(
            parse_retry_after_ms("1e300"),
            Some(Duration::MAX),
            "huge waits saturate"
        );
        assert_eq!(parse_should_retry(" True "), Some(true));
        let now = UNIX_EPOCH + Duration::from_secs(1_772_049_750);
        assert_eq!(
            parse_rfc3339_reset("2026-02-25T20:02:37Z", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_rfc3339_reset("2026-02-25T20:02:37.500Z", now),
            Some(Duration::from_millis(7_500))
        );
        assert_eq!(parse_rfc3339_reset("2026-02-25T20:0é:37Z", now), None);
    }

    /// Cases per property: 2,000 in CI; `TOLLGATE_FUZZ_CASES=1000000` for a long fuzzing run.
    pub(crate) fn fuzz_cases() -> u32 {
        std::env::var("TOLLGATE_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

        #[test]
        fn no_header_value_panics_a_parser(value in "\\PC{0,40}") {
            let now = SystemTime::now();
            let _ = parse_go_duration(&value);
            let _ = parse_retry_after(&value, now);
            let _ = parse_retry_after_ms(&value);
            let _ = parse_rfc3339_reset(&value, now);
            let _ = parse_should_retry(&value);
        }

    #[test]
        fn go_durations_round_trip(h in 0u64..48, m in 0u64..60, ms in 0u64..60_000) {
            let text = format!("{h}h{m}m{}.{:03}s", ms / 1000, ms % 1000);
            let expected = Duration::from_millis(h * 3_600_000 + m * 60_000 + ms);
            let parsed = parse_go_duration(&text).unwrap();
            prop_assert!((parsed.as_secs_f64() - expected.as_secs_f64()).abs() < 1e-6);
        }

        #[test]
        fn retry_after_seconds_and_dates_round_trip(secs in 0u64..1_000_000) {
            let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            prop_assert_eq!(parse_retry_after(&secs.to_string(), now), Some(Duration::from_secs(secs)));
            let date = httpdate::fmt_http_date(now + Duration::from_secs(secs));
            prop_assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(secs)));
            prop_assert_eq!(parse_retry_after_ms(&(secs * 1000).to_string()), Some(Duration::from_secs(secs)));
            let rfc = humantime::format_rfc3339(now + Duration::from_secs(secs)).to_string();
            prop_assert_eq!(parse_rfc3339_reset(&rfc, now), Some(Duration::from_secs(secs)));
        }
    }
}
