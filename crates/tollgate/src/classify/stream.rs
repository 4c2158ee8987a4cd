//! Streamed answers (`text/event-stream`): [`StreamConfig`], the [`StreamError`] that ends a
//! stream the provider broke, and the watch each streamed body carries.
//!
//! A provider that fails after its `200` says so inside the stream (Anthropic's `event: error`
//! with `overloaded_error`, OpenAI's and Gemini's error chunks), or stops sending. The watch
//! reads the events as the caller reads the body ([`SseScanner`]: no copy of the data) and ends
//! the body with a [`StreamError`] carrying the verdict, which the rate limiter and the breaker
//! outside it learn from. With the first-token gate, the response itself is held until the first
//! content event: an error event, a disconnect or a stall before it is an attempt failure, which
//! the retry layer retries like any other; after it the caller owns the stream and errors are
//! surfaced on the body, never replayed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{sleep_until, Instant, Sleep};

use super::sse::{Event, SseScanner, StreamFailure};
use super::verdict::{Classification, Kind};

/// How [`ClassifyLayer`](super::ClassifyLayer) watches streamed answers. Every part is optional;
/// [`StreamConfig::default`] watches for error events only, and the provider presets
/// ([`Policy::preset`](crate::stack::Policy::preset)) also hold the response until the first
/// token and bound the silences.
///
/// ```
/// use std::time::Duration;
/// use tollgate::classify::StreamConfig;
///
/// let mut streams = StreamConfig::default();
/// streams.first_token_gate = true;
/// streams.first_event_timeout = Some(Duration::from_secs(30));
/// assert!(streams.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct StreamConfig {
    /// Hold a streamed response until its first content event, so that an error event, a
    /// disconnect or a stall before it fails the attempt (and the retry layer retries it) rather
    /// than the caller's stream. Default false; on in the presets.
    pub first_token_gate: bool,
    /// The longest wait for the stream's first event, from its response head (`Timeout`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub first_event_timeout: Option<Duration>,
    /// The longest silence between two reads of the stream (`Timeout`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub idle_timeout: Option<Duration>,
    /// The longest a whole stream may last, from its response head (`Timeout`).
    #[cfg_attr(feature = "serde", serde(with = "crate::serde_forms::option_duration"))]
    pub deadline: Option<Duration>,
}

impl StreamConfig {
    /// Nothing held, nothing timed: the watch only ends a stream on an error event.
    pub const NONE: StreamConfig = StreamConfig {
        first_token_gate: false,
        first_event_timeout: None,
        idle_timeout: None,
        deadline: None,
    };

    /// Checks every setting; the error names the field.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        for (field, timeout) in [
            ("first_event_timeout", self.first_event_timeout),
            ("idle_timeout", self.idle_timeout),
            ("deadline", self.deadline),
        ] {
            crate::config_error::reject_if(
                timeout.is_some_and(|t| t.is_zero()),
                field,
                "must be longer than zero; leave it out for no bound",
            )?;
        }
        Ok(())
    }

    /// Whether anything needs a timer.
    fn timed(&self) -> bool {
        self.first_event_timeout.is_some() || self.idle_timeout.is_some() || self.deadline.is_some()
    }
}

/// A stream the provider broke after its response head: an error event, a stall past a timeout,
/// or an end without the provider's end event. It carries its verdict as its `source()`, where
/// [`classify_error_default`](super::classify_error_default) and the outer layers find it.
///
/// ```
/// use tollgate::classify::{classify_error_default, Kind, StreamError};
///
/// let error = StreamError::stalled("no event for 30s");
/// assert_eq!(classify_error_default(&error).kind(), Kind::Timeout);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamError {
    verdict: Classification,
    message: String,
}

impl StreamError {
    /// The provider reported an error with this verdict inside the stream.
    pub fn new(verdict: Classification, message: impl Into<String>) -> Self {
        StreamError {
            verdict,
            message: message.into(),
        }
    }

    /// The stream fell silent past a timeout.
    pub fn stalled(message: impl Into<String>) -> Self {
        Self::new(Classification::new(Kind::Timeout), message)
    }

    /// The stream ended without the provider's end event.
    pub fn cut(message: impl Into<String>) -> Self {
        Self::new(Classification::new(Kind::Connection), message)
    }

    /// The verdict.
    pub fn classification(&self) -> Classification {
        self.verdict
    }

