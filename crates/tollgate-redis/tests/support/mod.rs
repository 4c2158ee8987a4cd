//! What the Redis store's layer tests share.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::{Request, Response};
use tower::{service_fn, Service};

/// When each request was admitted.
pub type Log = Arc<Mutex<Vec<Instant>>>;

/// An upstream that answers 200 at once and logs the instant of each admission.
pub fn logging_upstream(
    log: Log,
) -> impl Service<Request<String>, Response = Response<String>, Error = Infallible, Future: Send>
       + Clone
       + Send {
    service_fn(move |_: Request<String>| {
        log.lock().unwrap().push(Instant::now());
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    })
}
