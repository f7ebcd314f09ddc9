"""The OpenAI Agents SDK through the gateway to upstreams that speak another API.

Run by tests/translation.rs with GATEWAY_URL set. `claude-haiku-*` models go to an upstream
that speaks only Anthropic's Messages API, `local-*` to one that speaks only chat completions.
Each model is driven as the SDK's Responses model (its default) and as its chat-completions
model. Prints one line per check and "N passed, N failed"; exits non-zero on failure.
"""
import asyncio
import os
import traceback

from agents import (Agent, OpenAIChatCompletionsModel, OpenAIResponsesModel, Runner,
                    function_tool, set_tracing_disabled)
from openai import AsyncOpenAI
from pydantic import BaseModel

BASE = os.environ["GATEWAY_URL"]
set_tracing_disabled(True)  # no export to OpenAI's trace endpoint
client = AsyncOpenAI(base_url=f"{BASE}/v1", api_key="sk-test-client", max_retries=0)
# The mock answers with a call of this tool (in the upstream's shape) when asked so.
calling = AsyncOpenAI(base_url=f"{BASE}/v1", api_key="sk-test-client", max_retries=0,
                      default_headers={"x-mock-tool-call": 'get_weather {"city": "Paris"}'})


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"18C and sunny in {city}"


class City(BaseModel):
    city: str
    population: int


def model(kind, name, c=client):
    return OpenAIResponsesModel(name, c) if kind == "responses" else OpenAIChatCompletionsModel(name, c)


async def text(kind, name):
    r = await Runner.run(Agent(name="a", instructions="be brief", model=model(kind, name)), "hi")
    assert r.final_output, r


async def streamed(kind, name):
    r = Runner.run_streamed(Agent(name="a", model=model(kind, name)), "hi")
    deltas = [e async for e in r.stream_events() if e.type == "raw_response_event"]
    assert deltas and r.final_output, r


async def tool(kind, name):
    # The tool's result is the final output: one model turn, one call.
    agent = Agent(name="a", model=model(kind, name, calling), tools=[get_weather],
                  tool_use_behavior="stop_on_first_tool")
    r = await Runner.run(agent, "weather in Paris?")
    assert r.final_output == "18C and sunny in Paris", r.final_output


async def output_type(kind, name):
    r = await Runner.run(Agent(name="a", model=model(kind, name), output_type=City), "a city")
    assert r.final_output == City(city="mock", population=1), r.final_output


async def previous_response(kind, name):
    first = await Runner.run(Agent(name="a", model=model(kind, name)), "my name is Ada")
    r = await Runner.run(Agent(name="a", model=model(kind, name)), "my name?",
                         previous_response_id=first.last_response_id)
    assert r.final_output and r.last_response_id != first.last_response_id, r


async def compaction_session():
    # The SDK's compaction session (`responses.compact` after the turns) on a Claude model
    # behind an OpenAI-looking alias: the history becomes the user's messages and one
    # compaction item, and the next turn goes on from it.
    from agents import SQLiteSession
    from agents.memory import OpenAIResponsesCompactionSession
    session = OpenAIResponsesCompactionSession(
        "s1", SQLiteSession("s1"), client=client, model="gpt-5-team")
    agent = Agent(name="a", model=model("responses", "gpt-5-team"))
    for prompt in ["my name is Ada", "I live in Paris"]:
        r = await Runner.run(agent, prompt, session=session)
        assert r.final_output, r
    await session.run_compaction({"force": True})
    items = await session.get_items()
    kinds = [i.get("type") or i.get("role") for i in items]
    assert kinds.count("compaction") == 1 and kinds[-1] == "compaction", items
    assert sum(1 for i in items if i.get("role") == "user") == 2, items
    r = await Runner.run(agent, "where do I live?", session=session)
    assert r.final_output, r


async def main():
    results = []
    try:
        await compaction_session()
        results.append(None)
        print("ok   gpt-5-team (Claude) compaction session")
    except Exception:  # noqa: BLE001 - report every failure
        results.append("compaction session")
        print(f"FAIL gpt-5-team (Claude) compaction session\n{traceback.format_exc()}")
    for name in ["claude-haiku-4-5", "local-llama"]:
        for kind in ["responses", "chat"]:
            checks = [text, streamed, tool, output_type]
            # A chat-completions model has no previous responses.
            checks += [previous_response] if kind == "responses" else []
            for check in checks:
                label = f"{name} as a {kind} model: {check.__name__}"
                try:
                    await check(kind, name)
                    results.append(None)
                    print(f"ok   {label}")
                except Exception:  # noqa: BLE001 - report every failure
                    results.append(label)
                    print(f"FAIL {label}\n{traceback.format_exc()}")
    failed = sum(r is not None for r in results)
    print(f"{len(results) - failed} passed, {failed} failed")
    raise SystemExit(1 if failed else 0)


asyncio.run(main())
