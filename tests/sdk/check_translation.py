"""The official SDKs through the gateway to upstreams that speak the other API.

Run by tests/translation.rs with GATEWAY_URL set. `claude-*` models go to an upstream that
speaks only Anthropic's Messages API (`api = "anthropic"`), `local-*` models to one that speaks
only chat completions (`api = "openai"`, like Ollama or vLLM). Prints one line per check and
"N passed, N failed"; exits non-zero on failure.
"""
import json
import os
import traceback
from typing import Literal

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

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@check("openai chat -> anthropic upstream")
def _():
    r = oa.chat.completions.create(model="claude-sonnet-4-5",
                                   messages=[{"role": "system", "content": "be brief"},
                                             {"role": "user", "content": "hi"}])
    assert r.choices[0].message.content, r
    assert r.choices[0].finish_reason == "stop", r.choices[0].finish_reason
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0, r.usage


@check("openai streaming chat -> anthropic upstream")
def _():
    stream = oa.chat.completions.create(model="claude-sonnet-4-5",
                                        messages=[{"role": "user", "content": "hi"}],
                                        stream=True, stream_options={"include_usage": True})
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert text.strip(), text
    assert finish == "stop", finish
    assert usage is not None and usage.completion_tokens > 0, usage


@check("openai chat with a tool call and its result -> anthropic upstream")
def _():
    r = oa.chat.completions.create(model="claude-sonnet-4-5", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"},
    ])
    assert r.choices[0].message.content, r


@check("openai responses -> anthropic upstream")
def _():
    r = oa.responses.create(model="claude-sonnet-4-5", input="hi", instructions="be brief")
    assert r.output_text, r
    assert r.usage.output_tokens > 0, r.usage


@check("openai streaming responses -> anthropic upstream")
def _():
    kinds, text = [], ""
    with oa.responses.stream(model="claude-sonnet-4-5", input="hi") as s:
        for event in s:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
        final = s.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed", kinds
    assert text and final.output_text == text, (text, final.output_text)


# A custom (freeform) tool, as Codex's apply_patch is one: the model answers with free text.
CUSTOM = [{"type": "custom", "name": "apply_patch", "description": "Edit files with a patch",
           "format": {"type": "grammar", "syntax": "lark",
                      "definition": "start: begin_patch hunk+ end_patch"}}]
PATCH = "*** Begin Patch\n*** Add File: hello.txt\n+hi \"there\"\n*** End Patch"
# The mock answers with a call of this tool (in the upstream's shape) when asked so.
CALL_PATCH = {"x-mock-tool-call": "apply_patch " + json.dumps({"input": PATCH})}


def custom_round_trip(model):
    r = oa.responses.create(model=model, input="add hello.txt", tools=CUSTOM,
                            extra_headers=CALL_PATCH)
    calls = [o for o in r.output if o.type == "custom_tool_call"]
    assert len(calls) == 1 and calls[0].name == "apply_patch", r.output
    assert calls[0].input == PATCH, calls[0].input
    with oa.responses.stream(model=model, input="add hello.txt", tools=CUSTOM,
                             extra_headers=CALL_PATCH) as s:
        events = list(s)
        final = s.get_final_response()
    done = [e.input for e in events if e.type == "response.custom_tool_call_input.done"]
    deltas = [e.delta for e in events if e.type == "response.custom_tool_call_input.delta"]
    assert done == [PATCH], done
    # Piece by piece as the upstream streams the call's arguments, not whole at the end.
    assert len(deltas) > 1 and "".join(deltas) == PATCH, deltas
    assert [o.input for o in final.output if o.type == "custom_tool_call"] == [PATCH], final.output
    # The call and its output go back up as the function's call and result.
    r = oa.responses.create(model=model, tools=CUSTOM, input=[
        {"role": "user", "content": "add hello.txt"},
        {"type": "custom_tool_call", "call_id": calls[0].call_id, "name": "apply_patch",
         "input": PATCH},
        {"type": "custom_tool_call_output", "call_id": calls[0].call_id, "output": "Done!"},
    ])
    assert r.output_text, r


@check("openai responses custom tool -> anthropic upstream: custom_tool_call items both ways")
def _():
    custom_round_trip("claude-sonnet-4-5")


@check("openai responses custom tool -> chat-completions upstream: custom_tool_call items both ways")
def _():
    custom_round_trip("local-llama")


