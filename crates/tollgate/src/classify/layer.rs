//! [`ClassifyLayer`].

use tower_layer::Layer;

use super::classifier::{Classify, DefaultClassifier};
use super::service::Classify as ClassifyService;
use super::stream::StreamConfig;

/// Judges every attempt once and stamps the verdict where the other layers read it
/// ([`response_verdict`](super::response_verdict), which also knows an unstamped plain success).
///
/// Put it innermost, next to the HTTP client, so the verdict describes one attempt. It also
/// marks credential headers sensitive on every request it sends (see
/// [`redact_secrets`](crate::redact_secrets)).
///
/// The response body must have `Bytes` data and be `Unpin`, as hyper's `Incoming`,
/// `http_body_util::Full<Bytes>` and axum's `Body` are; box any other body.
///
/// Streamed answers (`text/event-stream`) are watched as they are read, for the errors providers
/// report inside a `200` and for stalls; [`streams`](Self::streams) holds the response until the
/// first token, so that a failure before it is retried (see [`StreamConfig`](super::StreamConfig)).
///
/// ```
/// use tollgate::classify::{classify_fn, ClassifyLayer, Kind};
///
/// let default = ClassifyLayer::new();
/// // Statuses can be changed without writing a type.
/// let custom = ClassifyLayer::with_classifier(classify_fn(|status: http::StatusCode, _: &http::HeaderMap| {
///     (status.as_u16() == 520).then_some(Kind::ServerError)
/// }));
/// # let _ = (default, custom);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ClassifyLayer<C = DefaultClassifier> {
    classifier: C,
    streams: StreamConfig,
}

impl ClassifyLayer {
    /// A layer with the [`DefaultClassifier`].
    pub fn new() -> Self {
        ClassifyLayer {
            classifier: DefaultClassifier::new(),
            streams: StreamConfig::default(),
        }
    }
}

impl<C: Classify> ClassifyLayer<C> {
    /// A layer with the given classifier.
    pub fn with_classifier(classifier: C) -> Self {
        ClassifyLayer {
            classifier,
            streams: StreamConfig::default(),
        }
    }

    /// Watches streamed answers as `streams` says (default: for error events only).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tollgate::classify::{ClassifyLayer, StreamConfig};
    ///
    /// let mut streams = StreamConfig::default();
    /// streams.first_token_gate = true;
    /// streams.idle_timeout = Some(Duration::from_secs(60));
    /// let layer = ClassifyLayer::new().streams(streams);
    /// # let _ = layer;
    /// ```
    pub fn streams(mut self, streams: StreamConfig) -> Self {
        self.streams = streams;
        self
    }
}

impl<S, C: Classify> Layer<S> for ClassifyLayer<C> {
    type Service = ClassifyService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        ClassifyService::new(inner, self.classifier.clone()).with_streams(self.streams)
    }
}
