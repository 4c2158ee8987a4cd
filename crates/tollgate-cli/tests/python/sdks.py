"""The official OpenAI and Anthropic Python SDKs pointed at `tollgate serve`: plain and streamed
calls, a 429 of the gateway's retried by the SDK, a wrong key raising the SDK's authentication
error. Prints what happened as one JSON object; the Rust test judges it."""

import json
import os
import time

import anthropic
import openai

base = os.environ["GATEWAY_URL"]
key = os.environ["CLIENT_KEY"]
limited = os.environ["LIMITED_KEY"]
messages = [{"role": "user", "content": "hi"}]
out = {}

oa = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=20)
answer = oa.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=16)
out["openai_plain"] = answer.choices[0].message.content
chunks = []
for chunk in oa.chat.completions.create(
    model="gpt-4o-mini", messages=messages, max_tokens=16, stream=True
):
    if chunk.choices and chunk.choices[0].delta.content:
        chunks.append(chunk.choices[0].delta.content)
out["openai_stream_chunks"] = len(chunks)
out["openai_stream_text"] = "".join(chunks)

an = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0, timeout=20)
message = an.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=messages)
out["anthropic_plain"] = message.content[0].text
with an.messages.stream(model="claude-haiku-4-5", max_tokens=16, messages=messages) as stream:
    texts = [text for text in stream.text_stream if text]
out["anthropic_stream_chunks"] = len(texts)
out["anthropic_stream_text"] = "".join(texts)

# The limited client may send one request a second: the second at once gets the gateway's 429
# with Retry-After, which the SDK waits out before it retries.
lo = openai.OpenAI(base_url=base + "/v1", api_key=limited, max_retries=3, timeout=20)
lo.chat.completions.create(model="gpt-4o-mini", messages=messages, max_tokens=16)
started = time.monotonic()
raw = lo.chat.completions.with_raw_response.create(
    model="gpt-4o-mini", messages=messages, max_tokens=16
)
out["openai_retry_waited_s"] = time.monotonic() - started
out["openai_retries_taken"] = raw.retries_taken
raw.parse()

la = anthropic.Anthropic(base_url=base, api_key=limited, max_retries=3, timeout=20)
la.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=messages)
started = time.monotonic()
raw = la.messages.with_raw_response.create(model="claude-haiku-4-5", max_tokens=16, messages=messages)
out["anthropic_retry_waited_s"] = time.monotonic() - started
out["anthropic_retries_taken"] = raw.retries_taken
raw.parse()

try:
    openai.OpenAI(base_url=base + "/v1", api_key="gw-wrong-0123456789", max_retries=0).models.list()
except openai.AuthenticationError as error:
    out["openai_auth_error"] = error.status_code
try:
    anthropic.Anthropic(base_url=base, api_key="gw-wrong-0123456789", max_retries=0).messages.create(
        model="claude-haiku-4-5", max_tokens=16, messages=messages
    )
except anthropic.AuthenticationError as error:
    out["anthropic_auth_error"] = error.status_code

print(json.dumps(out))
