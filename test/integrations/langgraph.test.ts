/**
 * pg-once/langgraph driven through real LangGraph.js graphs (StateGraph + ToolNode with
 * LangChain's fake chat model; the functional API's entrypoint + task), checkpointed by a
 * MemorySaver, against the real Postgres harness as a non-bypass application role.
 *
 * A crash is simulated where it matters: the worker dies after the tool's transaction committed
 * and before the checkpointer recorded the step. CrashingSaver refuses every write from that
 * moment on, as a dead process would make none, and is revived for the resume.
 */
import { AIMessageChunk, HumanMessage, ToolMessage, type BaseMessage } from '@langchain/core/messages';
import { tool, type StructuredTool, type ToolRuntime } from '@langchain/core/tools';
import { FakeStreamingChatModel } from '@langchain/core/utils/testing';
import { END, entrypoint, MemorySaver, MessagesAnnotation, START, StateGraph } from '@langchain/langgraph';
import { ToolNode } from '@langchain/langgraph/prebuilt';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { idempotentLangGraphTool, idempotentTask } from '../../src/integrations/langgraph.ts';
import { InvalidKeyError, InvalidOptionsError, runIdempotent, withTenant } from '../../src/index.ts';
import { errorOf } from '../support/error-of.ts';
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
const ordersFor = async (tenantId: string, orderKey: string) => (await fx.orders(tenantId)).filter((row) => row.key === orderKey);

type PutWritesArgs = Parameters<MemorySaver['putWrites']>;

/** A MemorySaver whose worker dies at the first write matching `crashOn`: no write gets through after that. */
class CrashingSaver extends MemorySaver {
  private crashOn: ((writes: PutWritesArgs[1]) => boolean) | undefined;
  private dead = false;

  dieAt(predicate: (writes: PutWritesArgs[1]) => boolean): this {
    this.crashOn = predicate;
    return this;
  }

  revive(): void {
    this.dead = false;
  }

  override async putWrites(...args: PutWritesArgs): Promise<void> {
    if (this.crashOn?.(args[1])) {
      this.crashOn = undefined;
      this.dead = true;
    }
    if (this.dead) throw new Error('worker died before the checkpointer recorded the step');
    return super.putWrites(...args);
  }

  override async put(...args: Parameters<MemorySaver['put']>): ReturnType<MemorySaver['put']> {
    if (this.dead) throw new Error('worker died before the checkpointer recorded the step');
    return super.put(...args);
  }
}

const writesToolMessage = (writes: PutWritesArgs[1]) =>
  writes.some(([channel, value]) => channel === 'messages' && [value].flat().some((message) => ToolMessage.isInstance(message)));
const writesTaskResult = (writes: PutWritesArgs[1]) => writes.some(([channel]) => channel === '__return__');

type TenantContext = { tenantId: string };
type ChargeInput = { orderKey: string; amount: number };

