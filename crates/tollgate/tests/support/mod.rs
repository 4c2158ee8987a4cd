//! A scripted in-memory provider for layer tests: answers from a script, records when it was
//! called, and can hang.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use tokio::time::Instant;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Step {
    Status(u16, Vec<(&'static str, String)>),
    Fail(&'static str),
    Hang,
    /// Answers with this status after this long.
    Slow(u16, std::time::Duration),
    /// Answers with this status and JSON body.
    Body(u16, String),
    /// Answers with this status, these headers and this body.
    Full(u16, Vec<(&'static str, String)>, String),
}

pub fn status(code: u16) -> Step {
    Step::Status(code, Vec::new())
}

pub fn with_header(code: u16, name: &'static str, value: impl Into<String>) -> Step {
    Step::Status(code, vec![(name, value.into())])
}

/// A provider answering from a script (then 200 forever), recording the instant of each call.
#[derive(Clone, Default)]
pub struct Scripted {
    script: Arc<Mutex<VecDeque<Step>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl Scripted {
    pub fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Scripted {
            script: Arc::new(Mutex::new(steps.into_iter().collect())),
            calls: Arc::default(),
        }
    }

    pub fn calls(&self) -> Vec<Instant> {
        self.calls.lock().unwrap().clone()
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }
}

impl<B> tower::Service<Request<B>> for Scripted {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<B>) -> Self::Future {
        self.calls.lock().unwrap().push(Instant::now());
        let step = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Step::Status(200, Vec::new()));
        Box::pin(async move {
            match step {
                Step::Status(code, headers) => {
                    let mut response = Response::new(format!("status {code}"));
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    Ok(response)
                }
                Step::Fail(message) => {
                    Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, message).into())
                }
                Step::Full(code, headers, body) => {
                    let mut response = Response::new(body);
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    for (name, value) in headers {
                        response.headers_mut().insert(name, value.parse().unwrap());
                    }
                    Ok(response)
                }
                Step::Body(code, body) => {
                    let mut response = Response::new(body);
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok(response)
                }
                Step::Slow(code, delay) => {
                    tokio::time::sleep(delay).await;
                    let mut response = Response::new(String::new());
                    *response.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok(response)
                }
                Step::Hang => {
                    std::future::pending::<Infallible>().await;
                    unreachable!()
                }
            }
        })
    }
}

pub fn request() -> Request<String> {
    Request::post("http://127.0.0.1/v1/chat/completions")
        .body("{}".to_owned())
        .unwrap()
}

/// What a [`LeakyProvider`]'s 429 says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hints {
    /// `Retry-After: 1`: whole seconds, as nginx's `limit_req` with a retry header.
    RetryAfterSecond,
    /// `retry-after-ms` with the exact wait, as OpenAI sends.
    RetryAfterMs,
    /// Nothing at all.
    None,
}

/// A provider that enforces `rate` requests per second with a burst, as a leaky bucket (nginx's
/// `limit_req`): over the limit it answers 429 with only `Retry-After: 1`, no rate-limit headers.
/// Optionally it also meters tokens per minute (reporting them in OpenAI's headers), refuses a
/// share of requests at random whatever the rate (load shedding), and answers after a delay.
#[derive(Clone)]
pub struct LeakyProvider {
    state: Arc<Mutex<Leaky>>,
    pub answers: Arc<Mutex<Vec<(Instant, u16)>>>,
}

struct Leaky {
    rate: f64,
    burst: f64,
    level: f64,
    updated: Option<Instant>,
    hints: Hints,
    /// Tokens: (per second, capacity, level, cost of each request).
    tokens: Option<(f64, f64, f64, f64)>,
    /// Random refusals whatever the rate: (share answered 429 without hint, share answered 503).
    noise: Option<(f64, f64)>,
    rng: u64,
    latency: std::time::Duration,
    /// Report the request limit in `x-ratelimit-{limit,remaining}-requests`.
    report_requests: bool,
}

impl LeakyProvider {
    pub fn new(rate: f64, burst: f64) -> Self {
        LeakyProvider {
            state: Arc::new(Mutex::new(Leaky {
                rate,
                burst,
                level: burst,
                updated: None,
                hints: Hints::RetryAfterSecond,
                tokens: None,
                noise: None,
                rng: 0x9E37_79B9_7F4A_7C15,
                latency: std::time::Duration::ZERO,
                report_requests: false,
            })),
            answers: Arc::default(),
        }
    }

