//! Streamed answers (`"stream": true`): server-sent events in OpenAI's and Anthropic's shapes,
//! one content event per output token, with the stream faults drawn from the seed.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{StreamFaultMix, StreamFaults};

/// A fault inside a stream, after its `200` head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFault {
    /// An error event (`overloaded_error` / a server error chunk) before the first token.
    ErrorBeforeFirstToken,
    /// The same after a few tokens.
    ErrorAfterFirstToken,
    /// Nothing after the head for [`StreamFaults::stall`].
    StallBeforeFirstToken,
    /// Nothing after a few tokens for [`StreamFaults::stall`].
    StallMidStream,
    /// The connection closes after a few tokens.
    DisconnectMidStream,
    /// The last event is cut short: no end event, no blank line after it.
    TruncatedFinalEvent,
    /// The first token comes after [`StreamFaults::first_token_delay`].
    SlowFirstToken,
}

/// Draws the same number of values whatever the outcome, so one stream's fault does not shift
/// the draws of the requests after it.
pub(crate) fn draw(rng: &mut impl Rng, faults: &StreamFaults) -> Option<StreamFault> {
    let roll: f64 = rng.random();
    let pick: u32 = rng.random();
    if roll >= faults.rate {
        return None;
    }
    let StreamFaultMix {
        error_before_first_token,
        error_after_first_token,
        stall_before_first_token,
        stall_mid_stream,
        disconnect_mid_stream,
        truncated_final_event,
        slow_first_token,
    } = faults.mix;
    let weighted = [
        (error_before_first_token, StreamFault::ErrorBeforeFirstToken),
        (error_after_first_token, StreamFault::ErrorAfterFirstToken),
        (stall_before_first_token, StreamFault::StallBeforeFirstToken),
        (stall_mid_stream, StreamFault::StallMidStream),
        (disconnect_mid_stream, StreamFault::DisconnectMidStream),
        (truncated_final_event, StreamFault::TruncatedFinalEvent),
        (slow_first_token, StreamFault::SlowFirstToken),
    ];
    let total: u64 = weighted.iter().map(|(w, _)| u64::from(*w)).sum();
    let mut point = u64::from(pick) % total.max(1);
    for (weight, fault) in weighted {
        if point < u64::from(weight) {
            return Some(fault);
        }
        point -= u64::from(weight);
    }
    None
}

/// What one stream says, and how.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) anthropic: bool,
    pub(crate) model: String,
    pub(crate) prompt: u64,
    pub(crate) cached: u64,
    pub(crate) output: u64,
    pub(crate) per_token: Duration,
    pub(crate) fault: Option<StreamFault>,
    pub(crate) faults: StreamFaults,
    /// OpenAI's `stream_options.include_usage`: a last chunk with the usage.
    pub(crate) include_usage: bool,
}

/// How many tokens a stream sends before a mid-stream fault.
const TOKENS_BEFORE_FAULT: u64 = 3;

