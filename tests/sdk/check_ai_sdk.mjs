// The Vercel AI SDK (`ai`, with its OpenAI and Anthropic providers), the TypeScript library
// most LLM apps are built on, through the gateway to upstreams that speak the other API.
//
// Run by tests/translation.rs with GATEWAY_URL set, from the directory `.ci/agents-setup.sh`
// installs the packages into (ESM resolves them from the script's own folder). Its OpenAI
// provider speaks the Responses API by default (`openai(model)`) and chat completions with
// `openai.chat(model)`. Prints one line per check and "N passed, N failed"; exits non-zero on
// failure.
import { generateObject, generateText, stepCountIs, streamText, tool } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { z } from 'zod';

globalThis.AI_SDK_LOG_WARNINGS = false;
const base = process.env.GATEWAY_URL;
const openai = createOpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-test-client' });
const anthropic = createAnthropic({ baseURL: `${base}/v1`, apiKey: 'sk-ant-test-client' });

// `claude-haiku-*` goes to an Anthropic-only upstream, `local-*` to a chat-only one.
const models = {
  'openai responses -> anthropic upstream': openai('claude-haiku-4-5'),
  'openai chat -> anthropic upstream': openai.chat('claude-haiku-4-5'),
  'openai responses -> chat upstream': openai('local-llama'),
  'anthropic -> chat upstream': anthropic('local-llama'),
};

const weather = tool({
  description: 'weather for a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `18C and sunny in ${city}`,
});
// The mock answers with this call, in the upstream's shape, when the request asks it to.
const callWeather = { 'x-mock-tool-call': 'weather {"city":"Paris"}' };
const fail = (e) => { throw e.error ?? e; };

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

const checks = {
  async text(model) {
    const r = await generateText({ model, system: 'be brief', prompt: 'hi' });
    assert(r.text.length > 0, `text: ${JSON.stringify(r.text)}`);
    assert(r.finishReason === 'stop', `finishReason ${r.finishReason}`);
    assert(r.usage.inputTokens > 0 && r.usage.outputTokens > 0, JSON.stringify(r.usage));
  },
  async stream(model) {
    const r = streamText({ model, prompt: 'hi', onError: fail });
    let text = '';
    for await (const d of r.textStream) text += d;
    assert(text.length > 0 && text === (await r.text), `streamed ${JSON.stringify(text)}`);
    assert((await r.finishReason) === 'stop', `finishReason ${await r.finishReason}`);
  },
  // Two steps: the model's call, the tool's result sent back up (history translated), and
  // the second answer.
  async tools(model) {
    const r = await generateText({
      model, prompt: 'weather in Paris?', tools: { weather }, stopWhen: stepCountIs(2),
      headers: callWeather,
    });
    assert(r.steps.length === 2, `steps ${r.steps.length}`);
    const [first] = r.steps;
    assert(first.finishReason === 'tool-calls', `finishReason ${first.finishReason}`);
    assert(first.toolCalls[0]?.toolName === 'weather', JSON.stringify(first.toolCalls));
    assert(first.toolCalls[0].input.city === 'Paris', JSON.stringify(first.toolCalls));
    assert(String(first.toolResults[0]?.output).includes('18C'), JSON.stringify(first.toolResults));
  },
  async 'streamed tools'(model) {
    const r = streamText({
      model, prompt: 'weather in Paris?', tools: { weather }, stopWhen: stepCountIs(2),
      headers: callWeather, onError: fail,
    });
    for await (const _ of r.fullStream) { /* drain */ }
    const steps = await r.steps;
    assert(steps.length === 2, `steps ${steps.length}`);
    assert(steps[0].toolCalls[0]?.input.city === 'Paris', JSON.stringify(steps[0].toolCalls));
  },
  // A second turn: the OpenAI provider sends its earlier answer back as an `item_reference`
  // (OpenAI stores responses); the gateway resolves it from the answers it translated.
  async 'second turn'(model) {
    const messages = [{ role: 'user', content: 'hi' }];
    const first = await generateText({ model, messages });
    messages.push(...first.response.messages, { role: 'user', content: 'and again' });
    const second = await generateText({ model, messages });
    assert(second.text.length > 0 && second.finishReason === 'stop', JSON.stringify(second.text));
  },
  // A PDF and an image beside the text: Responses `input_file`/`input_image`, chat `file` and
  // `image_url` parts, Anthropic `document` and `image` blocks, each to the other's.
  async 'pdf and image'(model) {
    const r = await generateText({
      model,
      messages: [{ role: 'user', content: [
        { type: 'text', text: 'summarise these' },
        { type: 'file', data: Buffer.from('%PDF-1.4\n%%EOF'), mediaType: 'application/pdf', filename: 'a.pdf' },
        { type: 'image', image: new URL('https://example.com/cat.png') },
      ] }],
    });
    assert(r.text.length > 0 && r.finishReason === 'stop', JSON.stringify(r.text));
  },
  // Structured output: each provider asks in its own way (a JSON schema response format, or
  // a forced `json` tool), translated to the upstream's.
  async object(model) {
    const r = await generateObject({
      model, prompt: 'a city', schema: z.object({ city: z.string(), population: z.number() }),
    });
    assert(r.object.city === 'mock' && r.object.population === 1, JSON.stringify(r.object));
  },
};

let passed = 0;
let failed = 0;
for (const [name, model] of Object.entries(models)) {
  for (const [kind, check] of Object.entries(checks)) {
    try {
      await check(model);
      passed += 1;
      console.log(`ok   ${name}: ${kind}`);
    } catch (e) {
      failed += 1;
      const body = e.responseBody ? `\n     upstream said: ${e.responseBody.slice(0, 500)}` : '';
      console.log(`FAIL ${name}: ${kind}\n     ${e.stack ?? e}${body}`);
    }
  }
}
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
