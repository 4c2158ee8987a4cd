//! Streams, measured: what watching a `text/event-stream` answer costs.
//!
//! 1. Throughput: a 10 MB stream of 1 KB events over loopback HTTP/1 (a hyper server writing it
//!    in 16 KiB frames), read to its end by a bare hyper-util client, through `ClassifyLayer`
//!    with the presets' stream settings (the first-token gate and the timers), then through the
//!    whole standard stack. Rotating runs, the median of each.
//!
//! The stack is told a request limit far above what is sent (fixed), so that the figures are the
//! streams' cost and not the adaptive limiter finding the rate from its initial 10 a second.
//!
//! 2. Time to first token on loopback: the mock streaming at once, 1,000 requests one after the
//!    other, from sending the request to the first content event, with a bare hyper-util client
//!    and through the standard stack (Anthropic preset); p50 and p99 of each and of the
//!    difference.
//!
//! Run: `cargo run --release -p tollgate-bench --bin stream-bench`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tollgate::classify::ClassifyLayer;
use tollgate::stack::Policy;
use tollgate::Provider;
use tollgate_mock::{MockConfig, MockServer};
use tower::{Layer, ServiceExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const STREAM_BYTES: usize = 10 * 1024 * 1024;
const EVENT_BYTES: usize = 1024;
const FRAME_BYTES: usize = 16 * 1024;
const RUNS: usize = 41;

/// A body handing out `stream` in frames of [`FRAME_BYTES`], without copying.
struct Frames {
    stream: Bytes,
    at: usize,
}

impl Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.at >= self.stream.len() {
            return Poll::Ready(None);
        }
        let end = (self.at + FRAME_BYTES).min(self.stream.len());
        let frame = self.stream.slice(self.at..end);
        self.at = end;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

fn events() -> Bytes {
    let text = "x".repeat(EVENT_BYTES - 80);
    let event = format!(
        "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"delta\":{{\"text\":\"{text}\"}}}}\n\n"
    );
    let mut stream = String::with_capacity(STREAM_BYTES + EVENT_BYTES);
    while stream.len() < STREAM_BYTES {
        stream.push_str(&event);
    }
    stream.push_str("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(stream)
}

fn answer(stream: Bytes) -> Response<Frames> {
    let mut response = Response::new(Frames { stream, at: 0 });
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

/// Reads a body to its end; returns its length.
async fn drain<B: Body<Data = Bytes>>(body: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut body = std::pin::pin!(body);
    let mut total = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("no error").into_data() {
            total += data.len();
        }
    }
    total
}

// One thread for the client, and (in `serve`) one for the server: each its own core, so that
// the figures do not depend on how a shared runtime happens to schedule the two.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    println!("## Streams\n");
    throughput().await?;
    time_to_first_token().await
}

async fn throughput() -> Result<(), BoxError> {
    let stream = events();
    let addr = serve(stream.clone()).await?;
    let url = format!("http://{addr}/v1/messages");
    let request = || {
        Request::post(url.as_str())
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("a valid request")
    };
    let policy = generous(Policy::preset(Provider::Anthropic));
    let client = tollgate_e2e::http_client();
    let classify = ClassifyLayer::new()
        .streams(policy.streams)
        .layer(client.clone());
    let full = policy.layer()?.layer(client.clone());
    // Each run reads the stream three ways, in a rotating order; the median of each is kept.
    let mut times: [Vec<Duration>; 3] = Default::default();
    for run in 0..RUNS {
        for way in 0..3 {
            let way = (way + run) % 3;
            let started = Instant::now();
            let body = match way {
                0 => drain(client.clone().oneshot(request()).await?.into_body()).await,
                1 => drain(classify.clone().oneshot(request()).await?.into_body()).await,
                _ => drain(full.clone().oneshot(request()).await?.into_body()).await,
            };
            assert!(body >= STREAM_BYTES);
            times[way].push(started.elapsed());
        }
    }
    let median = |times: &mut Vec<Duration>| {
        times.sort_unstable();
        times[times.len() / 2]
    };
    let [bare, watched, stacked] = &mut times;
    let (bare, watched, stacked) = (median(bare), median(watched), median(stacked));
    let rate = |time: Duration| STREAM_BYTES as f64 / 1e6 / time.as_secs_f64();
    println!(
        "A {} MB stream of {} B events over loopback HTTP/1 (a hyper server writing it in {} KiB \
         frames), read by hyper-util; the median of {RUNS} runs of each, in rotating order:\n",
        STREAM_BYTES / (1024 * 1024),
        EVENT_BYTES,
        FRAME_BYTES / 1024
    );
    println!("| client | MB/s | x bare |");
    println!("|---|---|---|");
    for (name, time) in [
        ("bare hyper-util", bare),
        ("ClassifyLayer (preset streams: gate, timers)", watched),
        ("standard stack (Anthropic preset)", stacked),
    ] {
        println!(
            "| {name} | {:.0} | {:.2} |",
            rate(time),
            bare.as_secs_f64() / time.as_secs_f64()
        );
    }
    println!();
    Ok(())
}

/// A server on loopback answering every request with `stream`, in frames.
async fn serve(stream: Bytes) -> Result<std::net::SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        let runtime = tollgate_bench::current_thread_runtime();
        runtime.block_on(accept(listener, stream));
    });
    Ok(addr)
}

