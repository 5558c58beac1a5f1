import { InvalidOptionsError } from '../errors.ts';

/** `--database-url` if given, else `DATABASE_URL`; a usage error when neither is set. */
export function databaseUrl(flag: string | undefined): string {
  const url = flag ?? process.env.DATABASE_URL;
  if (!url) {
    throw new InvalidOptionsError('command line', [
      { path: ['database-url'], message: 'set DATABASE_URL or pass --database-url <postgres://...>', code: 'missing' },
    ]);
  }
  return url;
}
