/**
 * pg-once for teams that already run graphile-worker: `import { outboxTasks, outboxCronItems }
 * from 'pg-once/graphile-worker'`. Their runner delivers the outbox (one chain of drainOnce
 * slices) and runs the sweeps; no `pg-once relay` process.
 */
export { outboxTasks } from './graphile-worker/outbox-tasks.ts';
export type { OutboxTasksOptions } from './graphile-worker/outbox-tasks-options.ts';
export { outboxCronItems, outboxCrontab } from './graphile-worker/outbox-cron-items.ts';
export type { OutboxCronOptions } from './graphile-worker/outbox-cron-items.ts';
export { OUTBOX_TASKS } from './graphile-worker/outbox-task-names.ts';