@check("openai chat custom tool -> anthropic upstream: custom tool calls both ways")
def _():
    tools = [{"type": "custom", "custom": {
        "name": "apply_patch", "description": "Edit files with a patch",
        "format": {"type": "grammar", "grammar": {"syntax": "lark",
                                                  "definition": "start: begin_patch hunk+ end_patch"}}}}]
    msgs = [{"role": "user", "content": "add hello.txt"}]
    r = oa.chat.completions.create(model="claude-sonnet-4-5", tools=tools, messages=msgs,
                                   extra_headers=CALL_PATCH)
    call = r.choices[0].message.tool_calls[0]
    assert call.type == "custom" and call.custom.name == "apply_patch", call
    assert call.custom.input == PATCH, call.custom.input
    assert r.choices[0].finish_reason == "tool_calls", r.choices[0]
    streamed, pieces = {}, 0
    for chunk in oa.chat.completions.create(model="claude-sonnet-4-5", tools=tools, messages=msgs,
                                            stream=True, extra_headers=CALL_PATCH):
        for c in chunk.choices:
            for t in c.delta.tool_calls or []:
                e = streamed.setdefault(t.index, {"type": None, "name": "", "input": ""})
                e["type"] = t.type or e["type"]
                # Released SDKs (3.63) do not type a streamed custom call yet: a dict then.
                c = t.custom if isinstance(t.custom, dict) else (t.custom and t.custom.to_dict())
                if c:
                    e["name"] += c.get("name") or ""
                    e["input"] += c.get("input") or ""
                    pieces += bool(c.get("input"))
    assert streamed == {0: {"type": "custom", "name": "apply_patch", "input": PATCH}}, streamed
    assert pieces > 1, "the input streams piece by piece"
    r = oa.chat.completions.create(model="claude-sonnet-4-5", tools=tools, messages=msgs + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "custom", "custom": {"name": "apply_patch", "input": PATCH}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "Done!"},
    ])
    assert r.choices[0].message.content, r


@check("openai chat web_search_options -> anthropic web search: url_citation annotations")
def _():
    # The mock answers a request offering Anthropic's web search tool as Anthropic does:
    # a search, then text whose last block cites https://example.com/mock-search.
    msgs = [{"role": "user", "content": "what is new today?"}]
    r = oa.chat.completions.create(model="claude-sonnet-4-5", messages=msgs,
                                   web_search_options={"search_context_size": "low"})
    m = r.choices[0].message
    assert m.content.startswith("From the web: "), m.content
    assert len(m.annotations) == 1, m.annotations
    a = m.annotations[0]
    assert a.type == "url_citation", a
    assert a.url_citation.url == "https://example.com/mock-search", a
    assert a.url_citation.title == "Mock search result", a
    cited = m.content[a.url_citation.start_index:a.url_citation.end_index]
    assert cited and cited == m.content[len("From the web: "):], (cited, m.content)
    text, streamed = "", []
    for chunk in oa.chat.completions.create(model="claude-sonnet-4-5", messages=msgs, stream=True,
                                            web_search_options={}):
        for c in chunk.choices:
            text += c.delta.content or ""
            # Chunks' deltas do not type annotations: the extra field.
            streamed += (c.delta.model_extra or {}).get("annotations") or []
    assert text == m.content, (text, m.content)
    assert [x["url_citation"] for x in streamed] == [a.url_citation.to_dict()], streamed


@check("openai chat legacy functions -> anthropic upstream: function_call both ways")
def _():
    fns = [TOOLS[0]["function"]]
    msgs = [{"role": "user", "content": "weather in Paris?"}]
    call = {"x-mock-tool-call": 'get_weather {"city": "Paris"}'}
    r = oa.chat.completions.create(model="claude-sonnet-4-5", messages=msgs, functions=fns,
                                   function_call="auto", extra_headers=call)
    m = r.choices[0].message
    assert r.choices[0].finish_reason == "function_call", r.choices[0]
    assert m.function_call.name == "get_weather", m
    assert json.loads(m.function_call.arguments) == {"city": "Paris"}, m.function_call
    assert not m.tool_calls, m.tool_calls
    name, args, finish = "", "", None
    for chunk in oa.chat.completions.create(model="claude-sonnet-4-5", messages=msgs,
                                            functions=fns, stream=True, extra_headers=call):
        for c in chunk.choices:
            assert not c.delta.tool_calls, c.delta
            if c.delta.function_call:
                name += c.delta.function_call.name or ""
                args += c.delta.function_call.arguments or ""
            finish = c.finish_reason or finish
    assert (name, json.loads(args), finish) == ("get_weather", {"city": "Paris"}, "function_call"), \
        (name, args, finish)
    # The call and its result (a `function` message) go up as a tool call and its result.
    r = oa.chat.completions.create(model="claude-sonnet-4-5", functions=fns, messages=msgs + [
        {"role": "assistant", "content": None, "function_call": m.function_call.to_dict()},
        {"role": "function", "name": "get_weather", "content": "19C and cloudy"},
    ])
    assert r.choices[0].message.content and r.choices[0].finish_reason == "stop", r


