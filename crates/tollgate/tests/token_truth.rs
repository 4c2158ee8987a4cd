//! Token limits as providers meter them: input, output and combined, reserved at admission and
//! settled to the answer's `usage`; daily quotas refused at once with their reset. Paused time.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use support::{Scripted, Step};
use tollgate::classify::LimitKind;
use tollgate::rate_limit::{
    Rate, RateLimitError, RateLimitHandle, RateLimitLayer, Refusal, Snapshot,
};
use tower::{Layer, Service, ServiceExt};

/// A chat request with this prompt and `max_tokens`.
fn chat(prompt_chars: usize, max_tokens: u64) -> Request<String> {
    let body = serde_json::json!({
        "model": "m",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "x".repeat(prompt_chars)}],
    });
    Request::post("http://127.0.0.1/v1/messages")
        .body(body.to_string())
        .unwrap()
}

fn anthropic_answer(input: u64, output: u64, cache_read: u64) -> Step {
    let body = serde_json::json!({
        "content": [{"type": "text", "text": "hi"}],
        "usage": {"input_tokens": input, "output_tokens": output,
                  "cache_read_input_tokens": cache_read, "cache_creation_input_tokens": 0},
    });
    Step::Body(200, body.to_string())
}

type Answer = http::Response<tollgate::rate_limit::RateLimitBody<String>>;

/// Sends `request`; the answer's body is not read.
async fn call<S>(service: &mut S, request: Request<String>) -> Result<Answer, S::Error>
where
    S: Service<Request<String>, Response = Answer>,
{
    ServiceExt::<Request<String>>::ready(service)
        .await?
        .call(request)
        .await
}

