//! The [`Classify`] service.

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use tower_service::Service;

use super::body::ClassifiedBody;
use super::classifier::Classify as Classifier;
use super::error::ClassifiedError;
use super::future::ResponseFuture;
use super::stream::StreamConfig;
use crate::BoxError;

/// The service built by [`ClassifyLayer`](crate::classify::ClassifyLayer): see there.
#[derive(Debug, Clone)]
pub struct Classify<S, C> {
    inner: S,
    classifier: C,
    streams: StreamConfig,
}

impl<S, C> Classify<S, C> {
    /// Wraps `inner`, judging its answers with `classifier`.
    pub fn new(inner: S, classifier: C) -> Self {
        Classify {
            inner,
            classifier,
            streams: StreamConfig::default(),
        }
    }

    /// Watches streamed answers as `streams` says.
    pub fn with_streams(mut self, streams: StreamConfig) -> Self {
        self.streams = streams;
        self
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for Classify<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    C: Classifier,
    ResBody: Body<Data = Bytes> + Unpin,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<ClassifiedBody<ResBody>>;
    type Error = ClassifiedError;
    type Future = ResponseFuture<S::Future, ResBody, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| {
            let error = error.into();
            ClassifiedError::new(self.classifier.classify_error(&*error), error)
        })
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The request is about to leave for the network, where a client's own logging may print
        // it: its credentials are marked sensitive first.
        crate::redact_secrets(request.headers_mut());
        ResponseFuture::new(
            self.inner.call(request),
            self.classifier.clone(),
            self.streams,
        )
    }
}
