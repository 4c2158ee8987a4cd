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

/// A provider that enforces `rate` requests per second with a burst, as a leaky bucket (nginx's
/// `limit_req`): over the limit it answers 429 with only `Retry-After: 1`, no rate-limit headers.
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
}

impl LeakyProvider {
    pub fn new(rate: f64, burst: f64) -> Self {
        LeakyProvider {
            state: Arc::new(Mutex::new(Leaky {
                rate,
                burst,
                level: burst,
                updated: None,
            })),
            answers: Arc::default(),
        }
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
}

impl<B> tower::Service<Request<B>> for LeakyProvider {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<B>) -> Self::Future {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap();
        if let Some(updated) = state.updated {
            state.level =
                (state.level + (now - updated).as_secs_f64() * state.rate).min(state.burst);
        }
        state.updated = Some(now);
        let status = if state.level >= 1.0 - 1e-9 {
            state.level -= 1.0;
            200
        } else {
            429
        };
        drop(state);
        self.answers.lock().unwrap().push((now, status));
        let mut response = Response::new(String::new());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if status == 429 {
            response
                .headers_mut()
                .insert("retry-after", "1".parse().unwrap());
        }
        std::future::ready(Ok(response))
    }
}
