//! [`ReplayBody`]: which request bodies can be sent again.

use bytes::Bytes;
use http::Request;

/// A request body that may be able to produce a copy of itself for another attempt.
///
/// Bodies held in memory (`Full`, `Empty`, `String`, `Bytes`, `Vec<u8>`, `()`) replay; streaming
/// bodies return `None`, and a request with such a body is sent once: its failure is returned,
/// never re-sent with an empty body. To retry a streaming body, buffer it first, for example with
/// `http_body_util::BodyExt::collect` into a `Full<Bytes>` (AI request bodies are small JSON).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tollgate::retry::ReplayBody;
///
/// let body = Full::new(Bytes::from_static(b"{}"));
/// assert!(body.try_replay().is_some());
/// ```
pub trait ReplayBody: Sized {
    /// A copy of the body for another attempt, or `None` if it cannot be replayed.
    fn try_replay(&self) -> Option<Self>;
}

macro_rules! replay_by_clone {
    ($($body:ty),* $(,)?) => {
        $(impl ReplayBody for $body {
            fn try_replay(&self) -> Option<Self> {
                Some(self.clone())
            }
        })*
    };
}

replay_by_clone!((), String, Bytes, Vec<u8>, &'static str, &'static [u8]);

impl<D: bytes::Buf + Clone> ReplayBody for http_body_util::Full<D> {
    fn try_replay(&self) -> Option<Self> {
        Some(self.clone())
    }
}

impl<D> ReplayBody for http_body_util::Empty<D> {
    fn try_replay(&self) -> Option<Self> {
        Some(http_body_util::Empty::new())
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::BoxBody<D, E> {
    fn try_replay(&self) -> Option<Self> {
        None
    }
}

impl<D, E> ReplayBody for http_body_util::combinators::UnsyncBoxBody<D, E> {
    fn try_replay(&self) -> Option<Self> {
        None
    }
}

/// A copy of `request` (method, URI, version, headers, extensions and body) if its body replays.
pub(crate) fn try_clone_request<B: ReplayBody>(request: &Request<B>) -> Option<Request<B>> {
    let body = request.body().try_replay()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    *copy.extensions_mut() = request.extensions().clone();
    Some(copy)
}