    /// What its 429s say (default `Retry-After: 1`).
    pub fn hints(self, hints: Hints) -> Self {
        self.state.lock().unwrap().hints = hints;
        self
    }

    /// Also meters `per_minute` tokens (a bucket of `capacity`), each request costing `cost`,
    /// and reports them in `x-ratelimit-{limit,remaining}-tokens` on every answer.
    pub fn tokens(self, per_minute: f64, capacity: f64, cost: f64) -> Self {
        self.state.lock().unwrap().tokens = Some((per_minute / 60.0, capacity, capacity, cost));
        self
    }

    /// Refuses `limited` of the requests with a bare 429 and answers `unavailable` of them with
    /// 503, at random (seeded) whatever the rate.
    pub fn noise(self, limited: f64, unavailable: f64) -> Self {
        self.state.lock().unwrap().noise = Some((limited, unavailable));
        self
    }

    /// Reports its request limit per minute, and what remains, on every answer (as OpenAI).
    pub fn report_requests(self) -> Self {
        self.state.lock().unwrap().report_requests = true;
        self
    }

    /// Answers after `latency`.
    pub fn latency(self, latency: std::time::Duration) -> Self {
        self.state.lock().unwrap().latency = latency;
        self
    }

    pub fn set_rate(&self, rate: f64) {
        self.state.lock().unwrap().rate = rate;
    }

    pub fn count(&self, status: u16) -> usize {
        self.answers
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| *s == status)
            .count()
    }

    /// Calls it received.
    pub fn received(&self) -> usize {
        self.answers.lock().unwrap().len()
    }
}

impl Leaky {
    /// A uniform draw in [0, 1) (xorshift: deterministic, no dependency).
    fn draw(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    fn answer(&mut self, now: Instant) -> (u16, Vec<(&'static str, String)>) {
        if let Some(updated) = self.updated {
            let elapsed = (now - updated).as_secs_f64();
            self.level = (self.level + elapsed * self.rate).min(self.burst);
            if let Some((per_sec, capacity, level, _)) = &mut self.tokens {
                *level = (*level + elapsed * *per_sec).min(*capacity);
            }
        }
        self.updated = Some(now);
        if let Some((limited, unavailable)) = self.noise {
            let draw = self.draw();
            if draw < limited {
                return (429, Vec::new());
            }
            if draw < limited + unavailable {
                return (503, Vec::new());
            }
        }
        let token_wait = match self.tokens {
            Some((per_sec, _, level, cost)) if level < cost - 1e-9 => (cost - level) / per_sec,
            _ => 0.0,
        };
        let request_wait = if self.level >= 1.0 - 1e-9 {
            0.0
        } else {
            (1.0 - self.level) / self.rate
        };
        let status = if request_wait == 0.0 && token_wait == 0.0 {
            self.level -= 1.0;
            if let Some((_, _, level, cost)) = &mut self.tokens {
                *level -= *cost;
            }
            200
        } else {
            429
        };
        let mut headers = Vec::new();
        if self.report_requests {
            let limit = (self.rate * 60.0).round() as u64;
            headers.push(("x-ratelimit-limit-requests", limit.to_string()));
            let remaining = self.level.max(0.0).floor() as u64;
            headers.push(("x-ratelimit-remaining-requests", remaining.to_string()));
        }
        if let Some((per_sec, _, level, _)) = self.tokens {
            let limit = (per_sec * 60.0).round() as u64;
            headers.push(("x-ratelimit-limit-tokens", limit.to_string()));
            let remaining = level.max(0.0).floor() as u64;
            headers.push(("x-ratelimit-remaining-tokens", remaining.to_string()));
        }
        if status == 429 {
            let wait = request_wait.max(token_wait);
            match self.hints {
                Hints::RetryAfterSecond => headers.push(("retry-after", "1".to_owned())),
                Hints::RetryAfterMs => {
                    let ms = (wait * 1000.0).ceil().max(1.0) as u64;
                    headers.push(("retry-after-ms", ms.to_string()));
                }
                Hints::None => {}
            }
        }
        (status, headers)
    }
}

impl<B> tower::Service<Request<B>> for LeakyProvider {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        let (status, headers) = state.answer(now);
        let latency = state.latency;
        drop(state);
        self.answers.lock().unwrap().push((now, status));
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in headers {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            Ok(response)
        })
    }
}
