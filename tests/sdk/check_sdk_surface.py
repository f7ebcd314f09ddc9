"""The official OpenAI and Anthropic Python SDKs' other endpoints through portcullis: files,
audio, images, moderations, batches, stored responses, conversations, vector stores, uploads,
containers, Anthropic's message batches and Files API, each as the SDK sends it (multipart
forms, beta headers, query strings).

Run by tests/sdk.rs with GATEWAY_URL set to a gateway whose `*` model is the mock upstream.
The mock answers some of these paths and refuses the rest with its own 404/405; either way
each check asserts the request went through the gateway to the upstream (its
`x-portcullis-upstream` header, no `x-portcullis-error`) and, where the mock answered, that the
SDK read the answer. Prints one line per check and "N passed, N failed"; exits non-zero on
failure.
"""
import io
import os
import struct
import sys
import traceback

import anthropic
import openai

BASE = os.environ["GATEWAY_URL"]
results = []

oa = openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-test-client", max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-test-client", max_retries=0)

# A valid, empty WAV file: what an SDK user uploads for a transcription.
WAV = (b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt "
       + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data" + struct.pack("<I", 0))


def reached(name, call):
    """`call` returns the SDK's raw response (`with_raw_response`); an upstream refusal comes
    back as the SDK's own APIStatusError. Either way the answer must be the upstream's."""
    try:
        try:
            raw = call()
            headers = raw.headers
            raw.parse()  # the SDK reads the upstream's answer into its own type
        except (openai.APIStatusError, anthropic.APIStatusError) as e:
            headers = e.response.headers
            assert "mock upstream" in str(e), f"not the upstream's refusal: {e}"
        assert headers.get("x-portcullis-upstream") == "mock", dict(headers)
        assert "x-portcullis-error" not in headers, dict(headers)
        results.append((name, None))
        print(f"ok   {name}")
    except Exception:  # noqa: BLE001 - report every failure
        results.append((name, traceback.format_exc()))
        print(f"FAIL {name}\n{traceback.format_exc()}")


o = oa.with_raw_response
a = an.with_raw_response

reached("files.create (multipart)", lambda: o.files.create(
    file=("batch.jsonl", io.BytesIO(b'{"custom_id": "a"}\n'), "application/jsonl"), purpose="batch"))
reached("files.list", lambda: o.files.list(limit=2))
reached("files.retrieve", lambda: o.files.retrieve("file-abc"))
reached("files.content", lambda: o.files.content("file-abc"))
reached("files.delete", lambda: o.files.delete("file-abc"))
reached("audio.transcriptions (multipart)", lambda: o.audio.transcriptions.create(
    model="whisper-1", file=("a.wav", io.BytesIO(WAV), "audio/wav")))
reached("audio.speech", lambda: o.audio.speech.create(
    model="gpt-4o-mini-tts", voice="alloy", input="hi"))
reached("moderations", lambda: o.moderations.create(model="omni-moderation-latest", input="hi"))
reached("images.generate", lambda: o.images.generate(model="gpt-image-1", prompt="a cat"))
reached("images.edit (multipart)", lambda: o.images.edit(
    model="gpt-image-1", image=("a.png", io.BytesIO(b"\x89PNG\r\n\x1a\n"), "image/png"),
    prompt="a hat"))
reached("batches.create", lambda: o.batches.create(
    input_file_id="file-abc", endpoint="/v1/chat/completions", completion_window="24h"))
reached("batches.list", lambda: o.batches.list(limit=2))
reached("responses.retrieve", lambda: o.responses.retrieve("resp_1"))
reached("responses.input_items.list", lambda: o.responses.input_items.list("resp_1"))
reached("responses.cancel", lambda: o.responses.cancel("resp_1"))
reached("responses.delete", lambda: o.responses.delete("resp_1"))
reached("conversations.create", lambda: o.conversations.create(
    items=[{"type": "message", "role": "user", "content": "hi"}]))
reached("conversations.items.list", lambda: o.conversations.items.list("conv_1"))
reached("vector_stores.create", lambda: o.vector_stores.create(name="notes"))
reached("uploads.create", lambda: o.uploads.create(
    bytes=10, filename="a.jsonl", mime_type="application/jsonl", purpose="batch"))
reached("uploads.parts.create (multipart)", lambda: o.uploads.parts.create(
    "upload_1", data=io.BytesIO(b"0123456789")))
reached("containers.create", lambda: o.containers.create(name="sandbox"))
reached("anthropic messages.batches.create", lambda: a.messages.batches.create(requests=[
    {"custom_id": "a", "params": {"model": "claude-sonnet-4-5", "max_tokens": 10,
                                  "messages": [{"role": "user", "content": "hi"}]}}]))
reached("anthropic messages.batches.list", lambda: a.messages.batches.list(limit=2))
reached("anthropic beta.files.upload (multipart)", lambda: a.beta.files.upload(
    file=("a.txt", io.BytesIO(b"hello"), "text/plain"), betas=["files-api-2025-04-14"]))
reached("anthropic beta.files.list", lambda: a.beta.files.list(limit=2))

failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
