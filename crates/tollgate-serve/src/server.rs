//! The HTTP/1 server: accepts connections up to a bound, times out slow clients, drains on
//! shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;

use crate::config::ServeConfig;
use crate::error::ServeError;
use crate::gateway::Gateway;
use crate::upstream::UpstreamStack;

/// Listens on `config.listen`, after checking `config` (a public address needs client keys).
pub async fn bind(config: &ServeConfig) -> Result<TcpListener, ServeError> {
    config.check()?;
    TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen,
            source,
        })
}

/// Serves `gateway` on `listener` until `shutdown` completes, then stops accepting, marks
/// itself not ready and lets the requests in flight finish for up to `config.drain_timeout`.
///
/// Refuses at once a gateway without client keys on a listener reachable from other hosts
/// (whatever `config.clients` says: the gateway's own keys count).
///
/// At most `config.max_connections` connections are served at once (the others wait in the
/// listen backlog); a client that takes longer than `config.header_timeout` to send a request's
/// headers (or leaves a kept-alive connection idle that long) is disconnected.
pub async fn serve<S>(
    listener: TcpListener,
    gateway: Gateway<S>,
    config: &ServeConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    S: UpstreamStack,
{
    check_exposure(&listener, &gateway)?;
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.header_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: let some connections close.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small writes (a stream's events) go out at once, as the providers send them.
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let service = service_fn(move |request| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(request).await) }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    gateway.start_draining();
    drop(listener);
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still in flight after the drain timeout ({:?}): stopping anyway",
            config.drain_timeout
        );
    }
    Ok(())
}

/// An open gateway (no client keys) listens on loopback only.
fn check_exposure<S>(listener: &TcpListener, gateway: &Gateway<S>) -> Result<(), ServeError> {
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    if gateway.is_open() && !addr.ip().is_loopback() {
        return Err(ServeError::config(
            "listen",
            format!(
                "{addr} is reachable from other hosts and the gateway has no client keys: \
                 anyone could spend the provider key's quota. Give client keys, or listen on \
                 127.0.0.1"
            ),
        ));
    }
    Ok(())
}

/// A gateway served in the background (see [`spawn`]).
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

/// Binds `config.listen` and serves `gateway` on a task of its own until
/// [`ServerHandle::shutdown`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tollgate::stack::Policy;
/// use tollgate::Provider;
/// use tollgate_serve::{Gateway, ServeConfig};
/// use tower::Layer;
///
/// let mut config = ServeConfig::default();
/// config.listen = "127.0.0.1:0".parse()?;
/// let stack = Policy::preset(Provider::OpenAi).layer()?.layer(tollgate_e2e::http_client());
/// let gateway = Gateway::builder(Provider::OpenAi, "http://127.0.0.1:9").build(stack)?;
/// let server = tollgate_serve::spawn(gateway, config).await?;
/// println!("gateway at {}", server.url());
/// server.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn spawn<S>(gateway: Gateway<S>, config: ServeConfig) -> Result<ServerHandle, ServeError>
where
    S: UpstreamStack,
{
    let listener = bind(&config).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    check_exposure(&listener, &gateway)?;
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        // Checked above: it can only end by the shutdown.
        let _ = serve(listener, gateway, &config, async {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(ServerHandle {
        addr,
        stop: Some(stop),
        task,
    })
}

impl ServerHandle {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its base URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and waits for the requests in flight (up to the drain timeout).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