/// Sends `request` and reads the answer's body to the end; returns the status.
async fn send<S>(service: &mut S, request: Request<String>) -> u16
where
    S: Service<Request<String>, Response = Answer>,
    S::Error: std::fmt::Debug,
{
    let response = call(service, request).await.unwrap();
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

fn levels(handle: &RateLimitHandle) -> Snapshot {
    handle.snapshot()
}

fn anthropic_limits() -> RateLimitLayer {
    RateLimitLayer::builder()
        .input_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .output_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .cache_reads_count(false)
        .fixed()
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_refund_frees_exactly_the_unused_output() {
    let layer = anthropic_limits();
    let handle = layer.handle();
    let provider = Scripted::new([anthropic_answer(25, 100, 0)]);
    let mut service = layer.layer(provider);
    let response = call(&mut service, chat(100, 400)).await.unwrap();
    // Reserved at admission: the prompt's estimate (100 chars / 4) and the whole max_tokens.
    let reserved = levels(&handle);
    assert_eq!(reserved.input_tokens_available, Some(2_000 - 25));
    assert_eq!(reserved.output_tokens_available, Some(2_000 - 400));
    response.into_body().collect().await.unwrap();
    let settled = levels(&handle);
    assert_eq!(
        settled.output_tokens_available,
        Some(2_000 - 100),
        "300 given back"
    );
    assert_eq!(settled.input_tokens_available, Some(2_000 - 25));
}

#[tokio::test(start_paused = true)]
async fn excess_usage_is_charged_and_cache_reads_are_not() {
    let layer = anthropic_limits();
    let handle = layer.handle();
    // The prompt was estimated at 25 tokens; the provider counted 325, of which 200 were read
    // from its cache (free against Anthropic's input limit): 100 more than the estimate.
    let provider = Scripted::new([anthropic_answer(125, 10, 200)]);
    let mut service = layer.layer(provider);
    assert_eq!(send(&mut service, chat(100, 400)).await, 200);
    let settled = levels(&handle);
    assert_eq!(settled.input_tokens_available, Some(2_000 - 125));
    assert_eq!(settled.output_tokens_available, Some(2_000 - 10));

    // Where cache reads count (OpenAI), the same answer charges them.
    let layer = RateLimitLayer::builder()
        .input_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .fixed()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(Scripted::new([anthropic_answer(125, 10, 200)]));
    send(&mut service, chat(100, 400)).await;
    assert_eq!(levels(&handle).input_tokens_available, Some(2_000 - 325));
}

#[tokio::test(start_paused = true)]
async fn a_refused_attempt_is_charged_no_tokens_and_a_failed_one_no_output() {
    let layer = RateLimitLayer::builder()
        .tokens(Rate::per_minute(60_000).with_burst(2_000))
        .input_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .output_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .fixed()
        .build()
        .unwrap();
    let handle = layer.handle();
    let provider = Scripted::new([
        Step::Body(
            429,
            r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#.into(),
        ),
        Step::Body(500, r#"{"error":{"message":"boom"}}"#.into()),
    ]);
    let mut service = layer.layer(provider);
    assert_eq!(send(&mut service, chat(400, 400)).await, 429);
    let after_429 = levels(&handle);
    assert_eq!(after_429.tokens_available, Some(2_000 - 400));
    assert_eq!(after_429.input_tokens_available, Some(2_000));
    assert_eq!(after_429.output_tokens_available, Some(2_000));
    assert_eq!(send(&mut service, chat(400, 400)).await, 500);
    let after_500 = levels(&handle);
    assert_eq!(after_500.output_tokens_available, Some(2_000));
    assert_eq!(
        after_500.input_tokens_available,
        Some(2_000 - 100),
        "the prompt stays"
    );
    // The combined limit counts admissions as OpenAI does: max(100, 400) each, never corrected.
    assert_eq!(after_500.tokens_available, Some(2_000 - 800));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_body_leaves_the_reservation_standing() {
    let layer = anthropic_limits();
    let handle = layer.handle();
    let mut service = layer.layer(Scripted::new([anthropic_answer(25, 100, 0)]));
    let response = call(&mut service, chat(100, 400)).await.unwrap();
    drop(response);
    assert_eq!(levels(&handle).output_tokens_available, Some(2_000 - 400));
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_one_limit_takes_nothing_from_the_others() {
    let layer = RateLimitLayer::builder()
        .requests(Rate::per_minute(600).with_burst(10))
        .input_tokens(Rate::per_minute(60_000).with_burst(2_000))
        .output_tokens(Rate::per_minute(6_000).with_burst(500))
        .max_wait(Duration::from_millis(100))
        .fixed()
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut service = layer.layer(Scripted::default());
    // The first takes 400 of the 500 output tokens; the second would wait 3 s for them.
    let first = call(&mut service, chat(40, 400)).await.unwrap();
    let before = levels(&handle);
    let refused = call(&mut service, chat(40, 400)).await.unwrap_err();
    let refusal = refused.downcast_ref::<RateLimitError>().unwrap().refusal();
    assert!(
        matches!(
            refusal,
            Refusal::WouldWait {
                limit: LimitKind::OutputTokens,
                ..
            }
        ),
        "{refusal:?}"
    );
    let after = levels(&handle);
    assert_eq!(after.requests_available, before.requests_available);
    assert_eq!(after.input_tokens_available, before.input_tokens_available);
    assert_eq!(
        after.output_tokens_available,
        before.output_tokens_available
    );
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn the_output_limit_paces_by_real_usage_not_max_tokens() {
    // 6,000 output tokens per minute (100 a second), max_tokens 400, answers of 40: paced by the
    // reservation alone, 20 requests would take 80 s; settled to the usage, they take 8 s.
    let layer = RateLimitLayer::builder()
        .output_tokens(Rate::per_minute(6_000).with_burst(400))
        .fixed()
        .build()
        .unwrap();
    let provider = Scripted::new((0..20).map(|_| anthropic_answer(10, 40, 0)));
    let mut service = layer.layer(provider.clone());
    let start = tokio::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(send(&mut service, chat(40, 400)).await, 200);
    }
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(7_600) && took >= Duration::from_millis(7_500),
        "20 answers of 40 tokens at 100/s after a burst of 400: {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_daily_quota_refuses_at_once_until_it_resets() {
    let layer = RateLimitLayer::builder()
        .requests_per_day(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let provider = Scripted::default();
    let mut service = layer.layer(provider.clone());
    for _ in 0..3 {
        assert_eq!(send(&mut service, chat(4, 10)).await, 200);
    }
    let resets_in = levels(&handle).day_resets_in.unwrap();
    assert!(resets_in > Duration::ZERO && resets_in <= Duration::from_secs(24 * 3600));
    assert_eq!(levels(&handle).requests_left_today, Some(0));
    let refused = call(&mut service, chat(4, 10)).await.unwrap_err();
    let error = refused.downcast_ref::<RateLimitError>().unwrap();
    assert_eq!(
        error.refusal(),
        Refusal::DailyQuotaSpent {
            limit: LimitKind::RequestsPerDay,
            resets_in
        }
    );
    assert!(error.to_string().contains("resets in"), "{error}");
    assert_eq!(provider.call_count(), 3, "nothing sent");
    tokio::time::advance(resets_in).await;
    assert_eq!(send(&mut service, chat(4, 10)).await, 200);
    assert_eq!(levels(&handle).requests_left_today, Some(2));
}

#[tokio::test(start_paused = true)]
async fn the_daily_token_quota_counts_real_usage() {
    let layer = RateLimitLayer::builder()
        .tokens_per_day(1_000)
        .build()
        .unwrap();
    let handle = layer.handle();
    // Each reserves max(prompt, 400) = 400 and uses 10 + 90 = 100.
    let provider = Scripted::new((0..10).map(|_| anthropic_answer(10, 90, 0)));
    let mut service = layer.layer(provider.clone());
    for _ in 0..7 {
        assert_eq!(send(&mut service, chat(40, 400)).await, 200);
    }
    assert_eq!(levels(&handle).tokens_left_today, Some(300));
    // 300 left: a request reserving 400 does not fit today.
    let refused = call(&mut service, chat(40, 400)).await.unwrap_err();
    assert!(matches!(
        refused.downcast_ref::<RateLimitError>().unwrap().refusal(),
        Refusal::DailyQuotaSpent {
            limit: LimitKind::TokensPerDay,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn input_and_output_limits_hold_ten_seconds_by_default() {
    let layer = RateLimitLayer::builder()
        .output_tokens(Rate::per_minute(60_000))
        .input_tokens(Rate::per_minute(30_000))
        .tokens(Rate::per_minute(60_000))
        .build()
        .unwrap();
    let snapshot = layer.handle().snapshot();
    assert_eq!(snapshot.output_tokens_available, Some(10_000));
    assert_eq!(snapshot.input_tokens_available, Some(5_000));
    assert_eq!(
        snapshot.tokens_available,
        Some(100),
        "a tenth of a second, as before"
    );
}

#[tokio::test(start_paused = true)]
async fn each_bucket_learns_from_its_own_headers() {
    let layer = anthropic_limits();
    let handle = layer.handle();
    let provider = Scripted::new([Step::Status(
        200,
        vec![
            ("anthropic-ratelimit-output-tokens-limit", "60000".into()),
            ("anthropic-ratelimit-output-tokens-remaining", "300".into()),
            ("anthropic-ratelimit-input-tokens-limit", "60000".into()),
            ("anthropic-ratelimit-input-tokens-remaining", "1000".into()),
            // The combined headers restate the stricter of the two: not a limit of its own.
            ("anthropic-ratelimit-tokens-limit", "60000".into()),
            ("anthropic-ratelimit-tokens-remaining", "300".into()),
        ],
    )]);
    let mut service = layer.layer(provider);
    send(&mut service, chat(4, 10)).await;
    let learned = levels(&handle);
    assert_eq!(learned.output_tokens_available, Some(300));
    assert_eq!(learned.input_tokens_available, Some(1_000));
    assert_eq!(learned.tokens_available, None, "no combined bucket adopted");
}

#[tokio::test(start_paused = true)]
async fn a_providers_daily_429_refuses_the_next_requests_without_sending_them() {
    let body = r#"{"error":{"message":"Rate limit reached for model `llama` on requests per day (RPD): Limit 1000, Used 1000, Requested 1.","type":"requests","code":"rate_limit_exceeded"}}"#;
    let provider = Scripted::new([Step::Full(
        429,
        vec![("retry-after", "3600".into())],
        body.into(),
    )]);
    let mut service = tower::ServiceBuilder::new()
        .layer(RateLimitLayer::builder().build().unwrap())
        .layer(tollgate::classify::ClassifyLayer::new())
        .service(provider.clone());
    let first = ServiceExt::<Request<String>>::ready(&mut service)
        .await
        .unwrap()
        .call(chat(4, 10))
        .await
        .unwrap();
    assert_eq!(first.status(), 429);
    let refused = ServiceExt::<Request<String>>::ready(&mut service)
        .await
        .unwrap()
        .call(chat(4, 10))
        .await
        .unwrap_err();
    assert_eq!(
        refused.downcast_ref::<RateLimitError>().unwrap().refusal(),
        Refusal::DailyQuotaSpent {
            limit: LimitKind::RequestsPerDay,
            resets_in: Duration::from_secs(3600)
        }
    );
    assert_eq!(provider.call_count(), 1, "the second was not sent");
    tokio::time::advance(Duration::from_secs(3600)).await;
    let later = ServiceExt::<Request<String>>::ready(&mut service)
        .await
        .unwrap()
        .call(chat(4, 10))
        .await
        .unwrap();
    assert_eq!(later.status(), 200);
}
