//! Per-call cost on the success path of each tollgate layer and of the full stack, against the
//! bare service and the nearest equivalents in tower, tower-resilience and governor.
//!
//! `cargo bench -p tollgate-bench --bench overhead`. Read the results as ratios to `bare` in
//! the same run: the machines are noisy, the ratios much less so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tollgate::circuit_breaker::CircuitBreakerLayer;
use tollgate::classify::ClassifyLayer;
use tollgate_bench::layers::*;
use tollgate_bench::{request, CloneRequest, Instant200, NeverRetry};
use tower::{Layer, Service, ServiceExt};

/// `ready().await` + `call().await` on a current-thread runtime, the loop inside one
/// `block_on` so that the runtime's entry cost is not counted.
fn single<S, Req, F>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    mut service: S,
    make: F,
) where
    S: Service<Req> + 'static,
    S::Error: std::fmt::Debug,
    F: Fn() -> Req + Copy,
{
    c.bench_function(&format!("single/{name}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let response = service.ready().await.unwrap().call(make()).await;
                    std::hint::black_box(response.is_ok());
                }
                started.elapsed()
            })
        })
    });
}

/// 64 tasks on a 2-thread runtime sharing clones of one service; time per call.
fn contended<S, Req, F>(c: &mut Criterion, name: &str, service: S, make: F)
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
    Req: Send + 'static,
    F: Fn() -> Req + Copy + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    c.bench_function(&format!("contended/{name}"), |b| {
        b.iter_custom(|iters| {
            let per_task = iters.div_ceil(64);
            let service = service.clone();
            rt.block_on(async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let mut service = service.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                let response = service.ready().await.unwrap().call(make()).await;
                                std::hint::black_box(response.is_ok());
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                started
                    .elapsed()
                    .mul_f64(iters as f64 / (per_task * 64) as f64)
            })
        })
    });
}

fn clone_request() -> CloneRequest {
    CloneRequest(request())
}

fn success_path(c: &mut Criterion) {
    let rt = tollgate_bench::current_thread_runtime();
    // tower's RateLimit and tollgate's timers need a runtime when they are built.
    let _entered = rt.enter();
    let rt = &rt;
    single(c, rt, "bare", Instant200, request);
    single(
        c,
        rt,
        "tower_retry",
        tower::retry::RetryLayer::new(NeverRetry).layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tollgate_retry",
        tollgate_retry().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tower_resilience_retry",
        tr_retry().layer(Instant200),
        clone_request,
    );
    single(
        c,
        rt,
        "tower_rate_limit",
        tower::limit::RateLimitLayer::new(HUGE, Duration::from_secs(1)).layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tollgate_rate_limit",
        tollgate_limit().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tower_resilience_rate_limiter",
        tr_limiter().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tower_concurrency_limit",
        tower::limit::ConcurrencyLimitLayer::new(1024).layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tollgate_concurrency",
        tollgate_concurrency().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tollgate_circuit_breaker",
        tollgate_breaker().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tower_resilience_circuit_breaker",
        tr_breaker().layer(Instant200),
        request,
    );
    single(
        c,
        rt,
        "tollgate_classify",
        ClassifyLayer::new().layer(Instant200),
        request,
    );
    single(c, rt, "tollgate_full_stack", full_stack(), request);

    let governor = governor::RateLimiter::direct(governor::Quota::per_second(
        std::num::NonZeroU32::new(u32::MAX).unwrap(),
    ));
    c.bench_function("single/governor_check", |b| {
        b.iter(|| std::hint::black_box(governor.check().is_ok()))
    });

    let open = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    open.handle().isolate();
    let mut rejecting = open.layer(Instant200);
    c.bench_with_input(
        BenchmarkId::new("single", "tollgate_breaker_rejection"),
        &(),
        |b, _| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let started = Instant::now();
                    for _ in 0..iters {
                        let service = ServiceExt::<http::Request<tollgate_bench::Body>>::ready(
                            &mut rejecting,
                        )
                        .await
                        .unwrap();
                        std::hint::black_box(service.call(request()).await.is_err());
                    }
                    started.elapsed()
                })
            })
        },
    );
}

fn contention(c: &mut Criterion) {
    let rt = tollgate_bench::current_thread_runtime();
    let _entered = rt.enter();
    contended(c, "bare", Instant200, request);
    contended(
        c,
        "tower_retry",
        tower::retry::RetryLayer::new(NeverRetry).layer(Instant200),
        request,
    );
    contended(
        c,
        "tollgate_retry",
        tollgate_retry().layer(Instant200),
        request,
    );
    contended(
        c,
        "tower_resilience_retry",
        tr_retry().layer(Instant200),
        clone_request,
    );
    contended(
        c,
        "tollgate_rate_limit",
        tollgate_limit().layer(Instant200),
        request,
    );
    contended(
        c,
        "tower_resilience_rate_limiter",
        tr_limiter().layer(Instant200),
        request,
    );
    let global = Arc::new(tokio::sync::Semaphore::new(1024));
    contended(
        c,
        "tower_global_concurrency_limit",
        tower::limit::GlobalConcurrencyLimitLayer::with_semaphore(global).layer(Instant200),
        request,
    );
    contended(
        c,
        "tollgate_concurrency",
        tollgate_concurrency().layer(Instant200),
        request,
    );
    contended(
        c,
        "tollgate_circuit_breaker",
        tollgate_breaker().layer(Instant200),
        request,
    );
    contended(
        c,
        "tower_resilience_circuit_breaker",
        tr_breaker().layer(Instant200),
        request,
    );
    contended(c, "tollgate_full_stack", full_stack(), request);
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = success_path, contention
}
criterion_main!(benches);
