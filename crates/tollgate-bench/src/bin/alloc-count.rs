//! Heap allocations per call on the success path, layer by layer and for the full stack, counted
//! by a global allocator that counts (10,000 calls each, after 1,000 to warm up; the bare
//! service's own allocations subtracted).
//!
//! Run: `cargo run --release -p tollgate-bench --bin alloc-count`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

use tollgate::classify::ClassifyLayer;
use tollgate_bench::layers::*;
use tollgate_bench::{request, Body, Instant200};
use tower::{Layer, Service, ServiceExt};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// Counting only: every call goes to the system allocator as it came.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CALLS: u64 = 10_000;

fn per_call<S>(mut service: S) -> f64
where
    S: Service<http::Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for _ in 0..1_000 {
            let _ = service.ready().await.expect("ready").call(request()).await;
        }
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        for _ in 0..CALLS {
            let response = service.ready().await.expect("ready").call(request()).await;
            std::hint::black_box(response.is_ok());
        }
        (ALLOCATIONS.load(Ordering::Relaxed) - before) as f64 / CALLS as f64
    })
}

fn main() {
    let bare = per_call(Instant200);
    println!("| layer | allocations per call (beyond the bare service's {bare:.1}) |");
    println!("|---|---|");
    let rows = [
        ("retry", per_call(tollgate_retry().layer(Instant200))),
        ("rate limit (requests)", per_call(tollgate_limit().layer(Instant200))),
        ("concurrency limit", per_call(tollgate_concurrency().layer(Instant200))),
        ("circuit breaker", per_call(tollgate_breaker().layer(Instant200))),
        ("classify", per_call(ClassifyLayer::new().layer(Instant200))),
        ("full stack", per_call(full_stack())),
    ];
    for (name, count) in rows {
        println!("| {name} | {:.2} |", count - bare);
    }
}
