/**
 * Type tests of the HTTP adapters: the handler's transaction carries the caller's database type
 * (Hono `c.get('tx')`, Express `res.locals.tx`), and the public options interface stays in step
 * with the schema that validates it.
 */
import express from 'express';
import { Hono } from 'hono';
import type { Kysely, Transaction } from 'kysely';
import { describe, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import type { httpIdempotencyOptionsSchema, HttpIdempotencyOptions } from '../../../src/http/http-idempotency-options.ts';
import { idempotency as expressIdempotency } from '../../../src/integrations/express.ts';
import { idempotency as honoIdempotency } from '../../../src/integrations/hono.ts';

interface Database {
  orders: { id: number; amount: number };
}
/** Types only: the routes below are type-checked, never run (no database here). */
const db = undefined as unknown as Kysely<Database>;
const typeOnly = (build: () => void) => expectTypeOf(build).toBeFunction();

describe('HTTP adapter types', () => {
  it('options interface and schema name the same fields', () => {
    expectTypeOf<keyof HttpIdempotencyOptions<unknown>>().toEqualTypeOf<keyof z.input<typeof httpIdempotencyOptionsSchema>>();
  });

  it("Hono: c.get('tx') is a Transaction of the caller's database", () => {
    typeOnly(() =>
      new Hono().post('/orders', honoIdempotency({ db, tenant: () => 't' }), (c) => {
        expectTypeOf(c.get('tx')).toEqualTypeOf<Transaction<Database>>();
        return c.text('ok');
      }),
    );
  });

  it("Express: res.locals.tx is a Transaction of the caller's database", () => {
    typeOnly(() =>
      express().post('/orders', expressIdempotency({ db, tenant: (req) => req.get('x-tenant') }), (_req, res) => {
        expectTypeOf(res.locals.tx).toEqualTypeOf<Transaction<Database>>();
        res.end();
      }),
    );
  });
});
