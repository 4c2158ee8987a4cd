//! The classification model: one table per status class and header form, and the layer over an
//! in-memory service. (The header parsers and the property tests that no header value or body
//! panics the classifier are unit tests in `src/classify/headers.rs`.)

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use tollgate::classify::{
    classify_fn, error_verdict, response_verdict, Classification, ClassifiedError, Classify,
    ClassifyLayer, DefaultClassifier, HintSource, Kind, LimitKind, RateLimitState,
};
use tower::{service_fn, Layer, ServiceExt};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    map
}

fn classify(status: u16, pairs: &[(&str, &str)]) -> Classification {
    DefaultClassifier::new()
        .classify_response(StatusCode::from_u16(status).unwrap(), &headers(pairs))
}

#[test]
fn every_status_class_has_its_kind_and_retryability() {
    let table: &[(u16, Kind, bool)] = &[
        (200, Kind::Success, false),
        (201, Kind::Success, false),
        (304, Kind::Success, false),
        (400, Kind::ClientError, false),
        (401, Kind::Auth, false),
        (403, Kind::Auth, false),
        (404, Kind::ClientError, false),
        (408, Kind::Timeout, true),
        (409, Kind::ClientError, true),
        (413, Kind::ClientError, false),
        (422, Kind::ClientError, false),
        (429, Kind::RateLimited, true),
        (500, Kind::ServerError, true),
        (501, Kind::ClientError, false),
        (502, Kind::ServerError, true),
        (503, Kind::ServerError, true),
        (504, Kind::ServerError, true),
        (529, Kind::Overloaded, true),
    ];
    for &(status, kind, retryable) in table {
        let verdict = classify(status, &[]);
        assert_eq!(verdict.kind(), kind, "status {status}");
        assert_eq!(verdict.is_retryable(), retryable, "status {status}");
        assert_eq!(
            verdict.status(),
            Some(StatusCode::from_u16(status).unwrap())
        );
    }
}

#[test]
fn x_should_retry_overrides_the_status_both_ways() {
    assert!(!classify(503, &[("x-should-retry", "false")]).is_retryable());
    assert!(classify(400, &[("x-should-retry", "true")]).is_retryable());
    assert!(classify(503, &[("x-should-retry", "garbage")]).is_retryable());
}