impl Plan {
    /// Sends the stream's frames into `frames`, pacing them; returns the output tokens sent.
    pub(crate) async fn run(self, frames: mpsc::Sender<Result<Bytes, io::Error>>) -> u64 {
        let send = |event: String| {
            let frames = frames.clone();
            async move { frames.send(Ok(Bytes::from(event))).await.is_ok() }
        };
        let fault = self.fault;
        let stall = || tokio::time::sleep(self.faults.stall);
        let preamble = self.preamble();
        if !preamble.is_empty() && !send(preamble).await {
            return 0;
        }
        match fault {
            Some(StreamFault::ErrorBeforeFirstToken) => {
                send(self.error_event()).await;
                return 0;
            }
            Some(StreamFault::StallBeforeFirstToken) => {
                stall().await;
                return 0;
            }
            Some(StreamFault::SlowFirstToken) => {
                tokio::time::sleep(self.faults.first_token_delay).await;
            }
            _ => {}
        }
        let mut sent = 0;
        for _ in 0..self.output {
            let mid = sent == TOKENS_BEFORE_FAULT.min(self.output.saturating_sub(1));
            match fault {
                Some(StreamFault::ErrorAfterFirstToken) if mid => {
                    send(self.error_event()).await;
                    return sent;
                }
                Some(StreamFault::StallMidStream) if mid => {
                    stall().await;
                    return sent;
                }
                Some(StreamFault::DisconnectMidStream) if mid => {
                    // What was sent reaches the client first: the server then closes mid-answer.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    let _ = frames
                        .send(Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "injected disconnect mid-stream",
                        )))
                        .await;
                    return sent;
                }
                _ => {}
            }
            if !self.per_token.is_zero() {
                tokio::time::sleep(self.per_token).await;
            }
            if !send(self.token()).await {
                return sent;
            }
            sent += 1;
        }
        if fault == Some(StreamFault::TruncatedFinalEvent) {
            let end = self.end();
            // Half of the last event, with no blank line after it.
            send(end[..end.len() / 2].to_owned()).await;
            return sent;
        }
        send(self.end()).await;
        sent
    }

    fn event(&self, name: &str, data: Value) -> String {
        if self.anthropic {
            format!("event: {name}\ndata: {data}\n\n")
        } else {
            format!("data: {data}\n\n")
        }
    }

    fn chunk(&self, delta: Value, finish: Value) -> Value {
        json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    }

    fn preamble(&self) -> String {
        if self.anthropic {
            let start = json!({"type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": self.model,
                "content": [],
                "usage": {"input_tokens": self.prompt - self.cached,
                          "cache_read_input_tokens": self.cached, "output_tokens": 1},
            }});
            let mut text = self.event("message_start", start);
            text.push_str(&self.event("ping", json!({"type": "ping"})));
            text.push_str(&self.event(
                "content_block_start",
                json!({"type": "content_block_start", "index": 0,
                       "content_block": {"type": "text", "text": ""}}),
            ));
            text
        } else {
            // OpenAI sends nothing before its first chunk.
            String::new()
        }
    }

    fn token(&self) -> String {
        if self.anthropic {
            self.event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                       "delta": {"type": "text_delta", "text": "tok "}}),
            )
        } else {
            self.event("", self.chunk(json!({"content": "tok "}), Value::Null))
        }
    }

    fn end(&self) -> String {
        if self.anthropic {
            let mut text = self.event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            );
            text.push_str(&self.event(
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                       "usage": {"output_tokens": self.output}}),
            ));
            text.push_str(&self.event("message_stop", json!({"type": "message_stop"})));
            return text;
        }
        let mut text = self.event("", self.chunk(json!({}), json!("stop")));
        if self.include_usage {
            let usage = json!({
                "id": "chatcmpl-mock", "object": "chat.completion.chunk", "model": self.model,
                "choices": [],
                "usage": {"prompt_tokens": self.prompt, "completion_tokens": self.output,
                          "total_tokens": self.prompt + self.output,
                          "prompt_tokens_details": {"cached_tokens": self.cached}},
            });
            text.push_str(&self.event("", usage));
        }
        text.push_str("data: [DONE]\n\n");
        text
    }

    fn error_event(&self) -> String {
        if self.anthropic {
            self.event(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            )
        } else {
            self.event(
                "",
                json!({"error": {"message": "The server had an error while processing your request.",
                                 "type": "server_error", "param": null, "code": null}}),
            )
        }
    }
}

/// A mock's answer body: whole, or streamed from a channel.
#[derive(Debug)]
pub(crate) enum MockBody {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Result<Bytes, io::Error>>),
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.get_mut() {
            MockBody::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never: Infallible| match never {}),
            MockBody::Stream(frames) => frames
                .poll_recv(cx)
                .map(|frame| frame.map(|bytes| bytes.map(Frame::data))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            MockBody::Full(full) => full.is_end_stream(),
            MockBody::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            MockBody::Full(full) => full.size_hint(),
            MockBody::Stream(_) => SizeHint::default(),
        }
    }
}