/** charge_card as a LangChain tool: inserts one order per execution and returns a timestamped receipt. */
function chargeCardTool(overrides: { contentKeys?: boolean; delayMs?: number } = {}) {
  const executions = { count: 0 };
  const chargeCard = tool(
    idempotentLangGraphTool(
      async ({ orderKey, amount }: ChargeInput, runtime: ToolRuntime<unknown, TenantContext>, tx) => {
        executions.count += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, ${amount})`.execute(tx);
        if (overrides.delayMs) await sleep(overrides.delayMs);
        return { chargeId: `ch_${orderKey}`, amount, toolCallId: runtime.toolCallId, chargedAt: new Date() };
      },
      { db: fx.app, tenant: (runtime) => runtime.context.tenantId, contentKeys: overrides.contentKeys ?? false },
    ),
    { name: 'charge_card', description: 'Charge the card on file for an order', schema: z.object({ orderKey: z.string(), amount: z.number().int() }) },
  );
  return { chargeCard, executions };
}

/**
 * agent -> tools -> END. The agent is LangChain's fake chat model bound to the tools, answering with
 * the given tool calls; `beforeTools` and `afterTools` run around ToolNode in the same node (to fail
 * it on purpose).
 */
function agentGraph(options: {
  chargeCard: StructuredTool;
  toolCalls: { id: string; args: ChargeInput }[];
  checkpointer?: MemorySaver;
  beforeTools?: () => void;
  afterTools?: () => void;
  retryTools?: boolean;
}) {
  const model = new FakeStreamingChatModel({
    chunks: [new AIMessageChunk({ content: '', tool_calls: options.toolCalls.map((call) => ({ ...call, name: 'charge_card', type: 'tool_call' as const })) })],
  }).bindTools([options.chargeCard]);
  const modelCalls = { count: 0 };
  const toolNode = new ToolNode([options.chargeCard]);
  const graph = new StateGraph(MessagesAnnotation)
    .addNode('agent', async (state) => {
      modelCalls.count += 1;
      return { messages: [await model.invoke(state.messages)] };
    })
    .addNode(
      'tools',
      async (state, config) => {
        options.beforeTools?.();
        const update = await toolNode.invoke(state, config);
        options.afterTools?.();
        return update;
      },
      options.retryTools ? { retryPolicy: { maxAttempts: 3, initialInterval: 10, jitter: false, retryOn: () => true } } : {},
    )
    .addEdge(START, 'agent')
    .addEdge('agent', 'tools')
    .addEdge('tools', END)
    .compile(options.checkpointer ? { checkpointer: options.checkpointer } : {});
  return { graph, modelCalls };
}

/** How many calls of `key` the audit trail records as replayed. */
const replays = async (key: string) =>
  (await fx.rows<{ detail: { outcome: string } }>('dedupe_audit', `key = '${key}'`)).filter((row) => row.detail.outcome === 'replayed').length;
const toolMessages = (messages: BaseMessage[]) => messages.filter((message) => ToolMessage.isInstance(message));
const receipts = (messages: BaseMessage[]) => toolMessages(messages).map((message) => JSON.parse(String(message.content)));

describe('idempotentLangGraphTool (StateGraph + ToolNode)', () => {
  it('a node retry re-runs ToolNode with the same tool call id: one charge, the same receipt', async () => {
    const orderKey = fresh('retry');
    const threadId = fresh('thread');
    const { chargeCard, executions } = chargeCardTool();
    let failures = 1;
    const { graph } = agentGraph({
      chargeCard,
      toolCalls: [{ id: 'call_retry', args: { orderKey, amount: 1_200 } }],
      checkpointer: new MemorySaver(),
      retryTools: true,
      afterTools: () => {
        if (failures-- > 0) throw new Error('connection reset after the tools ran');
      },
    });

    const result = await graph.invoke(
      { messages: [new HumanMessage('charge it')] },
      { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' },
    );

    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);
    expect(receipts(result.messages)).toEqual([expect.objectContaining({ chargeId: `ch_${orderKey}`, amount: 1_200, toolCallId: 'call_retry' })]);
    const records = await fx.rows<{ key: string; tool: string }>('idempotency_keys', `key LIKE 'lg:${threadId}:%'`);
    expect(records).toEqual([expect.objectContaining({ key: `lg:${threadId}:call_retry`, tool: 'charge_card', tenant_id: 'tenant-lg' })]);
    expect(await replays(`lg:${threadId}:call_retry`)).toBe(1);
  });

  it('a run resumed from its checkpoint after a crash replays the tool call; the model is not asked again', async () => {
    const orderKey = fresh('resume');
    const threadId = fresh('thread');
    const { chargeCard, executions } = chargeCardTool();
    const saver = new CrashingSaver().dieAt(writesToolMessage);
    const { graph, modelCalls } = agentGraph({ chargeCard, toolCalls: [{ id: 'call_resume', args: { orderKey, amount: 480 } }], checkpointer: saver });
    const config = { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' as const };

    await expect(graph.invoke({ messages: [new HumanMessage('charge it')] }, config)).rejects.toThrow('worker died');
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1); // the charge committed before the crash
    const beforeResume = await graph.getState(config);
    expect(beforeResume.next).toEqual(['tools']);

    saver.revive();
    const resumed = await graph.invoke(null, config);

    expect(executions.count).toBe(1);
    expect(modelCalls.count).toBe(1);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);
    expect(receipts(resumed.messages)).toEqual([expect.objectContaining({ chargeId: `ch_${orderKey}`, toolCallId: 'call_resume' })]);
  });

  it('two workers resuming the same crashed thread at once: one charge, the same receipt for both', async () => {
    const orderKey = fresh('workers');
    const threadId = fresh('thread');
    const { chargeCard, executions } = chargeCardTool({ delayMs: 150 });
    // The first worker dies as the tools step starts, before anything is charged.
    let dieBeforeTools = true;
    const { graph } = agentGraph({
      chargeCard,
      toolCalls: [{ id: 'call_workers', args: { orderKey, amount: 60 } }],
      checkpointer: new MemorySaver(),
      beforeTools: () => {
        if (dieBeforeTools) {
          dieBeforeTools = false;
          throw new Error('worker died');
        }
      },
    });
    const config = { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' as const };
    await expect(graph.invoke({ messages: [new HumanMessage('charge it')] }, config)).rejects.toThrow('worker died');
    expect(await ordersFor('tenant-lg', orderKey)).toEqual([]);

    const [first, second] = await Promise.all([graph.invoke(null, config), graph.invoke(null, config)]);

    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);
    expect(receipts(first.messages)).toHaveLength(1);
    expect(receipts(second.messages)).toEqual(receipts(first.messages));
  });

  it('the model repeating a call under a new id in one message: twice by id, once with contentKeys', async () => {
    const twice = (orderKey: string) => [
      { id: 'call_x', args: { orderKey, amount: 25 } },
      { id: 'call_y', args: { orderKey, amount: 25 } },
    ];
    const config = (threadId: string) => ({ configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' as const });

    const byIdOrder = fresh('by-id');
    const byId = chargeCardTool();
    await agentGraph({ chargeCard: byId.chargeCard, toolCalls: twice(byIdOrder), checkpointer: new MemorySaver() }).graph.invoke(
      { messages: [new HumanMessage('charge it')] },
      config(fresh('thread')),
    );
    expect(byId.executions.count).toBe(2);
    expect(await ordersFor('tenant-lg', byIdOrder)).toHaveLength(2);

    // ToolNode runs both calls concurrently: the second waits for the first and replays it.
    const byContentOrder = fresh('by-content');
    const threadId = fresh('thread');
    const byContent = chargeCardTool({ contentKeys: true, delayMs: 100 });
    const result = await agentGraph({ chargeCard: byContent.chargeCard, toolCalls: twice(byContentOrder), checkpointer: new MemorySaver() }).graph.invoke(
      { messages: [new HumanMessage('charge it')] },
      config(threadId),
    );
    expect(byContent.executions.count).toBe(1);
    expect(await ordersFor('tenant-lg', byContentOrder)).toHaveLength(1);
    const [x, y] = receipts(result.messages);
    expect(y).toEqual(x);
    const records = await fx.rows<{ key: string }>('idempotency_keys', `key LIKE 'lg:${threadId}:%'`);
    expect(records.map((row) => row.key)).toEqual([expect.stringMatching(new RegExp(`^lg:${threadId}:charge_card:[0-9a-f]{32}$`))]);
  });

  it("a key in the lg: namespace cannot be claimed outside the adapter: the thread's tool call still runs", async () => {
    const orderKey = fresh('namespace');
    const threadId = fresh('thread');
    const { chargeCard, executions } = chargeCardTool();
    const { graph } = agentGraph({ chargeCard, toolCalls: [{ id: 'call_ns', args: { orderKey, amount: 9 } }], checkpointer: new MemorySaver() });

    const error = await errorOf(withTenant(fx.app, 'tenant-lg', (tx) => runIdempotent(tx, `lg:${threadId}:call_ns`, async () => 'pre-empted')));
    expect(error).toBeInstanceOf(InvalidKeyError);

    const result = await graph.invoke(
      { messages: [new HumanMessage('charge it')] },
      { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' },
    );
    expect(executions.count).toBe(1);
    expect(receipts(result.messages)).toEqual([expect.objectContaining({ chargeId: `ch_${orderKey}`, toolCallId: 'call_ns' })]);
    expect((await fx.rows<{ key: string }>('idempotency_keys', `key LIKE 'lg:${threadId}:%'`)).map((row) => row.key)).toEqual([`lg:${threadId}:call_ns`]);
  });

  it('a graph run without a thread_id gets an error tool message, and nothing is written', async () => {
    const orderKey = fresh('no-thread');
    const { chargeCard, executions } = chargeCardTool();
    const { graph } = agentGraph({ chargeCard, toolCalls: [{ id: 'call_nothread', args: { orderKey, amount: 1 } }] });

    const result = await graph.invoke({ messages: [new HumanMessage('charge it')] }, { context: { tenantId: 'tenant-lg' } });

    const [message] = toolMessages(result.messages);
    expect(message?.status).toBe('error');
    expect(String(message?.content)).toContain('thread_id');
    expect(executions.count).toBe(0);
    expect(await ordersFor('tenant-lg', orderKey)).toEqual([]);
  });

  it('refuses bad options when the tool function is wrapped', () => {
    const fn = async () => 'ok';
    expect(() => idempotentLangGraphTool(fn, { db: fx.app, tenant: '' })).toThrow(InvalidOptionsError);
    expect(() => idempotentLangGraphTool(fn, { db: {} as never, tenant: 't' })).toThrow(InvalidOptionsError);
    expect(() => idempotentLangGraphTool(fn, { db: fx.app, tenant: 't', waitMs: -1 })).toThrow(InvalidOptionsError);
  });
});

describe('idempotentTask (functional API)', () => {
  function chargeTask(delayMs = 0) {
    const executions = { count: 0 };
    const charge = idempotentTask(
      'charge_card',
      async ({ orderKey, amount }: ChargeInput, tx) => {
        executions.count += 1;
        await sql`INSERT INTO orders (key, amount) VALUES (${orderKey}, ${amount})`.execute(tx);
        if (delayMs) await sleep(delayMs);
        return { chargeId: `ch_${orderKey}`, amount, chargedAt: new Date() };
      },
      { db: fx.app, tenant: (config) => (config.context as TenantContext).tenantId },
    );
    return { charge, executions };
  }

  it('a task re-run after a crash before its result was checkpointed replays: one charge', async () => {
    const orderKey = fresh('task-crash');
    const threadId = fresh('thread');
    const { charge, executions } = chargeTask();
    const saver = new CrashingSaver().dieAt(writesTaskResult);
    const workflow = entrypoint({ name: 'checkout', checkpointer: saver }, async (order: ChargeInput) => {
      const receipt = await charge(order);
      return { receipt };
    });
    const config = { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' as const };

    await expect(workflow.invoke({ orderKey, amount: 875 }, config)).rejects.toThrow('worker died');
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);

    saver.revive();
    const resumed = await workflow.invoke(null, config);

    // LangGraph ran the task function again (it had no result for it); pg-once replayed it.
    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);
    expect(resumed.receipt).toMatchObject({ chargeId: `ch_${orderKey}`, amount: 875 });
    const [record] = await fx.rows<{ key: string; tool: string; result: { chargedAt: string } }>('idempotency_keys', `key LIKE 'lg:${threadId}:%'`);
    expect(record?.key).toMatch(new RegExp(`^lg:${threadId}:checkout:[0-9a-f-]{36}\\|charge_card:[0-9a-f-]{36}$`));
    expect(record?.tool).toBe('charge_card');
    expect(resumed.receipt.chargedAt).toBe(record?.result.chargedAt);
    expect(await replays(record!.key)).toBe(1);
  });

  it('two workers resuming the same crashed workflow at once: one charge', async () => {
    const orderKey = fresh('task-workers');
    const threadId = fresh('thread');
    const { charge, executions } = chargeTask(150);
    let dieBeforeCharging = true;
    const saver = new MemorySaver();
    const workflow = entrypoint({ name: 'checkout', checkpointer: saver }, async (order: ChargeInput) => {
      if (dieBeforeCharging) {
        dieBeforeCharging = false;
        throw new Error('worker died');
      }
      return { receipt: await charge(order) };
    });
    const config = { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' as const };
    await expect(workflow.invoke({ orderKey, amount: 10 }, config)).rejects.toThrow('worker died');

    const [first, second] = await Promise.all([workflow.invoke(null, config), workflow.invoke(null, config)]);

    expect(executions.count).toBe(1);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(1);
    expect(second.receipt).toEqual(first.receipt);
  });

  it('each call of a task in a workflow is its own execution, even with the same input', async () => {
    const orderKey = fresh('task-twice');
    const threadId = fresh('thread');
    const { charge, executions } = chargeTask();
    const workflow = entrypoint({ name: 'split_payment', checkpointer: new MemorySaver() }, async (order: ChargeInput) => {
      const first = await charge(order);
      const second = await charge(order);
      return [first, second];
    });

    await workflow.invoke({ orderKey, amount: 50 }, { configurable: { thread_id: threadId }, context: { tenantId: 'tenant-lg' }, durability: 'sync' });

    expect(executions.count).toBe(2);
    expect(await ordersFor('tenant-lg', orderKey)).toHaveLength(2);
    expect(await fx.rows('idempotency_keys', `key LIKE 'lg:${threadId}:%'`)).toHaveLength(2);
  });

  it('a task outside a checkpointed thread refuses before writing anything', async () => {
    const orderKey = fresh('task-nothread');
    const { charge, executions } = chargeTask();
    const workflow = entrypoint({ name: 'checkout' }, async (order: ChargeInput) => charge(order));

    await expect(workflow.invoke({ orderKey, amount: 5 }, { context: { tenantId: 'tenant-lg' } })).rejects.toMatchObject({ code: 'INVALID_KEY' });
    expect(executions.count).toBe(0);
    expect(await ordersFor('tenant-lg', orderKey)).toEqual([]);
  });
});
