/**
 * `npm run demo`: a multi-tenant agent back end on pg-once, hit by every source of duplicate tool
 * calls (network retries, model re-invocations, a worker killed mid-call and resumed, queue
 * redeliveries), ending with a table and PASS when every intent took effect exactly once: in
 * Postgres and downstream. Exit code 1 on FAIL.
 *
 * Runs on an embedded Postgres in a temp directory (nothing to install) unless --database-url or
 * DATABASE_URL names a server. The parts are in examples/demo/; the receiver is
 * examples/webhook-receiver.ts. Options: npm run demo -- --help
 */
import { parseDemoOptions, USAGE } from './demo/options.ts';
import { runDemo } from './demo/run-demo.ts';

let options: ReturnType<typeof parseDemoOptions>;
try {
  options = parseDemoOptions(process.argv.slice(2));
} catch (error) {
  console.error(`${(error as Error).message}\n\n${USAGE}`);
  process.exit(2);
}
if (options === 'help') {
  console.log(USAGE);
} else {
  try {
    process.exitCode = (await runDemo(options)) ? 0 : 1;
  } catch (error) {
    console.error('\nFAIL: the demo stopped on an error');
    console.error(error);
    process.exitCode = 1;
  }
}
