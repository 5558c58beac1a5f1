/** The HTTP adapter suite (http-suite.ts) against express: real servers on loopback, real fetch, real Postgres. */
import { httpSuite } from './http-suite.ts';

httpSuite('express');
