import { generateWebhookSecret } from '../internal/webhook-secret.ts';
import type { Command } from './command.ts';
import { parseFlags } from './parse-flags.ts';

const HELP = `Usage: pg-once webhook-secret

Prints a new Standard Webhooks signing secret: 'whsec_' followed by base64 of 32 random bytes.
Give it to the relay and to the receiver, never on a command line, e.g.
  umask 077; npx pg-once webhook-secret > webhook-secret.txt
  npx pg-once relay --http https://hooks.example.com/pg-once --webhook-secret-file webhook-secret.txt`;

export const webhookSecretCommand: Command = {
  summary: 'print a new webhook signing secret (whsec_...)',
  async run(args) {
    const { values } = parseFlags(args, { help: { type: 'boolean', short: 'h' } });
    console.log(values.help ? HELP : generateWebhookSecret());
  },
};
