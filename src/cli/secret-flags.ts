/**
 * Secrets on the command line are visible to every user of the host (`ps`, /proc/<pid>/cmdline)
 * and land in shell history. Each secret flag therefore has a file flag and an environment
 * variable beside it; the flag itself still works, with a warning on stderr.
 */
import { readFile } from 'node:fs/promises';
import { InvalidOptionsError } from '../errors.ts';

/** Warns that `--<flag>` exposes a secret, naming the safer ways to pass it. */
export function warnSecretOnCommandLine(flag: string, instead: string): void {
  console.error(
    `pg-once: warning: --${flag} puts a secret on the command line, where other users of this host can read it (ps, /proc); use ${instead} instead.`,
  );
}

/**
 * The secrets in a file: whitespace-separated, so a file may hold several during a rotation and
 * a trailing newline (what `echo` and editors leave) is not part of a secret.
 */
export async function readSecretsFile(flag: string, path: string): Promise<string[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    // The code only (ENOENT, EACCES): the path is the user's, the message adds nothing.
    throw usageError(flag, `cannot read ${path} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, error);
  }
  const secrets = splitSecrets(text);
  if (secrets.length === 0) throw usageError(flag, `${path} is empty`);
  return secrets;
}

/** Secrets separated by whitespace (an environment variable may hold several, as a file may). */
export function splitSecrets(text: string): string[] {
  return text.split(/\s+/).filter(Boolean);
}

function usageError(flag: string, message: string, cause?: unknown): InvalidOptionsError {
  return new InvalidOptionsError('command line', [{ path: [flag], message, code: 'invalid_flag' }], { cause });
}
