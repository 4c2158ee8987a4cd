//! Heap allocations per call on the success path, layer by layer and for the full stack, counted
//! by dhat's global allocator (10,000 calls each, after 1,000 to warm up; the bare
//! service's own allocations subtracted).
//!
//! Run: `cargo run --release -p tollgate-bench --bin alloc-count`.

use tollgate::classify::ClassifyLayer;
use tollgate_bench::layers::*;
use tollgate_bench::{request, Body, Instant200};
use tower::{Layer, Service, ServiceExt};

// dhat's allocator counts every block the program allocates.
#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

fn allocations() -> u64 {
    dhat::HeapStats::get().total_blocks
}

const CALLS: u64 = 10_000;

fn per_call<S>(mut service: S) -> f64
where
    S: Service<http::Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let runtime = tollgate_bench::current_thread_runtime();
    runtime.block_on(async {
        for _ in 0..1_000 {
            let _ = service.ready().await.expect("ready").call(request()).await;
        }
        let before = allocations();
        for _ in 0..CALLS {
            let response = service.ready().await.expect("ready").call(request()).await;
            std::hint::black_box(response.is_ok());
        }
        (allocations() - before) as f64 / CALLS as f64
    })
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let bare = per_call(Instant200);
    println!("| layer | allocations per call (beyond the bare service's {bare:.1}) |");
    println!("|---|---|");
    let rows = [
        ("retry", per_call(tollgate_retry().layer(Instant200))),
        (
            "rate limit (requests)",
            per_call(tollgate_limit().layer(Instant200)),
        ),
        (
            "concurrency limit",
            per_call(tollgate_concurrency().layer(Instant200)),
        ),
        (
            "circuit breaker",
            per_call(tollgate_breaker().layer(Instant200)),
        ),
        ("classify", per_call(ClassifyLayer::new().layer(Instant200))),
        ("full stack", per_call(full_stack())),
    ];
    for (name, count) in rows {
        println!("| {name} | {:.2} |", count - bare);
    }
    // Each layer's future holds the one inside it: the whole is moved on every call.
    let mut stack = full_stack();
    let future = stack.call(request());
    println!(
        "\nThe full stack's response future: {} bytes.",
        std::mem::size_of_val(&future)
    );
    let sizes = [
        (
            "retry",
            std::mem::size_of_val(&tollgate_retry().layer(Instant200).call(request())),
        ),
        (
            "limit",
            std::mem::size_of_val(&tollgate_limit().layer(Instant200).call(request())),
        ),
        (
            "breaker",
            std::mem::size_of_val(&tollgate_breaker().layer(Instant200).call(request())),
        ),
        (
            "classify",
            std::mem::size_of_val(&ClassifyLayer::new().layer(Instant200).call(request())),
        ),
        ("request", std::mem::size_of::<http::Request<Body>>()),
        ("stack service", std::mem::size_of_val(&stack)),
    ];
    println!("{sizes:?}");
}
