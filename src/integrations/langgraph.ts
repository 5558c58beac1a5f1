/**
 * pg-once for LangGraph.js (`@langchain/langgraph` + `@langchain/core`): `import {
 * idempotentLangGraphTool, idempotentTask } from 'pg-once/langgraph'`. Keys come from the thread
 * and LangGraph's own ids; run graphs with `durability: "sync"` so those ids survive a crash.
 */
export { idempotentLangGraphTool } from './langgraph/idempotent-tool.ts';
export type { IdempotentLangGraphToolOptions, IdempotentToolFunction } from './langgraph/idempotent-tool.ts';
export { idempotentTask } from './langgraph/idempotent-task.ts';
export type { IdempotentTaskOptions } from './langgraph/idempotent-task.ts';
