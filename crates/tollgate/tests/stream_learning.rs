//! A `rate_limit_error` inside a stream teaches the rate limiter as a 429 does (paused time).

mod support;

use http::Request;
use http_body_util::BodyExt;
use support::{Scripted, Step};
use tollgate::classify::{ClassifyLayer, Kind, StreamError};
use tollgate::rate_limit::{Rate, RateLimitLayer};
use tower::{Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_rate_limit_error_event_drains_the_request_bucket() {
    let stream = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n\
        event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi\"}}\n\n\
        event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"Number of requests has exceeded your rate limit\"}}\n\n";
    let provider = Scripted::new([Step::Full(
        200,
        vec![("content-type", "text/event-stream".into())],
        stream.into(),
    )]);
    let limiter = RateLimitLayer::builder()
        .requests(Rate::per_second(10).with_burst(5))
        .fixed()
        .build()
        .unwrap();
    let handle = limiter.handle();
    let mut service = tower::ServiceBuilder::new()
        .layer(limiter)
        .layer(ClassifyLayer::new())
        .service(provider);
    let response = ServiceExt::<Request<String>>::ready(&mut service)
        .await
        .unwrap()
        .call(Request::new(String::new()))
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "the head was a success");
    assert_eq!(handle.snapshot().requests_available, Some(4));
    let error = response.into_body().collect().await.unwrap_err();
    let error = error.downcast_ref::<StreamError>().unwrap();
    assert_eq!(error.classification().kind(), Kind::RateLimited);
    assert_eq!(
        handle.snapshot().requests_available,
        Some(0),
        "the late 429 emptied the bucket, as a 429 without a hint does"
    );
}