async fn accept(listener: std::net::TcpListener, stream: Bytes) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    {
        while let Ok((socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let stream = stream.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_| {
                    let stream = stream.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(stream)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(socket), service)
                    .await;
            });
        }
    }
}

async fn time_to_first_token() -> Result<(), BoxError> {
    const REQUESTS: usize = 1_000;
    let mock = MockServer::spawn(MockConfig {
        output_share: Some((0.02, 0.02)),
        ..MockConfig::default()
    })
    .await?;
    let url = format!("{}/v1/messages", mock.url());
    let request = || {
        let body = serde_json::json!({
            "model": "claude-haiku-4-5", "max_tokens": 100, "stream": true,
            "messages": [{"role": "user", "content": "Hi"}],
        });
        let mut request = Request::post(url.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        let _ = Provider::Anthropic.authorize(&mut request, "sk-bench");
        request
    };
    let client = tollgate_e2e::http_client();
    let stack = generous(Policy::preset(Provider::Anthropic))
        .layer()?
        .layer(client.clone());
    // As a fresh process meets it: nothing told, the adaptive limiter starting at 10 a second.
    let defaults = Policy::preset(Provider::Anthropic)
        .layer()?
        .layer(client.clone());
    let (mut bare, mut stacked, mut fresh) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..REQUESTS {
        let started = Instant::now();
        let response = client.clone().oneshot(request()).await?;
        let mut body = response.into_body();
        until_first_token(&mut body).await;
        bare.push(started.elapsed());
        drain_rest(body).await;

        let started = Instant::now();
        let response = stack.clone().oneshot(request()).await?;
        let mut body = response.into_body();
        until_first_token(&mut body).await;
        stacked.push(started.elapsed());
        drain_rest(body).await;

        let started = Instant::now();
        let response = defaults.clone().oneshot(request()).await?;
        let mut body = response.into_body();
        until_first_token(&mut body).await;
        fresh.push(started.elapsed());
        drain_rest(body).await;
    }
    bare.sort_unstable();
    stacked.sort_unstable();
    fresh.sort_unstable();
    let at = |times: &[Duration], p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "Time to first token on loopback: the mock streaming at once, {REQUESTS} requests one \
         after the other, from the request to the frame that holds the first content event.\n"
    );
    println!("| client | p50 us | p99 us |");
    println!("|---|---|---|");
    for (name, times) in [
        ("bare hyper-util", &bare),
        ("standard stack, told a limit", &stacked),
        ("standard stack, defaults (adaptive)", &fresh),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} |",
            us(at(times, 0.5)),
            us(at(times, 0.99))
        );
    }
    println!(
        "| added by the stack told a limit | {:.0} | {:.0} |",
        us(at(&stacked, 0.5)) - us(at(&bare, 0.5)),
        us(at(&stacked, 0.99)) - us(at(&bare, 0.99))
    );
    mock.shutdown().await;
    Ok(())
}

/// The policy with a request limit far above what the benchmark sends: the figures are the
/// stream's cost, not the adaptive limiter finding the rate from its initial 10 a second.
fn generous(mut policy: Policy) -> Policy {
    policy.limits.requests = Some(tollgate::rate_limit::Rate::per_second(100_000));
    policy.limits.adaptive = None;
    policy
}

/// Reads frames until one holds the first content event.
async fn until_first_token<B: Body<Data = Bytes> + Unpin>(body: &mut B) {
    while let Some(Ok(frame)) = body.frame().await {
        if frame
            .data_ref()
            .is_some_and(|data| memchr::memmem::find(data, b"content_block_delta").is_some())
        {
            return;
        }
    }
}

async fn drain_rest<B: Body + Unpin>(mut body: B) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            break;
        }
    }
}