#[test]
fn wait_hints_in_order_of_trust() {
    let ms_first = classify(429, &[("retry-after-ms", "250"), ("retry-after", "7")]);
    assert_eq!(ms_first.retry_after(), Some(Duration::from_millis(250)));
    assert_eq!(ms_first.hint_source(), Some(HintSource::RetryAfterMs));

    let seconds = classify(503, &[("retry-after", "7")]);
    assert_eq!(seconds.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(seconds.hint_source(), Some(HintSource::RetryAfter));

    // A malformed ms value falls through to the next form.
    let fallback = classify(429, &[("retry-after-ms", "soon"), ("retry-after", "3")]);
    assert_eq!(fallback.retry_after(), Some(Duration::from_secs(3)));

    let reset = classify(
        429,
        &[
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
            ("x-ratelimit-remaining-requests", "5"),
            ("x-ratelimit-reset-requests", "1s"),
        ],
    );
    assert_eq!(reset.retry_after(), Some(Duration::from_secs(360)));
    assert_eq!(reset.hint_source(), Some(HintSource::ResetHeader));
    assert_eq!(reset.limit(), Some(LimitKind::Tokens));

    assert_eq!(classify(429, &[]).retry_after(), None);
}

#[test]
fn openai_and_anthropic_rate_limit_headers_are_read() {
    let openai = headers(&[
        ("x-ratelimit-limit-requests", "60"),
        ("x-ratelimit-remaining-requests", "59"),
        ("x-ratelimit-reset-requests", "1s"),
        ("x-ratelimit-limit-tokens", "150000"),
        ("x-ratelimit-remaining-tokens", "149984"),
        ("x-ratelimit-reset-tokens", "6m0s"),
    ]);
    let state = RateLimitState::from_headers(&openai, SystemTime::now()).unwrap();
    assert_eq!(state.requests.limit, Some(60));
    assert_eq!(state.tokens.remaining, Some(149_984));
    assert_eq!(state.tokens.reset, Some(Duration::from_secs(360)));

    let now = UNIX_EPOCH + Duration::from_secs(1_772_049_750);
    let anthropic = headers(&[
        ("anthropic-ratelimit-requests-limit", "50"),
        ("anthropic-ratelimit-requests-remaining", "0"),
        ("anthropic-ratelimit-requests-reset", "2026-02-25T20:02:32Z"),
        ("anthropic-ratelimit-input-tokens-limit", "30000"),
        ("anthropic-ratelimit-input-tokens-remaining", "28000"),
        ("anthropic-ratelimit-output-tokens-remaining", "8000"),
        ("anthropic-ratelimit-tokens-limit", "38000"),
    ]);
    let state = RateLimitState::from_headers(&anthropic, now).unwrap();
    assert_eq!(state.requests.reset, Some(Duration::from_secs(2)));
    assert_eq!(state.input_tokens.limit, Some(30_000));
    assert_eq!(state.output_tokens.remaining, Some(8_000));
    assert_eq!(state.tokens.limit, Some(38_000));
    assert_eq!(state.exhausted_limit(), Some(LimitKind::Requests));
    assert_eq!(
        state.exhausted_reset(),
        Some((Duration::from_secs(2), LimitKind::Requests))
    );

    assert_eq!(
        RateLimitState::from_headers(&headers(&[("x-ratelimit-limit-requests", "many")]), now),
        None
    );
}

#[test]
fn error_bodies_refine_the_verdict() {
    let classifier = DefaultClassifier::new();
    let refine = |status: u16, body: &str| {
        let verdict = classify(status, &[("x-should-retry", "true")]);
        classifier.classify_body(verdict, body.as_bytes())
    };
    let quota = refine(
        429,
        r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
    );
    assert_eq!(quota.kind(), Kind::QuotaExhausted);
    assert!(
        !quota.is_retryable(),
        "a billing 429 is never retried, whatever x-should-retry says"
    );

    let too_large = refine(
        429,
        r#"{"error":{"message":"Request too large for gpt-4o on tokens per min (TPM): Limit 30000, Requested 34307.","type":"tokens","code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(too_large.kind(), Kind::ClientError);
    assert!(!too_large.is_retryable());

    let tokens = classifier.classify_body(
        classify(429, &[]),
        br#"{"error":{"message":"Rate limit reached","type":"tokens","code":"rate_limit_exceeded"}}"#,
    );
    assert_eq!(
        (tokens.kind(), tokens.limit()),
        (Kind::RateLimited, Some(LimitKind::Tokens))
    );

    let overloaded = refine(
        503,
        r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
    );
    assert_eq!(overloaded.kind(), Kind::Overloaded);
    assert!(overloaded.is_retryable());

    let gemini = classifier.classify_body(
        classify(429, &[]),
        br#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Please retry in 20.2s.","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"55s"}]}}"#,
    );
    assert_eq!(gemini.kind(), Kind::RateLimited);
    assert_eq!(gemini.retry_after(), Some(Duration::from_secs(55)));
    assert_eq!(gemini.hint_source(), Some(HintSource::Body));

    let not_json = refine(500, "<html>bad gateway</html>");
    assert_eq!(not_json.kind(), Kind::ServerError);
}

#[test]
fn closures_and_builders_change_statuses_without_a_type() {
    let custom = DefaultClassifier::new()
        .transient_status(404)
        .permanent_status(503)
        .overloaded_status(520);
    let at = |s: u16| custom.classify_response(StatusCode::from_u16(s).unwrap(), &HeaderMap::new());
    assert_eq!(at(404).kind(), Kind::ServerError);
    assert_eq!(at(503).kind(), Kind::ClientError);
    assert_eq!(at(520).kind(), Kind::Overloaded);

    let closure = classify_fn(|status: StatusCode, _: &HeaderMap| {
        (status == StatusCode::BAD_REQUEST).then_some(Kind::RateLimited)
    });
    let verdict =
        closure.classify_response(StatusCode::BAD_REQUEST, &headers(&[("retry-after", "2")]));
    assert_eq!(verdict.kind(), Kind::RateLimited);
    assert_eq!(verdict.retry_after(), Some(Duration::from_secs(2)));
}

#[test]
fn errors_are_judged_from_their_chain() {
    use std::io;
    let timeout: tollgate::BoxError = io::Error::new(io::ErrorKind::TimedOut, "t").into();
    assert_eq!(error_verdict(&*timeout).kind(), Kind::Timeout);
    let wrapped = ClassifiedError::new(Classification::new(Kind::Overloaded), "x".into());
    let outer: tollgate::BoxError = Box::new(wrapped);
    assert_eq!(error_verdict(&*outer).kind(), Kind::Overloaded);
    let other: tollgate::BoxError = "something broke".into();
    assert_eq!(error_verdict(&*other).kind(), Kind::Connection);
}

#[tokio::test]
async fn layer_stamps_verdict_and_hands_the_error_body_back_intact() {
    let body = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
    let inner = service_fn(move |_req: http::Request<()>| async move {
        let response = Response::builder()
            .status(429)
            .header("x-ratelimit-remaining-requests", "3")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        Ok::<_, std::convert::Infallible>(response)
    });
    let response = ClassifyLayer::new()
        .layer(inner)
        .oneshot(http::Request::new(()))
        .await
        .unwrap();
    assert_eq!(response_verdict(&response).kind(), Kind::QuotaExhausted);
    assert_eq!(
        response
            .extensions()
            .get::<RateLimitState>()
            .unwrap()
            .requests
            .remaining,
        Some(3)
    );
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(bytes, body.as_bytes());
}

/// A body delivered in chunks, then trailers.
struct Chunked(VecDeque<Frame<Bytes>>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

#[tokio::test]
async fn large_error_bodies_are_read_only_up_to_the_bound_and_replayed_whole() {
    for size in [10, 200 * 1024] {
        let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let expected = payload.clone();
        let inner = service_fn(move |_req: http::Request<()>| {
            let mut frames: VecDeque<Frame<Bytes>> = payload
                .chunks(16 * 1024)
                .map(|c| Frame::data(Bytes::copy_from_slice(c)))
                .collect();
            frames.push_back(Frame::trailers(headers(&[("x-trailer", "yes")])));
            async move {
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(500)
                        .body(Chunked(frames))
                        .unwrap(),
                )
            }
        });
        let response = ClassifyLayer::new()
            .layer(inner)
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(response_verdict(&response).kind(), Kind::ServerError);
        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(
            collected.trailers().unwrap()["x-trailer"],
            "yes",
            "size {size}"
        );
        assert_eq!(collected.to_bytes(), expected, "size {size}");
    }
}
