import { InvalidOptionsError } from '../errors.ts';
import { warnSecretOnCommandLine } from './secret-flags.ts';

/**
 * `--database-url` if given, else `DATABASE_URL`; a usage error when neither is set. A flag whose
 * URL holds a password is used, with a warning: the command line is readable by other users.
 */
export function databaseUrl(flag: string | undefined): string {
  const url = flag ?? process.env.DATABASE_URL;
  if (!url) {
    throw new InvalidOptionsError('command line', [
      { path: ['database-url'], message: 'set DATABASE_URL or pass --database-url <postgres://...>', code: 'missing' },
    ]);
  }
  if (flag !== undefined && hasPassword(flag)) warnSecretOnCommandLine('database-url', 'DATABASE_URL (or a ~/.pgpass file)');
  return url;
}

function hasPassword(url: string): boolean {
  const parsed = URL.parse(url);
  // Also key=value strings ("host=db password=..."), which pg accepts too.
  return parsed ? parsed.password !== '' || parsed.searchParams.has('password') : /\bpassword\s*=/i.test(url);
}
