//! [`RouteLayer`]: one client, a policy per provider, chosen per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::layer::{StandardLayer, StandardService};
use super::policy::Policy;
#[cfg(feature = "config")]
use crate::config::Config;
use crate::retry::{ReplayBody, RetryError};
use crate::{BoxError, ConfigError};

/// A request extension that picks the route by name, whatever the request's host.
///
/// ```
/// let mut request = http::Request::new(());
/// request.extensions_mut().insert(tollgate::stack::RouteTo::new("claude-batch"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteTo(pub Arc<str>);

impl RouteTo {
    /// Route to the policy named `name`.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        RouteTo(name.into())
    }
}

/// No route serves a request: it named no known route and its host matches no policy.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoRoute {
    /// The request's host, if it had one.
    pub host: Option<String>,
    /// The route it asked for, if it did.
    pub asked: Option<Arc<str>>,
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.asked, &self.host) {
            (Some(name), _) => write!(
                f,
                "no route named `{name}`; add it to the RouteLayer or the config"
            ),
            (None, Some(host)) => write!(
                f,
                "no route serves host `{host}`; add it to a policy's hosts or set a fallback"
            ),
            (None, None) => {
                f.write_str("the request has no host and names no route; set a fallback")
            }
        }
    }
}

impl std::error::Error for NoRoute {}

#[derive(Debug, Clone)]
struct Route {
    name: Arc<str>,
    policy: Policy,
    layer: StandardLayer,
}

/// Picks a [`StandardLayer`] per request: by the [`RouteTo`] extension if the caller set one,
/// else by the request's host, else the fallback. Each route has its own quotas, budget and
/// breaker, so one client can serve OpenAI and Anthropic without one's 429s pausing the other.
///
/// ```
/// use tollgate::config::Config;
/// use tollgate::stack::RouteLayer;
///
/// let config = Config::from_toml(r#"
///     [providers.openai]
///     preset = "openai"
///     limits = { requests = 500 }
///     [providers.claude]
///     preset = "anthropic"
///     limits = { requests = 50 }
/// "#).unwrap();
/// let routes = RouteLayer::from_config(&config).unwrap();
/// assert_eq!(routes.names(), ["claude", "openai"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RouteLayer {
    routes: Arc<Vec<Route>>,
    fallback: Option<Arc<str>>,
}

impl RouteLayer {
    /// No routes yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route named `name` for `policy` (its hosts select it).
    pub fn route(mut self, name: impl Into<Arc<str>>, policy: Policy) -> Result<Self, ConfigError> {
        let layer = policy.layer()?;
        Arc::make_mut(&mut self.routes).push(Route {
            name: name.into(),
            policy,
            layer,
        });
        Ok(self)
    }

    /// Sends requests that match no host to the route named `name`.
    pub fn fallback(mut self, name: impl Into<Arc<str>>) -> Self {
        self.fallback = Some(name.into());
        self
    }

    /// One route per provider of `config`.
    #[cfg(feature = "config")]
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        config
            .providers
            .iter()
            .try_fold(RouteLayer::new(), |routes, (name, policy)| {
                routes.route(name.as_str(), policy.clone())
            })
    }

    /// The route names, in order.
    pub fn names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| &*r.name).collect()
    }

    /// The layer of the route named `name` (for its handles).
    pub fn layer_of(&self, name: &str) -> Option<&StandardLayer> {
        self.routes
            .iter()
            .find(|r| &*r.name == name)
            .map(|r| &r.layer)
    }
}

impl<S: Clone> Layer<S> for RouteLayer {
    type Service = Router<S>;

    fn layer(&self, client: S) -> Router<S> {
        let services = self
            .routes
            .iter()
            .map(|r| r.layer.layer(client.clone()))
            .collect();
        let fallback = self
            .fallback
            .as_ref()
            .and_then(|name| self.routes.iter().position(|r| r.name == *name));
        Router {
            routes: Arc::clone(&self.routes),
            services,
            fallback,
        }
    }
}

/// The service built by [`RouteLayer`].
#[derive(Debug)]
pub struct Router<S> {
    routes: Arc<Vec<Route>>,
    services: Vec<StandardService<S>>,
    fallback: Option<usize>,
}

impl<S: Clone> Clone for Router<S> {
    fn clone(&self) -> Self {
        Router {
            routes: Arc::clone(&self.routes),
            services: self.services.clone(),
            fallback: self.fallback,
        }
    }
}

impl<S> Router<S> {
    fn pick<B>(&self, request: &Request<B>) -> Result<usize, NoRoute> {
        if let Some(RouteTo(name)) = request.extensions().get::<RouteTo>() {
            return self
                .routes
                .iter()
                .position(|r| r.name == *name)
                .ok_or_else(|| NoRoute {
                    host: None,
                    asked: Some(name.clone()),
                });
        }
        let host = request.uri().host();
        host.and_then(|host| self.routes.iter().position(|r| r.policy.serves_host(host)))
            .or(self.fallback)
            .ok_or_else(|| NoRoute {
                host: host.map(str::to_owned),
                asked: None,
            })
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Router<S>
where
    StandardService<S>: Service<Request<ReqBody>, Response = Response<ResBody>, Error = RetryError>,
    ReqBody: ReplayBody,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = RouteFuture<<StandardService<S> as Service<Request<ReqBody>>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Like tower's `Steer`: the route is known only in `call`, so every route is made ready.
        for service in &mut self.services {
            ready!(service.poll_ready(cx)).map_err(BoxError::from)?;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.pick(&request) {
            Ok(index) => RouteFuture {
                state: RouteState::Routed {
                    future: self.services[index].call(request),
                },
            },
            Err(no_route) => RouteFuture {
                state: RouteState::NoRoute {
                    error: Some(no_route),
                },
            },
        }
    }
}

pin_project! {
    /// Response future of [`Router`]: the chosen route's future, or a [`NoRoute`] error.
    pub struct RouteFuture<F> {
        #[pin]
        state: RouteState<F>,
    }
}

impl<F> std::fmt::Debug for RouteFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteFuture").finish_non_exhaustive()
    }
}

pin_project! {
    #[project = RouteStateProj]
    enum RouteState<F> {
        Routed { #[pin] future: F },
        NoRoute { error: Option<NoRoute> },
    }
}

impl<F, T> Future for RouteFuture<F>
where
    F: Future<Output = Result<T, RetryError>>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RouteStateProj::Routed { future } => future.poll(cx).map_err(BoxError::from),
            RouteStateProj::NoRoute { error } => Poll::Ready(Err(match error.take() {
                Some(error) => Box::new(error),
                None => crate::polled_after_completion("route"),
            })),
        }
    }
}
