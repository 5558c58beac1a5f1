#!/usr/bin/env node
/**
 * `pg-once <command>`: the operator's entry point. Each command lives in src/cli/<name>-command.ts
 * and gets the arguments after its name; this file only dispatches and turns errors into exit
 * codes (1 for a failure, 2 for bad usage).
 */
import { InvalidOptionsError, OnceError } from './errors.ts';
import type { Command } from './cli/command.ts';
import { dashboardCommand } from './cli/dashboard-command.ts';
import { doctorCommand } from './cli/doctor-command.ts';
import { limitsCommand } from './cli/limits-command.ts';
import { migrateCommand } from './cli/migrate-command.ts';
import { outboxCommand } from './cli/outbox-command.ts';
import { relayCommand } from './cli/relay-command.ts';
import { rolesCommand } from './cli/roles-command.ts';
import { statusCommand } from './cli/status-command.ts';
import { sweepCommand } from './cli/sweep-command.ts';
import { webhookSecretCommand } from './cli/webhook-secret-command.ts';

const commands: Record<string, Command> = {
  migrate: migrateCommand,
  roles: rolesCommand,
  relay: relayCommand,
  outbox: outboxCommand,
  sweep: sweepCommand,
  status: statusCommand,
  limits: limitsCommand,
  doctor: doctorCommand,
  dashboard: dashboardCommand,
  'webhook-secret': webhookSecretCommand,
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, command]) => `  ${name.padEnd(14)} ${command.summary}`);
  return ['Usage: pg-once <command> [options]', '', 'Commands:', ...lines, '', 'Run `pg-once <command> --help` for its options.'].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h') {
    console.log(usage());
    return name === undefined ? 2 : 0;
  }
  const command = commands[name];
  if (!command) {
    console.error(`pg-once: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    return (await command.run(rest)) ?? 0;
  } catch (error) {
    if (error instanceof OnceError) {
      console.error(`pg-once ${name}: ${error.message} [${error.code}]`);
      return error instanceof InvalidOptionsError ? 2 : 1;
    }
    console.error(`pg-once ${name}:`, error);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
