//! [`ReqwestService`]: a [`reqwest::Client`] as a tower service of `http` types.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tower::Service;

/// A [`reqwest::Client`] as a tower [`Service`] of `http::Request<B>` to
/// `http::Response<reqwest::Body>`, so that any tollgate stack (or tower middleware) can send
/// through reqwest. Use bodies held in memory (`Bytes`, `String`, `Vec<u8>`): the retry layer
/// replays them.
///
/// ```
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
/// use tollgate_reqwest::ReqwestService;
/// use tower::Layer;
///
/// let transport = ReqwestService::new(reqwest::Client::new());
/// let stack = Policy::preset(Provider::Anthropic).layer()?.layer(transport);
/// # let _ = stack;
/// # Ok::<(), tollgate::ConfigError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct ReqwestService {
    client: reqwest::Client,
}

impl ReqwestService {
    /// Sends through `client` (its pool, TLS, proxies and timeouts).
    pub fn new(client: reqwest::Client) -> Self {
        ReqwestService { client }
    }
}

impl<B> Service<http::Request<B>> for ReqwestService
where
    B: Into<reqwest::Body>,
{
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = ReqwestFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<reqwest::Request>::poll_ready(&mut self.client, cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        match reqwest::Request::try_from(request) {
            Ok(request) => ReqwestFuture {
                state: State::Sending {
                    future: self.client.call(request),
                },
            },
            // A request reqwest cannot send (a relative URI): said when awaited.
            Err(error) => ReqwestFuture {
                state: State::Failed { error: Some(error) },
            },
        }
    }
}

type Pending = <reqwest::Client as Service<reqwest::Request>>::Future;

pin_project! {
    /// The future of [`ReqwestService::call`].
    pub struct ReqwestFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        Sending { #[pin] future: Pending },
        Failed { error: Option<reqwest::Error> },
    }
}

impl std::fmt::Debug for ReqwestFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqwestFuture").finish_non_exhaustive()
    }
}

impl Future for ReqwestFuture {
    type Output = Result<http::Response<reqwest::Body>, reqwest::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Sending { future } => future.poll(cx).map_ok(http::Response::from),
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("ReqwestFuture polled after it completed"),
            },
        }
    }
}
