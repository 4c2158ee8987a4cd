//! tollgate's gateway ([`tollgate_serve::Gateway`]) inside an axum app: the way to embed it in a
//! service of your own, next to routes of your own.

use axum::body::Body as AxumBody;
use axum::extract::State;
use axum::response::Response;
use http::{Request, Uri};
use tollgate::Provider;
use tollgate_serve::{Gateway, UpstreamStack};

pub use tollgate_serve::{PRIORITY_HEADER, SERVED_BY_HEADER};

/// A router that answers `/v1/*` through `stack` to `upstream` (a base URL): an open gateway (no
/// client keys, the caller's own key passed through), as in the `gateway` example.
///
/// # Panics
///
/// If `upstream` is not an http(s) URL with a host: a programming error in the example.
pub fn router<S: UpstreamStack>(stack: S, upstream: Uri) -> axum::Router {
    let gateway = Gateway::builder(Provider::OpenAiCompatible, &upstream.to_string())
        .build(stack)
        .expect("an http(s) upstream URL");
    axum::Router::new()
        .route("/v1/{*path}", axum::routing::any(forward::<S>))
        .with_state(gateway)
}

async fn forward<S: UpstreamStack>(
    State(gateway): State<Gateway<S>>,
    request: Request<AxumBody>,
) -> Response {
    gateway.handle(request).await.map(AxumBody::new)
}
