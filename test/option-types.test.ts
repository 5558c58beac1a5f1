/**
 * The public option types are hand-written interfaces (so the emitted .d.ts carries a doc comment
 * per field, where a `z.input<>` type would show zod's types and nothing else); the zod schemas
 * beside them still validate. These type tests keep each pair in step: the same keys, the same
 * optionality, and every value of one assignable to the other, both ways. A field added to a
 * schema and not to its interface (or the reverse), or a type changed on one side only, fails
 * `npm run typecheck` (run by .ci/run, and covering test/).
 */
import { describe, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import type {
  DrainOnceOptions,
  HttpSinkOptions,
  MigrateOptions,
  NatsSinkOptions,
  OutboxEvent,
  RateLimit,
  RelayOptions,
  RolesSqlOptions,
  RunIdempotentExternalOptions,
  RunIdempotentOptions,
  Settings,
  StatusOptions,
  SweepOptions,
  WithTenantOptions,
  AmqpSinkOptions,
  RedisStreamSinkOptions,
  CloudEventsOptions,
} from '../src/index.ts';
import type { migrateOptionsSchema } from '../src/ops/migrate/migrate-options.ts';
import type { withTenantOptionsSchema } from '../src/with-tenant-options.ts';
import type { runIdempotentOptionsSchema } from '../src/idempotency/run-idempotent-options.ts';
import type { runIdempotentExternalOptionsSchema } from '../src/idempotency/run-idempotent-external-options.ts';
import type { outboxEventSchema } from '../src/outbox/outbox-event.ts';
import type { relayOptionsSchema } from '../src/outbox/relay-options.ts';
import type { sweepOptionsSchema } from '../src/ops/sweep.ts';
import type { statusOptionsSchema } from '../src/ops/status.ts';
import type { settingsSchema } from '../src/settings.ts';
import type { rateLimitSchema } from '../src/ops/limits.ts';
import type { rolesSqlOptionsSchema } from '../src/roles.ts';
import type { natsSinkOptionsSchema } from '../src/outbox/sinks/nats-sink.ts';
import type { httpSinkOptionsSchema } from '../src/outbox/sinks/http-sink.ts';
import type { amqpSinkOptionsSchema } from '../src/outbox/sinks/amqp-sink.ts';
import type { redisStreamSinkOptionsSchema } from '../src/outbox/sinks/redis-stream-sink.ts';
import type { cloudEventsOptionsSchema } from '../src/outbox/sinks/cloud-event-request.ts';
import type { drainOptionsSchema } from '../src/outbox/drain-options.ts';
import type { ExpressIdempotencyOptions } from '../src/integrations/express.ts';
import type { httpIdempotencyOptionsSchema } from '../src/http/http-idempotency-options.ts';
import type { OutboxTasksOptions } from '../src/integrations/graphile-worker.ts';
import type { outboxTasksOptionsSchema } from '../src/integrations/graphile-worker/outbox-tasks-options.ts';
import type { DashboardOptions } from '../src/dashboard.ts';
import type { dashboardOptionsSchema } from '../src/dashboard/dashboard-options.ts';
import type { DuplicateStormOptions } from '../src/testing.ts';
import type { duplicateStormOptionsSchema } from '../src/testing/duplicate-storm-options.ts';

/** Exact equality of two types (the check expect-type itself uses). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

/**
 * `true` when the interface `I` and the schema's input `S` agree; otherwise a string naming the
 * first way they differ, which the failing assertion prints.
 */
type Agree<I, S> =
  Same<keyof I, keyof S> extends false
    ? { keysOnlyInInterface: Exclude<keyof I, keyof S>; keysOnlyInSchema: Exclude<keyof S, keyof I> }
    : [I] extends [S]
      ? [S] extends [I]
        ? [Required<I>] extends [Required<S>]
          ? [Required<S>] extends [Required<I>]
            ? true
            : 'a field of the schema accepts values the interface does not'
          : 'a field of the interface accepts values the schema does not'
        : 'a schema input is not an interface value (optionality or types differ)'
      : 'an interface value is not a schema input (optionality or types differ)';

describe('public option interfaces agree with their zod schemas', () => {
  it('core: withTenant, runIdempotent, runIdempotentExternal, enqueue, configure', () => {
    expectTypeOf<Agree<WithTenantOptions, z.input<typeof withTenantOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<RunIdempotentOptions, z.input<typeof runIdempotentOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<RunIdempotentExternalOptions, z.input<typeof runIdempotentExternalOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<OutboxEvent, z.input<typeof outboxEventSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<Settings, z.input<typeof settingsSchema>>>().toEqualTypeOf<true>();
  });

  it('relay and sinks: startRelay, drainOnce, outboxTasks, httpSink, natsSink, amqpSink, redisStreamSink', () => {
    expectTypeOf<Agree<RelayOptions, z.input<typeof relayOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<DrainOnceOptions, z.input<typeof drainOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<OutboxTasksOptions, z.input<typeof outboxTasksOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<HttpSinkOptions, z.input<typeof httpSinkOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<CloudEventsOptions, z.input<typeof cloudEventsOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<NatsSinkOptions, z.input<typeof natsSinkOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<AmqpSinkOptions, z.input<typeof amqpSinkOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<RedisStreamSinkOptions, z.input<typeof redisStreamSinkOptionsSchema>>>().toEqualTypeOf<true>();
  });

  it('operators: migrate, sweep, status, setRateLimit, rolesSql, the dashboard', () => {
    expectTypeOf<Agree<MigrateOptions, z.input<typeof migrateOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<SweepOptions, z.input<typeof sweepOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<StatusOptions, z.input<typeof statusOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<RateLimit, z.input<typeof rateLimitSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<RolesSqlOptions, z.input<typeof rolesSqlOptionsSchema>>>().toEqualTypeOf<true>();
    expectTypeOf<Agree<DashboardOptions, z.input<typeof dashboardOptionsSchema>>>().toEqualTypeOf<true>();
  });

  it('the HTTP middleware (one interface for Express, Fastify and Hono)', () => {
    type Options = ExpressIdempotencyOptions;
    type Input = z.input<typeof httpIdempotencyOptionsSchema>;
    // The schema checks the request callbacks only as "is a function": their parameter is the
    // framework's request, a type parameter of the interface. Everything else must agree.
    type Callbacks = 'tenant' | 'principal' | 'store' | 'problemType';
    expectTypeOf<keyof Options>().toEqualTypeOf<keyof Input>();
    expectTypeOf<Agree<Omit<Options, Callbacks>, Omit<Input, Callbacks>>>().toEqualTypeOf<true>();
    expectTypeOf<Options[Callbacks]>().toExtend<Input[Callbacks]>();
  });

  it('pg-once/testing: duplicateStorm', () => {
    expectTypeOf<Agree<DuplicateStormOptions, z.input<typeof duplicateStormOptionsSchema>>>().toEqualTypeOf<true>();
  });

  it('the relay sweep option is the interface, or false', () => {
    expectTypeOf<RelayOptions['sweep']>().toEqualTypeOf<false | import('../src/outbox/relay-options.ts').RelaySweepOptions | undefined>();
  });
});
