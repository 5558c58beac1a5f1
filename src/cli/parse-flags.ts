import { parseArgs, type ParseArgsConfig } from 'node:util';
import { InvalidOptionsError } from '../errors.ts';

/** node:util parseArgs, with its errors turned into the usage error every command reports. */
export function parseFlags<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: true });
  } catch (error) {
    throw new InvalidOptionsError('command line', [{ path: [], message: (error as Error).message, code: 'invalid_flag' }], {
      cause: error,
    });
  }
}
