import { InvalidOptionsError } from '../errors.ts';
import { DEFAULT_LIMIT_TENANT, listRateLimits, removeRateLimit, setRateLimit } from '../ops/limits.ts';
import type { Command } from './command.ts';
import { databaseUrl } from './database-url.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once limits set <tenant> | --default --per-second <n> --burst <m> [--tool <name>]
       pg-once limits remove <tenant> | --default [--tool <name>]
       pg-once limits list [--json]

Rate limits on fresh executions per tenant (and optionally per tool); replays are never limited.
--default sets the limit of tenants without one of their own. No limit at all means unlimited.
Run as the schema owner. Reads DATABASE_URL unless --database-url is given.`;

const usage = (message: string) => new InvalidOptionsError('command line', [{ path: [], message, code: 'invalid_flag' }]);

export const limitsCommand: Command = {
  summary: 'set, remove and list per-tenant rate limits',
  async run(args) {
    const { values, positionals } = parseFlags(args, {
      'database-url': { type: 'string' },
      default: { type: 'boolean' },
      tool: { type: 'string' },
      'per-second': { type: 'string' },
      burst: { type: 'string' },
      json: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    });
    const [action, tenantArgument] = positionals;
    if (values.help) {
      console.log(HELP);
      return;
    }
    const url = databaseUrl(values['database-url']);
    const tenant = values.default ? DEFAULT_LIMIT_TENANT : tenantArgument;
    switch (action) {
      case 'set': {
        if (!tenant) throw usage('give a tenant or --default');
        if (values['per-second'] === undefined || values.burst === undefined) throw usage('--per-second and --burst are required');
        await setRateLimit(url, {
          tenant,
          tool: values.tool ?? '',
          perSecond: Number(values['per-second']),
          burst: Number(values.burst),
        });
        console.log(`Limit set for ${tenant === DEFAULT_LIMIT_TENANT ? 'the default' : `tenant ${tenant}`}${values.tool ? ` (tool ${values.tool})` : ''}.`);
        return;
      }
      case 'remove': {
        if (!tenant) throw usage('give a tenant or --default');
        const removed = await removeRateLimit(url, { tenant, tool: values.tool ?? '' });
        console.log(removed ? 'Limit removed.' : 'There was no such limit.');
        return;
      }
      case 'list': {
        const limits = await listRateLimits(url);
        if (values.json) console.log(JSON.stringify(limits, null, 2));
        else if (limits.length === 0) console.log('No limits: every tenant is unlimited.');
        else
          console.table(
            limits.map((l) => ({
              tenant: l.tenant === DEFAULT_LIMIT_TENANT ? '(default)' : l.tenant,
              tool: l.tool || '(all)',
              'per second': l.perSecond,
              burst: l.burst,
            })),
          );
        return;
      }
      default:
        console.log(HELP);
        throw usage(action === undefined ? 'expected set, remove or list' : `unknown limits action "${action}"`);
    }
  },
};
