// End-to-end: the official OpenAI JavaScript SDK against `<engine> serve` on loopback.
// scripts/test.sh starts the server and sets MC_BASE_URL (http://127.0.0.1:PORT/v1) and MC_API_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.MC_BASE_URL ?? 'http://127.0.0.1:8000/v1';
const apiKey = process.env.MC_API_KEY ?? 'none';
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

let modelId;
async function model() {
  if (!modelId) {
    const page = await client.models.list();
    modelId = page.data[0].id;
  }
  return modelId;
}

test('models.list names the served model', async () => {
  const page = await client.models.list();
  assert.equal(page.data.length, 1);
  assert.equal(page.data[0].object, 'model');
  assert.ok(page.data[0].id.length > 0);
});

test('completions.create returns text, finish_reason and usage', async () => {
  const completion = await client.completions.create({ model: await model(), prompt: 'Once upon a time', max_tokens: 24, temperature: 0 });
  assert.equal(completion.object, 'text_completion');
  assert.equal(completion.choices.length, 1);
  assert.ok(completion.choices[0].text.length > 0);
  assert.ok(['stop', 'length'].includes(completion.choices[0].finish_reason));
  assert.ok(completion.usage.prompt_tokens > 0);
  assert.ok(completion.usage.completion_tokens > 0 && completion.usage.completion_tokens <= 24);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
});

test('greedy decoding is repeatable, and streaming yields the same text', async () => {
  const request = { model: await model(), prompt: 'Once upon a time', max_tokens: 32, temperature: 0 };
  const first = await client.completions.create(request);
  const second = await client.completions.create(request);
  assert.equal(second.choices[0].text, first.choices[0].text);

  const stream = await client.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let usage;
  let finish;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.text;
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, first.choices[0].text);
  assert.equal(finish, first.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, first.usage.completion_tokens);
});

test('a stop string cuts the text before it', async () => {
  const request = { model: await model(), prompt: 'Once upon a time', max_tokens: 40, temperature: 0 };
  const full = (await client.completions.create(request)).choices[0].text;
  const words = full.trim().split(/\s+/);
  assert.ok(words.length >= 3, `too little text to test stop strings: ${JSON.stringify(full)}`);
  const stop = ' ' + words[2];
  const cut = await client.completions.create({ ...request, stop: [stop] });
  assert.equal(cut.choices[0].text, full.slice(0, full.indexOf(stop)));
  assert.equal(cut.choices[0].finish_reason, 'stop');
});

test('n choices come back indexed', async () => {
  const completion = await client.completions.create({ model: await model(), prompt: 'The cat', max_tokens: 8, n: 2, temperature: 0.8, seed: 7 });
  assert.deepEqual(completion.choices.map((c) => c.index).sort(), [0, 1]);
});

test('chat.completions.create answers as the assistant', async () => {
  const chat = await client.chat.completions.create({
    model: await model(),
    messages: [{ role: 'system', content: 'You tell stories.' }, { role: 'user', content: 'Tell me a story.' }],
    max_tokens: 24,
    temperature: 0,
  });
  assert.equal(chat.object, 'chat.completion');
  assert.equal(chat.choices[0].message.role, 'assistant');
  assert.equal(typeof chat.choices[0].message.content, 'string');
  assert.ok(chat.usage.completion_tokens > 0);
});

test('chat streaming delivers deltas, a finish reason and usage', async () => {
  const request = { model: await model(), messages: [{ role: 'user', content: 'Tell me a story.' }], max_completion_tokens: 24, temperature: 0 };
  const whole = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({ ...request, stream: true, stream_options: { include_usage: true } });
  let content = '';
  let role;
  let finish;
  let usage;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      role ??= choice.delta.role;
      content += choice.delta.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(role, 'assistant');
  assert.equal(content, whole.choices[0].message.content);
  assert.equal(finish, whole.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, whole.usage.completion_tokens);
});

test('chat logprobs have the OpenAI shape', async () => {
  const chat = await client.chat.completions.create({
    model: await model(), messages: [{ role: 'user', content: 'Hi' }], max_tokens: 4, logprobs: true, top_logprobs: 2,
  });
  const content = chat.choices[0].logprobs.content;
  assert.ok(content.length > 0);
  for (const entry of content) {
    assert.equal(typeof entry.token, 'string');
    assert.equal(typeof entry.logprob, 'number');
    assert.ok(Array.isArray(entry.bytes));
    assert.ok(Array.isArray(entry.top_logprobs));
  }
});

test('bad requests surface as BadRequestError naming the field', async () => {
  await assert.rejects(
    client.completions.create({ model: await model(), prompt: 'x', max_tokens: 0 }),
    (error) => error instanceof OpenAI.BadRequestError && error.status === 400 && error.param === 'max_tokens',
  );
  await assert.rejects(
    client.chat.completions.create({ model: await model(), messages: [{ role: 'wizard', content: 'x' }] }),
    (error) => error instanceof OpenAI.BadRequestError && error.param === 'messages[0].role',
  );
  await assert.rejects(
    client.completions.create({ model: await model(), prompt: 'x', temperature: 5 }),
    (error) => error instanceof OpenAI.BadRequestError && error.param === 'temperature',
  );
});

test('a wrong API key is an AuthenticationError', { skip: apiKey === 'none' }, async () => {
  const wrong = new OpenAI({ baseURL, apiKey: apiKey + '-wrong', maxRetries: 0 });
  await assert.rejects(wrong.models.list(), (error) => error instanceof OpenAI.AuthenticationError && error.status === 401);
});

test('an aborted stream does not break the server', async () => {
  const controller = new AbortController();
  const stream = await client.completions.create(
    { model: await model(), prompt: 'Once upon a time', max_tokens: 200, stream: true },
    { signal: controller.signal },
  );
  try {
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'text_completion');
      controller.abort();
    }
  } catch {
    // Depending on timing the SDK ends the iteration quietly or throws an abort error; either is fine.
  }
  const after = await client.completions.create({ model: await model(), prompt: 'Once', max_tokens: 4 });
  assert.equal(after.choices.length, 1);
  const health = await fetch(new URL('../health', baseURL + '/'));
  assert.equal(health.status, 200);
});
