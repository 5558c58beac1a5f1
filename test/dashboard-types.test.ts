/**
 * The dashboard's public types: its hand-written options interface and its zod schema accept the
 * same input (checked at compile time by `npm run typecheck`), and the handler is a node:http
 * request listener.
 */
import type { RequestListener } from 'node:http';
import { describe, expectTypeOf, it } from 'vitest';
import type { z } from 'zod';
import { dashboardHandler, type DashboardHandler, type DashboardOptions } from '../src/dashboard.ts';
import type { dashboardOptionsSchema } from '../src/dashboard/dashboard-options.ts';

describe('dashboard types', () => {
  it('keeps the options interface and its schema in step', () => {
    expectTypeOf<DashboardOptions>().toExtend<z.input<typeof dashboardOptionsSchema>>();
    expectTypeOf<z.input<typeof dashboardOptionsSchema>>().toExtend<DashboardOptions>();
  });

  it('mounts wherever a node:http listener does', () => {
    expectTypeOf(dashboardHandler).returns.toEqualTypeOf<DashboardHandler>();
    expectTypeOf<DashboardHandler>().toExtend<RequestListener>();
  });
});
