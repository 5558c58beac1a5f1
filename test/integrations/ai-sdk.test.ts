/**
 * pg-once/ai-sdk driven through the real AI SDK (generateText, tool approval, toolsContext) with
 * its mock language model, against the real Postgres harness as a non-bypass application role.
 */
import { generateText, stepCountIs, type ModelMessage } from 'ai';
import { mockId, MockLanguageModelV4 } from 'ai/test';
import { createHash } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { idempotentTool, type IdempotentToolOptions } from '../../src/integrations/ai-sdk.ts';
import { canonicalJson, IdempotencyKeyReusedError, InvalidKeyError, InvalidOptionsError, withTenant } from '../../src/index.ts';
import { createAppFixture, type AppFixture } from '../support/app-fixture.ts';

let fx: AppFixture;
beforeAll(async () => {
  fx = await createAppFixture();
});
afterAll(async () => {
  await fx?.close();
});

let unique = 0;
const fresh = (label: string) => `${label}-${++unique}-${Date.now()}`;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sha256Hex = (text: string) => createHash('sha256').update(text).digest('hex');

const usage = {
  inputTokens: { total: 10, noCache: 10, cacheRead: 0, cacheWrite: 0 },
  outputTokens: { total: 5, text: 5, reasoning: 0 },
};

interface ScriptedCall {
  id: string;
  input: { orderKey: string; amount: number };
}

/**
 * A mock model that plays a script: at its n-th step (n = assistant turns already in the prompt)
 * it calls charge_card with the n-th list of calls, and answers 'done' once the script runs out.
 * With `ids: 'scripted'` the same prompt always gets the same tool-call ids, as when stored
 * messages are re-sent; with `ids: 'fresh'` every generation issues new ones (the SDK's own
 * mockId), as real providers do when a request is retried and the model is asked again.
 */
function scriptedModel(steps: ScriptedCall[][], ids: 'scripted' | 'fresh' = 'scripted') {
  const nextId = mockId({ prefix: 'call' });
  return new MockLanguageModelV4({
    doGenerate: async ({ prompt }) => {
      const calls = steps[prompt.filter((message) => message.role === 'assistant').length];
      if (!calls) return { content: [{ type: 'text', text: 'done' }], finishReason: { unified: 'stop', raw: 'stop' }, usage, warnings: [] };
      return {
        content: calls.map((call) => ({
          type: 'tool-call',
          toolCallId: ids === 'fresh' ? nextId() : call.id,
          toolName: 'charge_card',
          input: JSON.stringify(call.input),
        })),
        finishReason: { unified: 'tool-calls', raw: 'tool_calls' },
        usage,
        warnings: [],
      };
    },
  });
}

type ChargeContext = { tenantId: string; runId: string };

