// The official openai npm client (pinned in package.json) against a running
// `fedge node`: chat, streaming with usage, stop strings (also split across
// tokens, never leaked in a stream), n choices, logprobs, embeddings,
// tokenize/detokenize/apply-template and error objects. run.sh starts the
// node and sets FEDGE_URL (".../v1") and FEDGE_API_KEY.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.FEDGE_URL;
const apiKey = process.env.FEDGE_API_KEY;
assert.ok(baseURL && apiKey, 'set FEDGE_URL and FEDGE_API_KEY (run.sh does)');
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30000 });

const results = [];
async function check(name, body) {
  const started = Date.now();
  await body();
  results.push(`ok   ${name} (${Date.now() - started} ms)`);
}

const models = await client.models.list();
const model = models.data[0].id;
const messages = [{ role: 'user', content: 'How much did well 7 produce?' }];

await check('chat completion', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 12, temperature: 0 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices.length, 1);
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

// The greedy answer, and a stop string from inside it (3 characters from the
// 5th: several byte-level tokens).
const greedy = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
const answer = greedy.choices[0].message.content;
const chars = Array.from(answer);
assert.ok(chars.length >= 8, `the greedy answer is too short to cut: ${JSON.stringify(answer)}`);
const stop = chars.slice(4, 7).join('');
const before = answer.slice(0, answer.indexOf(stop));

await check('streamed chat equals the plain answer, usage in a last chunk', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta?.content ?? '';
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  assert.equal(text, answer);
  assert.equal(finish, greedy.choices[0].finish_reason);
  assert.equal(usage.completion_tokens, greedy.usage.completion_tokens);
});

await check('stop ends the answer before the stop string', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, stop: [stop] });
  assert.equal(r.choices[0].message.content, before);
  assert.equal(r.choices[0].finish_reason, 'stop');
});

await check('a streamed stop string never reaches the client', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 24, temperature: 0, stop: stop, stream: true,
  });
  let text = '';
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      const piece = choice.delta?.content ?? '';
      assert.ok(!piece.includes(stop), `a chunk leaked the stop string: ${JSON.stringify(piece)}`);
      text += piece;
    }
  }
  assert.equal(text, before);
  assert.ok(!text.includes(stop));
});

await check('n choices, each with its index, seeded', async () => {
  const ask = () => client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 1, seed: 11, n: 3 });
  const r = await ask();
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(new Set(r.choices.map((c) => c.message.content)).size, 3);
  const again = await ask();
  assert.deepEqual(again.choices.map((c) => c.message.content), r.choices.map((c) => c.message.content));
  const streamed = ['', '', ''];
  const stream = await client.completions.create({ model, prompt: 'Well 7', max_tokens: 8, temperature: 1, seed: 2, n: 3, stream: true });
  for await (const chunk of stream) for (const c of chunk.choices) streamed[c.index] += c.text;
  const plain = await client.completions.create({ model, prompt: 'Well 7', max_tokens: 8, temperature: 1, seed: 2, n: 3 });
  assert.deepEqual(streamed, plain.choices.map((c) => c.text));
});

await check('logprobs and top_logprobs', async () => {
  const r = await client.chat.completions.create({
    model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3,
  });
  const content = r.choices[0].logprobs.content;
  assert.equal(content.length, r.usage.completion_tokens);
  for (const t of content) {
    assert.ok(t.logprob <= 0);
    assert.equal(t.top_logprobs.length, 3);
    assert.equal(t.top_logprobs[0].token, t.token);  // greedy picks the most likely
    assert.ok(Array.isArray(t.bytes));
  }
  const legacy = await client.completions.create({ model, prompt: 'Well 7', max_tokens: 4, temperature: 0, logprobs: 2 });
  assert.equal(legacy.choices[0].logprobs.tokens.length, 4);
  assert.equal(Object.keys(legacy.choices[0].logprobs.top_logprobs[0]).length, 2);
});

await check('embeddings (the client asks for base64 and decodes it)', async () => {
  const r = await client.embeddings.create({ model, input: ['Well 7 produced 280 barrels', 'pressure dropped'] });
  assert.equal(r.data.length, 2);
  const [a, b] = r.data.map((d) => d.embedding);
  assert.ok(a.length > 0 && a.length === b.length);
  const norm = Math.sqrt(a.reduce((s, v) => s + v * v, 0));
  assert.ok(Math.abs(norm - 1) < 1e-4, `not L2-normalised: ${norm}`);
  assert.ok(r.usage.prompt_tokens > 0);
  const floats = await client.embeddings.create({ model, input: 'Well 7 produced 280 barrels', encoding_format: 'float' });
  floats.data[0].embedding.forEach((v, i) => assert.ok(Math.abs(v - a[i]) < 1e-6));
});

await check('tokenize, detokenize and apply-template', async () => {
  const root = baseURL.replace(/\/v1\/?$/, '');
  const post = async (path, body) => {
    const res = await fetch(root + path, {
      method: 'POST', headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${path}: ${res.status}`);
    return res.json();
  };
  const { tokens } = await post('/tokenize', { content: 'Well 7' });
  assert.ok(tokens.length > 0);
  assert.equal((await post('/detokenize', { tokens })).content, 'Well 7');
  const { prompt } = await post('/apply-template', { messages });
  assert.ok(prompt.includes(messages[0].content));
});

await check('a bad request raises APIError 400 with the server\'s message and param', async () => {
  for (const [body, param] of [
    [{ model, messages, n: 100 }, 'n'],
    [{ model, messages, stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    [{ model, messages, logprobs: true, top_logprobs: 1000 }, 'top_logprobs'],
    [{ model, messages, temperature: 'hot' }, 'temperature'],
  ]) {
    await assert.rejects(client.chat.completions.create(body), (err) => {
      assert.ok(err instanceof OpenAI.APIError, `not an APIError: ${err}`);
      assert.ok(err instanceof OpenAI.BadRequestError);
      assert.equal(err.status, 400);
      assert.equal(err.param, param);
      assert.ok(err.message.includes(param), err.message);
      return true;
    });
  }
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4', messages }), (err) => {
    assert.equal(err.status, 404);
    assert.equal(err.code, 'model_not_found');
    return true;
  });
  const stranger = new OpenAI({ baseURL, apiKey: 'sk-wrong-key-0123456789abcdef0123456789', maxRetries: 0 });
  await assert.rejects(stranger.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError);
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
});

console.log(results.join('\n'));
console.log(`openai client: all ${results.length} checks passed against ${baseURL}`);
