"""The official OpenAI and Anthropic Python SDKs, unchanged, pointed at portcullis.

Run by tests/sdk.rs with GATEWAY_URL set to a gateway in front of the mock upstream.
Prints one line per check and "N passed, N failed" at the end; exits non-zero on failure.
"""
import os
import sys
import traceback

import anthropic
import openai

BASE = os.environ["GATEWAY_URL"]
results = []


def check(name):
    def wrap(fn):
        try:
            fn()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception:  # noqa: BLE001 - report every failure
            results.append((name, traceback.format_exc()))
            print(f"FAIL {name}\n{traceback.format_exc()}")
        return fn
    return wrap


oa = openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-test-client", max_retries=0)
an = anthropic.Anthropic(base_url=BASE, api_key="sk-ant-test-client", max_retries=0)


@check("openai chat")
def _():
    r = oa.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content, r
    assert r.model == "gpt-4o-mini", r.model
    assert r.usage.total_tokens > 0


@check("openai streaming chat")
def _():
    stream = oa.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text = ""
    usage = None
    chunks = 0
    for chunk in stream:
        chunks += 1
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert chunks >= 3, chunks
    assert text.strip(), text
    assert usage is not None and usage.completion_tokens > 0


@check("openai embeddings")
def _():
    r = oa.embeddings.create(model="text-embedding-3-small", input=["a", "b", "c"])
    assert len(r.data) == 3 and len(r.data[0].embedding) > 0


@check("openai completions")
def _():
    r = oa.completions.create(model="gpt-3.5-turbo-instruct", prompt="Say hi")
    assert r.choices[0].text


@check("openai models list")
def _():
    ids = [m.id for m in oa.models.list()]
    assert ids, ids


@check("openai unknown model raises NotFoundError")
def _():
    try:
        oa.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as e:
        assert "no-such-model" in str(e), e
        return
    raise AssertionError("no NotFoundError")


@check("anthropic messages")
def _():
    r = an.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                           messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text, r
    assert r.usage.output_tokens > 0


@check("anthropic streaming messages")
def _():
    with an.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                            messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip(), text
    assert final.usage.output_tokens > 0


@check("anthropic unknown model raises NotFoundError")
def _():
    try:
        an.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    except anthropic.NotFoundError as e:
        assert "no-such-model" in str(e), e
        return
    raise AssertionError("no NotFoundError")


@check("openai responses")
def _():
    r = oa.responses.create(model="gpt-5", input="hi", instructions="be brief",
                            reasoning={"effort": "low"}, store=False)
    assert r.output_text, r
    assert r.usage.total_tokens > 0, r.usage


@check("openai streaming responses")
def _():
    kinds = []
    text = ""
    with oa.responses.stream(model="gpt-5", input=[{"role": "user", "content": "hi"}]) as s:
        for event in s:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert text.strip() and final.output_text == text, (text, final.output_text)
    assert final.usage.output_tokens > 0


@check("anthropic count_tokens")
def _():
    r = an.messages.count_tokens(model="claude-sonnet-4-5", system="be brief",
                                 messages=[{"role": "user", "content": "hello there"}])
    assert r.input_tokens > 0, r


@check("anthropic beta messages with a system entry in messages")
def _():
    # What current Anthropic-API agents send: beta fields, thinking, a system-role entry.
    r = an.beta.messages.create(
        model="claude-sonnet-4-5", max_tokens=256,
        thinking={"type": "enabled", "budget_tokens": 128},
        betas=["context-management-2025-06-27"],
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"messages": [{"role": "system", "content": "be brief"},
                                 {"role": "user", "content": "hi"}]},
    )
    assert r.content, r


@check("openai invalid request raises BadRequestError")
def _():
    try:
        oa.chat.completions.create(model="gpt-4o-mini", messages=[])
    except openai.BadRequestError as e:
        assert "messages" in str(e), e
        return
    raise AssertionError("no BadRequestError")


@check("openai stored chat completions: list, retrieve, messages, update, delete")
def _():
    # GET /v1/chat/completions (the list) is routed by its `model` query parameter; the
    # paths with an id carry no model, so the gateway is told the upstream by header.
    items = list(oa.chat.completions.list(model="gpt-4o-mini", limit=5))
    assert items and items[0].model == "gpt-4o-mini", items
    up = {"x-portcullis-upstream": "mock"}
    cid = items[0].id
    got = oa.chat.completions.retrieve(cid, extra_headers=up)
    assert got.id == cid and got.choices[0].message.content, got
    msgs = list(oa.chat.completions.messages.list(cid, extra_headers=up))
    assert msgs and msgs[0].content, msgs
    updated = oa.chat.completions.update(cid, metadata={"team": "a"}, extra_headers=up)
    assert updated.metadata == {"team": "a"}, updated
    deleted = oa.chat.completions.delete(cid, extra_headers=up)
    assert deleted.deleted and deleted.id == cid, deleted


@check("anthropic models list and retrieve; openai retrieve")
def _():
    # The gateway's list carries both APIs' fields; a model's own path goes to the upstream
    # of the model it names (`claude-*` here), not to a `*` catch-all.
    models = list(an.models.list())
    assert models and all(m.type == "model" and m.display_name for m in models), models
    assert "claude-sonnet-4-5" in [m.id for m in models], models
    m = an.models.retrieve("claude-sonnet-4-5")
    assert m.id == "claude-sonnet-4-5" and m.display_name, m
    o = oa.models.retrieve("gpt-4o-mini")
    assert o.id == "gpt-4o-mini", o


failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
