/**
 * One agent run, as the orchestrator drives it: each step the (simulated) model asks for one tool
 * call, the orchestrator sends it and hands the answer back to the model. The model's plan for a
 * checkout: create the order, charge the card, email a receipt, maybe a shipping notice. A run
 * planned with a re-invocation asks again, in a later step, for a call it already made.
 */
import type { Intent, RunPlan } from './plan.ts';
import type { ToolCall } from './tool-server.ts';
import type { ToolInvocation, ToolResults } from './tools.ts';

/** Sends a call and resolves with the tool's result (the same on every duplicate). */
export type SendCall = (call: ToolCall, intent: Intent, reinvoked: boolean) => Promise<unknown>;

export async function runAgent(plan: RunPlan, send: SendCall): Promise<void> {
  const { tenantId, runId } = plan;
  const made: ToolCall[] = [];
  const call = async (intent: Intent, invocation: ToolInvocation) => {
    const toolCall: ToolCall = { tenantId, runId, ...invocation };
    made[intent] = toolCall;
    const result = await send(toolCall, intent, false);
    if (plan.reinvocation?.after === intent) {
      // The model forgot: the same tool, the same arguments, a later step.
      const again = plan.reinvocation.intent;
      await send(made[again]!, again, true);
    }
    return result;
  };

  const order = (await call(0, { tool: 'create_order', args: { customer: plan.customer, items: plan.items } })) as ToolResults['create_order'];
  const { orderId, amountCents } = order;
  await call(1, { tool: 'charge_card', args: { orderId, amountCents, cardToken: plan.cardToken } });
  await call(2, { tool: 'send_email', args: { orderId, to: plan.customer, template: 'receipt' } });
  if (plan.shipping) await call(3, { tool: 'send_email', args: { orderId, to: plan.customer, template: 'shipping' } });
}
