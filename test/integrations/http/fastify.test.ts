/** The HTTP adapter suite (http-suite.ts) against fastify: real servers on loopback, real fetch, real Postgres. */
import { httpSuite } from './http-suite.ts';

httpSuite('fastify');
