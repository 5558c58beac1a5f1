/**
 * `pg-once/dashboard`: the operator dashboard as a node:http request handler. Its own subpath,
 * so applications that never mount it do not load its pages.
 */
export { dashboardHandler } from './dashboard/dashboard-handler.ts';
export type { DashboardHandler } from './dashboard/dashboard-handler.ts';
export type { DashboardOptions } from './dashboard/dashboard-options.ts';