@check("structured outputs both ways: openai parse() to anthropic and chat upstreams, anthropic parse() to a chat upstream")
def _():
    from pydantic import BaseModel

    class City(BaseModel):
        city: str
        population: int
        unit: Literal["metric", "imperial"]

    want = City(city="mock", population=1, unit="metric")
    msgs = [{"role": "user", "content": "a city"}]
    # claude-haiku-* has no thinking params: the schema goes as a forced tool, whose call
    # comes back as the answer's text.
    r = oa.chat.completions.parse(model="claude-haiku-4-5", messages=msgs, response_format=City)
    assert r.choices[0].message.parsed == want, r
    for model in ["claude-haiku-4-5", "local-llama"]:
        r = oa.responses.parse(model=model, input="a city", text_format=City)
        assert r.output_parsed == want, (model, r)
        with oa.responses.stream(model=model, input="a city", text_format=City) as s:
            final = s.get_final_response()
        assert final.output_parsed == want, (model, final)
    # Anthropic's structured outputs (`output_config.format`) as the chat response_format.
    m = an.messages.parse(model="local-llama", max_tokens=64, messages=msgs, output_format=City)
    assert m.parsed_output == want, m


@check("openai responses previous_response_id and item_reference -> both upstream kinds")
def _():
    for model in ["claude-haiku-4-5", "local-llama"]:
        first = oa.responses.create(model=model, input="my name is Ada")
        # The conversation so far, by the earlier response's id (plain, then streamed).
        r = oa.responses.create(model=model, input="what is my name?",
                                previous_response_id=first.id)
        assert r.output_text, (model, r)
        # Its input items (the chain without its own answer), a page at a time as the SDK
        # pages: newest first, each with an id `after` can name.
        page = oa.responses.input_items.list(r.id, limit=2)
        assert len(page.data) == 2 and page.has_more, page
        listed = [i for i in oa.responses.input_items.list(r.id, limit=1)]
        texts = [[c.text for c in i.content] for i in listed]
        assert texts == [["what is my name?"], [first.output_text], ["my name is Ada"]], texts
        assert len({i.id for i in listed}) == 3 and all(i.id for i in listed), listed
        with oa.responses.stream(model=model, input="and now?", previous_response_id=r.id) as s:
            final = s.get_final_response()
        assert final.output_text, (model, final)
        # An earlier answer by reference, as the Vercel AI SDK sends it.
        msg = [o for o in first.output if o.type == "message"][0]
        r = oa.responses.create(model=model, input=[
            {"role": "user", "content": "my name is Ada"},
            {"type": "item_reference", "id": msg.id},
            {"role": "user", "content": "what is my name?"}])
        assert r.output_text, (model, r)
        # Another caller (another key) cannot see it; `store: false` keeps nothing.
        other = openai.OpenAI(base_url=f"{BASE}/v1", api_key="sk-someone-else", max_retries=0)
        try:
            other.responses.create(model=model, input="x", previous_response_id=first.id)
            raise AssertionError("another caller resolved the response")
        except openai.BadRequestError as e:
            assert "previous_response_id" in str(e), e
        # Read back, listed and deleted: no model names an upstream, the id tells the gateway
        # it is one of its own.
        got = oa.responses.retrieve(first.id)
        assert got.id == first.id and got.output_text == first.output_text, got
        items = oa.responses.input_items.list(first.id)
        assert [[c.text for c in i.content] for i in items.data] == [["my name is Ada"]], items
        oa.responses.delete(first.id)
        try:
            oa.responses.retrieve(first.id)
            raise AssertionError("a deleted response was found")
        except openai.NotFoundError:
            pass
        unstored = oa.responses.create(model=model, input="secret", store=False)
        try:
            oa.responses.create(model=model, input="x", previous_response_id=unstored.id)
            raise AssertionError("a store: false response was kept")
        except openai.BadRequestError as e:
            assert "no stored response" in str(e), e