/** charge_card: inserts one order per execution, counts executions, returns a timestamped receipt. */
function chargeCard(overrides: Partial<IdempotentToolOptions<{ orderKey: string; amount: number }, ChargeContext>> = {}, delayMs = 0) {
  const executions = { count: 0 };
  const tool = idempotentTool(
    {
      description: 'Charge the card on file for an order',
      inputSchema: z.object({ orderKey: z.string(), amount: z.number().int() }),
      contextSchema: z.object({ tenantId: z.string(), runId: z.string() }),
      execute: async ({ orderKey, amount }, { toolCallId }, tx) => {
        executions.count += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, ${amount})`.execute(tx);
        if (delayMs > 0) await sleep(delayMs);
        return { chargeId: `ch_${orderKey}`, amount, toolCallId, chargedAt: new Date() };
      },
    },
    {
      db: fx.app,
      name: 'charge_card',
      tenant: ({ context }) => context.tenantId,
      scope: ({ context }) => context.runId,
      ...overrides,
    },
  );
  return { tool, executions };
}

function runAgent(model: MockLanguageModelV4, tool: ReturnType<typeof chargeCard>['tool'], context: ChargeContext, messages?: ModelMessage[]) {
  return generateText({
    model,
    messages: messages ?? [{ role: 'user', content: 'Charge the order.' }],
    tools: { charge_card: tool },
    toolsContext: { charge_card: context },
    stopWhen: stepCountIs(5),
  });
}

type RunResult = Awaited<ReturnType<typeof runAgent>>;
const toolResults = (result: RunResult) => result.steps.flatMap((step) => step.toolResults).map((part) => part.output);
const toolCallIds = (result: RunResult) => result.steps.flatMap((step) => step.toolCalls).map((part) => part.toolCallId);
const contentKey = (runId: string, input: unknown) => `${runId}:charge_card:${sha256Hex(canonicalJson(input)).slice(0, 32)}`;
const toolErrors = (result: RunResult) => result.steps.flatMap((step) => step.content).flatMap((part) => (part.type === 'tool-error' ? [part.error] : []));
const ordersFor = async (tenantId: string, orderKey: string) => (await fx.orders(tenantId)).filter((row) => row.key === orderKey);

describe('idempotentTool (AI SDK)', () => {
  it('a retried request whose model issues NEW tool-call ids (as real providers do): one charge by default, the same result', async () => {
    const orderKey = fresh('retry');
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    const { tool, executions } = chargeCard();
    const model = scriptedModel([[{ id: 'unused', input: { orderKey, amount: 1_250 } }]], 'fresh');

    const first = await runAgent(model, tool, context);
    const retry = await runAgent(model, tool, context);

    expect(first.text).toBe('done');
    // The model was asked again and answered under another id...
    expect(toolCallIds(retry)).toHaveLength(1);
    expect(toolCallIds(retry)).not.toEqual(toolCallIds(first));
    // ...and still the card was charged once: the retry got the stored receipt, timestamp included.
    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-ai', orderKey)).toHaveLength(1);
    expect(toolResults(first)).toEqual([expect.objectContaining({ chargeId: `ch_${orderKey}`, amount: 1_250, toolCallId: toolCallIds(first)[0] })]);
    expect(toolResults(retry)).toEqual(toolResults(first));
    const records = await fx.rows<{ key: string; tool: string; status: string }>(
      'idempotency_keys',
      `tenant_id = 'tenant-ai' AND key LIKE '${context.runId}:%'`,
    );
    expect(records).toEqual([
      expect.objectContaining({ key: contentKey(context.runId, { orderKey, amount: 1_250 }), tool: 'charge_card', status: 'completed' }),
    ]);
  });

  it('contentKeys: false keys on the toolCallId: re-sent ids replay, but a retry with new ids charges again', async () => {
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    const resentOrder = fresh('resent');
    const byId = chargeCard({ contentKeys: false });
    const resent = scriptedModel([[{ id: 'call_1', input: { orderKey: resentOrder, amount: 5 } }]]);
    await runAgent(resent, byId.tool, context);
    await runAgent(resent, byId.tool, context);
    expect(await ordersFor('tenant-ai', resentOrder)).toHaveLength(1);
    const records = await fx.rows<{ key: string }>('idempotency_keys', `key LIKE '${context.runId}:%'`);
    expect(records.map((row) => row.key)).toEqual([`${context.runId}:charge_card:call_1`]);

    const freshOrder = fresh('fresh-ids');
    const freshIds = scriptedModel([[{ id: 'unused', input: { orderKey: freshOrder, amount: 5 } }]], 'fresh');
    await runAgent(freshIds, byId.tool, context);
    await runAgent(freshIds, byId.tool, context);
    expect(await ordersFor('tenant-ai', freshOrder)).toHaveLength(2); // what the default prevents
  });

  it('a run resumed from stored messages (an approval delivered twice) executes the approved call once', async () => {
    const orderKey = fresh('approval');
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    const { tool, executions } = chargeCard();
    const model = scriptedModel([[{ id: 'call_appr', input: { orderKey, amount: 990 } }]]);
    const options = {
      tools: { charge_card: tool },
      toolsContext: { charge_card: context },
      toolApproval: { charge_card: 'user-approval' as const },
      stopWhen: stepCountIs(5),
    };

    const prompt: ModelMessage[] = [{ role: 'user', content: 'Charge the order.' }];
    const paused = await generateText({ model, messages: prompt, ...options });
    const request = paused.content.find((part) => part.type === 'tool-approval-request');
    expect(request).toBeDefined();
    expect(executions.count).toBe(0);

    // The user's approval is stored with the conversation; the request carrying it is retried.
    const resumed: ModelMessage[] = [
      ...prompt,
      ...paused.response.messages,
      { role: 'tool', content: [{ type: 'tool-approval-response', approvalId: request!.approvalId, approved: true }] },
    ];
    await generateText({ model, messages: resumed, ...options });
    await generateText({ model, messages: resumed, ...options });

    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-ai', orderKey)).toHaveLength(1);
    // Both deliveries showed the model the same tool result.
    const seen = model.doGenerateCalls
      .slice(1)
      .map((call) => call.prompt.flatMap((message) => (message.role === 'tool' ? message.content.filter((part) => part.type === 'tool-result') : [])));
    expect(seen).toHaveLength(2);
    expect(seen[0]).toHaveLength(1);
    expect(seen[1]).toEqual(seen[0]);
  });

  it('two workers running the same step at once: one charge, both get the same result', async () => {
    const orderKey = fresh('parallel');
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    const { tool, executions } = chargeCard({}, 150);
    const model = scriptedModel([[{ id: 'call_par', input: { orderKey, amount: 300 } }]]);

    const results = await Promise.all([runAgent(model, tool, context), runAgent(model, tool, context), runAgent(model, tool, context)]);

    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-ai', orderKey)).toHaveLength(1);
    for (const result of results) expect(toolResults(result)).toEqual(toolResults(results[0]!));
    // Two audit rows record a replay. (The executing call may add a 'waited' row with outcome
    // 'executed': the core infers a wait from a slow insert, which a loaded machine can produce.)
    const audit = await fx.rows<{ detail: { outcome: string } }>('dedupe_audit', `key = '${contentKey(context.runId, { orderKey, amount: 300 })}'`);
    expect(audit.filter((row) => row.detail.outcome === 'replayed')).toHaveLength(2);
  });

  it('the model re-issuing a call under a new id runs once by default, twice with contentKeys: false', async () => {
    const script = (orderKey: string) => [[{ id: 'call_a', input: { orderKey, amount: 40 } }], [{ id: 'call_b', input: { orderKey, amount: 40 } }]];

    const byIdOrder = fresh('by-id');
    const byId = chargeCard({ contentKeys: false });
    const byIdRun = await runAgent(scriptedModel(script(byIdOrder)), byId.tool, { tenantId: 'tenant-ai', runId: fresh('run') });
    expect(toolResults(byIdRun)).toHaveLength(2);
    expect(byId.executions.count).toBe(2);
    expect(await ordersFor('tenant-ai', byIdOrder)).toHaveLength(2);

    const byContentOrder = fresh('by-content');
    const byContent = chargeCard();
    const runId = fresh('run');
    const byContentRun = await runAgent(scriptedModel(script(byContentOrder)), byContent.tool, { tenantId: 'tenant-ai', runId });
    expect(byContent.executions.count).toBe(1);
    expect(await ordersFor('tenant-ai', byContentOrder)).toHaveLength(1);
    const [first, second] = toolResults(byContentRun);
    expect(second).toEqual(first);
    const records = await fx.rows<{ key: string }>('idempotency_keys', `key LIKE '${runId}:%'`);
    expect(records.map((row) => row.key)).toEqual([expect.stringMatching(new RegExp(`^${runId}:charge_card:[0-9a-f]{32}$`))]);
  });

  it('the same toolCallId with a different input is refused and writes nothing', async () => {
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    const firstOrder = fresh('reuse-a');
    const secondOrder = fresh('reuse-b');
    const { tool, executions } = chargeCard({ contentKeys: false });

    await runAgent(scriptedModel([[{ id: 'call_same', input: { orderKey: firstOrder, amount: 10 } }]]), tool, context);
    const reused = await runAgent(scriptedModel([[{ id: 'call_same', input: { orderKey: secondOrder, amount: 99 } }]]), tool, context);

    expect(executions.count).toBe(1);
    const errors = toolErrors(reused);
    expect(errors).toHaveLength(1);
    expect(errors[0]).toBeInstanceOf(IdempotencyKeyReusedError);
    expect(await ordersFor('tenant-ai', secondOrder)).toEqual([]);
    expect(await ordersFor('tenant-ai', firstOrder)).toHaveLength(1);
  });

  it('keys are per tenant: the same run id and toolCallId in two tenants charge once each', async () => {
    const orderKey = fresh('tenants');
    const runId = fresh('run');
    const { tool, executions } = chargeCard();
    const model = scriptedModel([[{ id: 'call_t', input: { orderKey, amount: 5 } }]]);

    await runAgent(model, tool, { tenantId: 'tenant-x', runId });
    await runAgent(model, tool, { tenantId: 'tenant-y', runId });
    await runAgent(model, tool, { tenantId: 'tenant-x', runId });

    expect(executions.count).toBe(2);
    expect(await ordersFor('tenant-x', orderKey)).toHaveLength(1);
    expect(await ordersFor('tenant-y', orderKey)).toHaveLength(1);
  });

  it('an execute that throws leaves nothing behind, and the retried run executes', async () => {
    const orderKey = fresh('throws');
    const context = { tenantId: 'tenant-ai', runId: fresh('run') };
    let attempts = 0;
    const tool = idempotentTool(
      {
        inputSchema: z.object({ orderKey: z.string(), amount: z.number().int() }),
        contextSchema: z.object({ tenantId: z.string(), runId: z.string() }),
        execute: async ({ orderKey: key, amount }, _options, tx) => {
          attempts += 1;
          await sql`INSERT INTO orders (key, amount) VALUES (${key}, ${amount})`.execute(tx);
          if (attempts === 1) throw new Error('card network unavailable');
          return { ok: true };
        },
      },
      { db: fx.app, name: 'charge_card', tenant: ({ context: c }) => c.tenantId, scope: ({ context: c }) => c.runId },
    );
    const model = scriptedModel([[{ id: 'call_err', input: { orderKey, amount: 7 } }]]);

    const failed = await generateText({ model, prompt: 'go', tools: { charge_card: tool }, toolsContext: { charge_card: context }, stopWhen: stepCountIs(5) });
    expect(failed.steps.flatMap((step) => step.content).some((part) => part.type === 'tool-error')).toBe(true);
    expect(await ordersFor('tenant-ai', orderKey)).toEqual([]);
    expect(await fx.rows('idempotency_keys', `key LIKE '${context.runId}:%'`)).toEqual([]);

    const retried = await generateText({ model, prompt: 'go', tools: { charge_card: tool }, toolsContext: { charge_card: context }, stopWhen: stepCountIs(5) });
    expect(retried.steps.flatMap((step) => step.toolResults).map((part) => part.output)).toEqual([{ ok: true }]);
    expect(await ordersFor('tenant-ai', orderKey)).toHaveLength(1);
  });

  it('key parts are encoded, so a scope or tool call id with colons cannot collide with another', async () => {
    const { tool } = chargeCard({ contentKeys: false });
    const model = scriptedModel([[{ id: 'b:call', input: { orderKey: fresh('colon-1'), amount: 1 } }]]);
    const other = scriptedModel([[{ id: 'call', input: { orderKey: fresh('colon-2'), amount: 1 } }]]);
    const runId = fresh('run');
    await runAgent(model, tool, { tenantId: 'tenant-ai', runId });
    // Scope 'run:b' + tool call 'call' must not meet scope 'run' + tool call 'b:call'.
    await runAgent(other, tool, { tenantId: 'tenant-ai', runId: `${runId}:charge_card:b` });
    const records = await fx.rows<{ key: string }>('idempotency_keys', `key LIKE '${runId}:%'`);
    expect(records.map((row) => row.key).sort()).toEqual([`${runId}:charge_card:b%3Acall`, `${runId}:charge_card:b:charge_card:call`].sort());
  });

  it('refuses bad options when the tool is wrapped, and a call without a toolCallId when it runs', async () => {
    const definition = { inputSchema: z.object({}), execute: async () => 'ok' };
    expect(() => idempotentTool(definition, { db: fx.app, name: 'noop', tenant: 't' } as never)).toThrow(InvalidOptionsError);
    expect(() => idempotentTool(definition, { db: fx.app, name: '', tenant: 't', scope: 's' })).toThrow(InvalidOptionsError);
    expect(() => idempotentTool(definition, { db: fx.app, name: 'noop', tenant: 't', scope: 's', ttl: 'soon' })).toThrow(InvalidOptionsError);
    await withTenant(fx.app, 'tenant-ai', async (tx) => {
      expect(() => idempotentTool(definition, { db: tx as never, name: 'noop', tenant: 't', scope: 's' })).toThrow(InvalidOptionsError);
    });

    const byId = idempotentTool(definition, { db: fx.app, name: 'noop', tenant: 'tenant-ai', scope: 'run', contentKeys: false });
    await expect(byId.execute!({}, { toolCallId: '', messages: [], context: undefined })).rejects.toBeInstanceOf(InvalidKeyError);
    // Content keys (the default) need no toolCallId.
    const byContent = idempotentTool(definition, { db: fx.app, name: 'noop', tenant: 'tenant-ai', scope: fresh('run') });
    expect(await byContent.execute!({}, { toolCallId: '', messages: [], context: undefined })).toBe('ok');
  });
});
