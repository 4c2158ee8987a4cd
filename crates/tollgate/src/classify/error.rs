//! [`ClassifiedError`]: a transport error with its verdict attached, and the default judgement
//! of errors.

use std::error::Error as StdError;
use std::fmt;
use std::io;

use super::verdict::{Classification, HintSource, Kind};
use crate::BoxError;

/// An error from the inner service, wrapped by [`ClassifyLayer`](crate::classify::ClassifyLayer)
/// with its verdict so that outer layers do not judge it again.
///
/// ```
/// use std::io;
/// use tollgate::classify::{ClassifiedError, Classification, Kind};
///
/// let reset = io::Error::new(io::ErrorKind::ConnectionReset, "connection reset by peer");
/// let error = ClassifiedError::new(Classification::new(Kind::Connection), reset.into());
/// assert_eq!(error.classification().kind(), Kind::Connection);
/// assert!(error.to_string().contains("connection reset"));
/// ```
#[derive(Debug)]
pub struct ClassifiedError {
    classification: Classification,
    source: BoxError,
}

impl ClassifiedError {
    /// Wraps `source` with its verdict.
    pub fn new(classification: Classification, source: BoxError) -> Self {
        ClassifiedError {
            classification,
            source,
        }
    }

    /// The verdict.
    pub fn classification(&self) -> Classification {
        self.classification
    }

    /// The error from the inner service.
    pub fn source_error(&self) -> &BoxError {
        &self.source
    }

    /// Unwraps the error from the inner service.
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for ClassifiedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.classification.kind(), self.source)
    }
}

impl StdError for ClassifiedError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.source)
    }
}

/// Judges an error from its type and source chain:
///
/// - an error that already carries a verdict keeps it: a [`ClassifiedError`], or an error with
///   a [`Classification`] in its source chain (tollgate's own rejections, an attempt timeout and
///   the retry layer's `RetryError` carry theirs that way, and an error of yours can too);
/// - an elapsed timer or an `io::ErrorKind::TimedOut` is a [`Kind::Timeout`];
/// - anything else from the transport is a [`Kind::Connection`] failure (refused, reset, closed
///   before a response): the request may not have reached the provider, so it is retryable.
///
/// ```
/// use std::io;
/// use tollgate::classify::{classify_error_default, Kind};
///
/// let timed_out = io::Error::new(io::ErrorKind::TimedOut, "read timed out");
/// assert_eq!(classify_error_default(&timed_out).kind(), Kind::Timeout);
/// let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
/// assert_eq!(classify_error_default(&refused).kind(), Kind::Connection);
/// ```
pub fn classify_error_default(error: &(dyn StdError + 'static)) -> Classification {
    let mut current = Some(error);
    while let Some(err) = current {
        if let Some(verdict) = known_verdict(err) {
            return verdict;
        }
        current = err.source();
    }
    Classification::new(Kind::Connection)
}

fn known_verdict(err: &(dyn StdError + 'static)) -> Option<Classification> {
    if let Some(classified) = err.downcast_ref::<ClassifiedError>() {
        return Some(classified.classification());
    }
    if let Some(carried) = err.downcast_ref::<Classification>() {
        return Some(*carried);
    }
    if err.is::<tokio::time::error::Elapsed>() {
        return Some(Classification::new(Kind::Timeout));
    }
    if let Some(io) = err.downcast_ref::<io::Error>() {
        if io.kind() == io::ErrorKind::TimedOut {
            return Some(Classification::new(Kind::Timeout));
        }
    }
    None
}

/// The verdict for a local rejection that names how long to wait (`None`: retrying cannot help).
pub(crate) fn rejected(wait: Option<std::time::Duration>) -> Classification {
    match wait {
        Some(wait) => Classification::new(Kind::Rejected)
            .with_retryable(true)
            .with_retry_after(wait, Some(HintSource::Local)),
        None => Classification::new(Kind::Rejected),
    }
}
