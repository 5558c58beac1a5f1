/** The HTTP adapter suite (http-suite.ts) against hono: real servers on loopback, real fetch, real Postgres. */
import { httpSuite } from './http-suite.ts';

httpSuite('hono');
