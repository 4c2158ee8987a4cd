//! `--stream`: requests sent streamed, and the stream assembled into the answer the same request
//! would have got whole, so that the results have the same shape either way.

use bytes::Bytes;
use serde_json::{json, Map, Value};

/// The request body asking for a stream: `"stream": true`, and for OpenAI's shape the usage in
/// a last chunk (`stream_options.include_usage`). A body that is not a JSON object is sent as
/// it is.
pub(crate) fn streamed_body(body: &Bytes, anthropic: bool) -> Bytes {
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return body.clone();
    };
    request.insert("stream".into(), Value::Bool(true));
    if !anthropic {
        let options = request
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    Bytes::from(Value::Object(request).to_string())
}

/// The whole answer a complete stream adds up to, in the provider's non-streamed shape.
pub(crate) fn assemble(stream: &[u8], anthropic: bool) -> Value {
    let mut text = String::new();
    let (mut id, mut model, mut stop) = (Value::Null, Value::Null, Value::Null);
    let mut usage = Map::new();
    for data in data_lines(stream) {
        let Ok(event) = serde_json::from_str::<Value>(data) else {
            continue;
        };
        if anthropic {
            match event["type"].as_str() {
                Some("message_start") => {
                    let message = &event["message"];
                    id = message["id"].clone();
                    model = message["model"].clone();
                    merge(&mut usage, &message["usage"]);
                }
                Some("content_block_delta") => {
                    if let Some(delta) = event["delta"]["text"].as_str() {
                        text.push_str(delta);
                    }
                }
                Some("message_delta") => {
                    stop = event["delta"]["stop_reason"].clone();
                    merge(&mut usage, &event["usage"]);
                }
                _ => {}
            }
        } else {
            if id.is_null() {
                id = event["id"].clone();
                model = event["model"].clone();
            }
            let choice = &event["choices"][0];
            if let Some(delta) = choice["delta"]["content"].as_str() {
                text.push_str(delta);
            }
            if !choice["finish_reason"].is_null() {
                stop = choice["finish_reason"].clone();
            }
            merge(&mut usage, &event["usage"]);
        }
    }
    let usage = (!usage.is_empty()).then_some(Value::Object(usage));
    if anthropic {
        json!({
            "id": id, "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop, "usage": usage,
        })
    } else {
        json!({
            "id": id, "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": stop}],
            "usage": usage,
        })
    }
}

/// The `data` values of a stream's events (one line each, as providers send them).
fn data_lines(stream: &[u8]) -> impl Iterator<Item = &str> {
    stream.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = line.strip_prefix(b"data:")?;
        let data = data.strip_prefix(b" ").unwrap_or(data);
        std::str::from_utf8(data).ok().filter(|d| *d != "[DONE]")
    })
}

/// Later usage fields replace earlier ones (Anthropic's `message_delta` counts the whole output).
fn merge(usage: &mut Map<String, Value>, more: &Value) {
    if let Value::Object(more) = more {
        for (key, value) in more {
            usage.insert(key.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_openai_stream_adds_up_to_a_completion() {
        let stream = b"data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
            data: {\"id\":\"c1\",\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n\
            data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
            data: [DONE]\n\n";
        let answer = assemble(stream, false);
        assert_eq!(answer["choices"][0]["message"]["content"], "Hello");
        assert_eq!(answer["choices"][0]["finish_reason"], "stop");
        assert_eq!(answer["usage"]["completion_tokens"], 2);
        assert_eq!(answer["id"], "c1");
    }

    #[test]
    fn an_anthropic_stream_adds_up_to_a_message() {
        let stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg\",\"model\":\"claude\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"Hi \"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"there\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\n";
        let answer = assemble(stream, true);
        assert_eq!(answer["content"][0]["text"], "Hi there");
        assert_eq!(answer["usage"]["input_tokens"], 5);
        assert_eq!(answer["usage"]["output_tokens"], 2);
        assert_eq!(answer["stop_reason"], "end_turn");
    }

    #[test]
    fn the_request_asks_for_a_stream_and_openai_for_its_usage() {
        let body = Bytes::from_static(br#"{"model":"m","messages":[]}"#);
        let openai: Value = serde_json::from_slice(&streamed_body(&body, false)).unwrap();
        assert_eq!(openai["stream"], true);
        assert_eq!(openai["stream_options"]["include_usage"], true);
        let anthropic: Value = serde_json::from_slice(&streamed_body(&body, true)).unwrap();
        assert_eq!(anthropic["stream"], true);
        assert!(anthropic.get("stream_options").is_none());
    }
}