@check("openai: what Anthropic cannot carry is a BadRequestError naming the field")
def _():
    try:
        oa.chat.completions.create(model="claude-sonnet-4-5", n=3,
                                   messages=[{"role": "user", "content": "hi"}])
    except openai.BadRequestError as e:
        assert "n" in str(e) and "anthropic" in str(e).lower(), e
        return
    raise AssertionError("no BadRequestError")


@check("openai: an Anthropic overload is the SDK's own server error")
def _():
    # tests/translation.rs queues a 529 overloaded_error on the Anthropic mock for this one.
    try:
        oa.chat.completions.create(model="claude-overloaded",
                                   messages=[{"role": "user", "content": "hi"}])
    except openai.InternalServerError as e:
        assert e.status_code >= 500, e
        return
    raise AssertionError("no InternalServerError")


@check("anthropic messages -> chat-completions upstream")
def _():
    r = an.messages.create(model="local-llama", max_tokens=64, system="be brief",
                           messages=[{"role": "user", "content": "hi"}])
    assert r.content[0].text, r
    assert r.stop_reason == "end_turn", r.stop_reason
    assert r.usage.output_tokens > 0, r.usage


@check("anthropic streaming messages -> chat-completions upstream")
def _():
    with an.messages.stream(model="local-llama", max_tokens=64,
                            messages=[{"role": "user", "content": "hi"}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.strip(), text
    assert final.stop_reason == "end_turn", final.stop_reason


@check("anthropic tool use history -> chat-completions upstream")
def _():
    r = an.messages.create(model="local-llama", max_tokens=64, tools=[{
        "name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "18C and sunny"}]},
        ])
    assert r.content[0].text, r


@check("anthropic count_tokens -> chat-completions upstream: the gateway's estimate")
def _():
    kw = dict(model="local-llama", system="be brief",
              messages=[{"role": "user", "content": "what is the weather in Paris today?"}])
    r = an.messages.count_tokens(**kw)
    # Framing (3 + 3 per message) and the text's own tokens.
    assert 15 <= r.input_tokens <= 40, r
    with_tools = an.messages.count_tokens(**kw, tools=[{
        "name": "get_weather", "description": "weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
    assert with_tools.input_tokens > r.input_tokens + 10, (with_tools, r)
    # Claude Code asks through the beta resource (`?beta=true`).
    beta = an.beta.messages.count_tokens(**kw)
    assert beta.input_tokens == r.input_tokens, (beta, r)


@check("openai responses input_tokens -> anthropic upstream's count_tokens")
def _():
    r = oa.responses.input_tokens.count(model="claude-sonnet-4-5", instructions="be brief",
                                        input="what is the weather in Paris today?")
    assert r.object == "response.input_tokens", r
    assert r.input_tokens > 0, r


@check("openai responses input_tokens -> chat-completions upstream: the gateway's estimate")
def _():
    r = oa.responses.input_tokens.count(model="local-llama", input="hello world")
    assert r.object == "response.input_tokens", r
    assert r.input_tokens == 8, r


@check("openai responses compaction -> anthropic and chat upstreams: compact(), the trigger, and the item carried")
def _():
    history = [{"role": "user", "content": "fix the failing test"},
               {"type": "message", "role": "assistant",
                "content": [{"type": "output_text", "text": "I ran the tests; test_a fails."}]}]
    for model in ["claude-sonnet-4-5", "local-llama"]:
        # The endpoint: every user message, then one compaction item (the model's summary).
        c = oa.responses.compact(model=model, input=history)
        assert c.object == "response.compaction", c
        assert [o.type for o in c.output] == ["message", "compaction"], c.output
        assert c.output[0].role == "user", c.output[0]
        item = c.output[1]
        assert item.id.startswith("cmp_") and item.encrypted_content, item
        # The trigger on an ordinary streamed request: one compaction item.
        with oa.responses.stream(model=model, input=history + [{"type": "compaction_trigger"}]) as s:
            events = list(s)
            final = s.get_final_response()
        done = [e.item for e in events if e.type == "response.output_item.done"]
        assert [d.type for d in done] == ["compaction"], done
        assert [o.type for o in final.output] == ["compaction"], final.output
        # The compacted history goes on: the item is read back as the summary.
        r = oa.responses.create(model=model, input=[o.to_dict() for o in c.output] +
                                [{"role": "user", "content": "go on"}])
        assert r.output_text, r


failed = sum(1 for _, e in results if e)
print(f"{len(results) - failed} passed, {failed} failed")
raise SystemExit(1 if failed else 0)
