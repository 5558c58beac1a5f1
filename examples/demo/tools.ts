/**
 * The agent's three side-effecting tools. Each writes its business row and an outbox event
 * through the transaction it is given, so the row, the event, the idempotency claim and the
 * stored result commit together or not at all. Nothing here knows about duplicates: that is the
 * point. The events reach the "downstream" systems (fulfilment, the payment provider, the email
 * provider) through the relay, each under a dedupe id those systems drop repeats by.
 */
import { sql, type Transaction } from 'kysely';
import { enqueue } from '../../src/index.ts';

export interface LineItem {
  sku: string;
  quantity: number;
  priceCents: number;
}

export interface ToolArgs {
  create_order: { customer: string; items: LineItem[] };
  charge_card: { orderId: number; amountCents: number; cardToken: string };
  send_email: { orderId: number; to: string; template: 'receipt' | 'shipping' };
}

export interface ToolResults {
  create_order: { orderId: number; amountCents: number };
  charge_card: { chargeId: number; orderId: number; amountCents: number; status: 'requested' };
  send_email: { emailId: number; status: 'queued' };
}

export type ToolName = keyof ToolArgs;

/** What the orchestrator knows about a call besides the model's arguments. */
export interface CallContext {
  runId: string;
  /** Stands for the tool's own work (a fraud check, rendering a template), while the claim is held. */
  work: () => Promise<void>;
}

type Tool<N extends ToolName> = (tx: Transaction<any>, args: ToolArgs[N], context: CallContext) => Promise<ToolResults[N]>;

const createOrder: Tool<'create_order'> = async (tx, args, context) => {
  const amountCents = args.items.reduce((sum, item) => sum + item.quantity * item.priceCents, 0);
  const { rows } = await sql<{ id: number }>`
    INSERT INTO orders (run_id, customer, items, amount_cents)
    VALUES (${context.runId}, ${args.customer}, ${JSON.stringify(args.items)}::jsonb, ${amountCents})
    RETURNING id`.execute(tx);
  const orderId = rows[0]!.id;
  // One ordering key per order: the relay delivers its events in commit order.
  await enqueue(tx, { topic: 'orders.created', payload: { orderId, amountCents, items: args.items }, orderingKey: `order-${orderId}` });
  await context.work();
  return { orderId, amountCents };
};

const chargeCard: Tool<'charge_card'> = async (tx, args, context) => {
  const { rows } = await sql<{ id: number }>`
    INSERT INTO charges (order_id, amount_cents, card_token)
    VALUES (${args.orderId}, ${args.amountCents}, ${args.cardToken})
    RETURNING id`.execute(tx);
  const chargeId = rows[0]!.id;
  // The payment provider charges the card when this event reaches it; the dedupe id travels as
  // its Idempotency-Key, so a redelivery never charges twice.
  await enqueue(tx, { topic: 'payments.charge', payload: { chargeId, ...args }, orderingKey: `order-${args.orderId}` });
  await context.work();
  return { chargeId, orderId: args.orderId, amountCents: args.amountCents, status: 'requested' };
};

const sendEmail: Tool<'send_email'> = async (tx, args, context) => {
  const { rows } = await sql<{ id: number }>`
    INSERT INTO emails (order_id, recipient, template)
    VALUES (${args.orderId}, ${args.to}, ${args.template})
    RETURNING id`.execute(tx);
  const emailId = rows[0]!.id;
  await enqueue(tx, { topic: 'emails.send', payload: { emailId, ...args }, orderingKey: `order-${args.orderId}` });
  await context.work();
  return { emailId, status: 'queued' };
};

/** A call of one of the tools, with the arguments the model wrote for it. */
export type ToolInvocation = { [N in ToolName]: { tool: N; args: ToolArgs[N] } }[ToolName];

export function runTool(tx: Transaction<any>, call: ToolInvocation, context: CallContext): Promise<ToolResults[ToolName]> {
  switch (call.tool) {
    case 'create_order':
      return createOrder(tx, call.args, context);
    case 'charge_card':
      return chargeCard(tx, call.args, context);
    case 'send_email':
      return sendEmail(tx, call.args, context);
  }
}