    /// What the provider (or the watch) said.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "stream broken ({}): {}",
            self.verdict.kind().as_str(),
            self.message
        )
    }
}

impl std::error::Error for StreamError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.verdict)
    }
}

impl From<StreamFailure> for StreamError {
    fn from(failure: StreamFailure) -> Self {
        StreamError::new(failure.verdict, failure.message)
    }
}

/// The watch on one streamed body: its scanner, what it has seen and its timers.
#[derive(Debug)]
pub(crate) struct Watch {
    scanner: SseScanner,
    config: StreamConfig,
    started: Instant,
    /// An event arrived (the first-event timeout no longer applies).
    pub(crate) any_event: bool,
    /// A content event arrived: the caller owns the stream.
    pub(crate) content: bool,
    /// The provider's end event arrived.
    pub(crate) ended: bool,
    /// An error the stream reported or the watch found, not yet surfaced.
    pub(crate) failure: Option<StreamError>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Watch {
    pub(crate) fn new(config: StreamConfig) -> Self {
        let started = Instant::now();
        let mut watch = Watch {
            scanner: SseScanner::default(),
            config,
            started,
            any_event: false,
            content: false,
            ended: false,
            failure: None,
            timer: None,
        };
        if config.timed() {
            watch.timer = watch.next_deadline().map(|at| Box::pin(sleep_until(at)));
        }
        watch
    }

    /// Reads `data` as the caller gets it.
    pub(crate) fn feed(&mut self, data: &[u8]) {
        let (mut any, mut content, mut ended, mut failure) = (false, false, false, None);
        self.scanner.feed(data, &mut |event| {
            any = true;
            match event {
                Event::Content => content = true,
                Event::End => ended = true,
                Event::Error(error) => {
                    failure.get_or_insert_with(|| StreamError::from(error.clone()));
                }
                Event::Other => {}
            }
        });
        self.any_event |= any;
        self.content |= content;
        self.ended |= ended;
        if self.failure.is_none() {
            self.failure = failure;
        }
        if self.timer.is_some() {
            // Something arrived: the silence is over.
            if let Some(at) = self.next_deadline() {
                if let Some(timer) = &mut self.timer {
                    timer.as_mut().reset(at);
                }
            }
        }
    }

    /// The earliest instant a timeout would fire from now.
    fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        let first = self
            .config
            .first_event_timeout
            .filter(|_| !self.any_event)
            .map(|t| self.started + t);
        let idle = self.config.idle_timeout.map(|t| now + t);
        let total = self.config.deadline.map(|t| self.started + t);
        [first, idle, total].into_iter().flatten().min()
    }

    /// Whether the bytes so far end in the middle of an event (a truncated stream).
    pub(crate) fn mid_event(&self) -> bool {
        self.scanner.mid_event()
    }

    /// `Ready` with the timeout that fired, if one did.
    pub(crate) fn poll_timeout(&mut self, cx: &mut Context<'_>) -> Poll<StreamError> {
        let Some(timer) = &mut self.timer else {
            return Poll::Pending;
        };
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let waited = self.started.elapsed();
        let which = if !self.any_event && self.config.first_event_timeout.is_some() {
            "no first event"
        } else if self.config.deadline.is_some_and(|d| waited >= d) {
            "the stream's deadline passed"
        } else {
            "no event"
        };
        Poll::Ready(StreamError::stalled(format!(
            "{which} after {:.1}s",
            waited.as_secs_f64()
        )))
    }
}

/// The verdict a body error carries, when it carries one: a [`StreamError`], directly or in a
/// boxed error's chain (the error of a body [`ClassifiedBody`](super::ClassifiedBody) watched).
pub(crate) fn body_error_verdict<E: 'static>(error: &E) -> Option<Classification> {
    let any = error as &dyn std::any::Any;
    let mut cause: Option<&(dyn std::error::Error + 'static)> =
        if let Some(boxed) = any.downcast_ref::<crate::BoxError>() {
            Some(&**boxed)
        } else if let Some(stream) = any.downcast_ref::<StreamError>() {
            Some(stream)
        } else {
            None
        };
    while let Some(error) = cause {
        if let Some(verdict) = error.downcast_ref::<Classification>() {
            return Some(*verdict);
        }
        cause = error.source();
    }
    None
}

/// Whether an answer's head says it is a stream of server-sent events.
pub(crate) fn is_event_stream(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}
