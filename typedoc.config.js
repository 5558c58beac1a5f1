// TypeDoc's configuration for `npm run docs`: the API reference of every entry point of
// package.json's exports map (so a new subpath is documented without touching this file), from
// the source each `types` file is built from, into docs/api/ (git-ignored). Warnings are errors:
// a public signature that names a type the package does not export fails the build, unless it is
// listed below as deliberately internal.
import { readFileSync } from 'node:fs';

const manifest = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));
const entryPoints = Object.values(manifest.exports)
  .map((target) => (typeof target === 'string' ? target : target.types))
  .filter((types) => typeof types === 'string' && types.endsWith('.d.ts'))
  .map((types) => types.replace(/^\.\/dist\//, './src/').replace(/\.d\.ts$/, '.ts'));

/** @type {Partial<import('typedoc').TypeDocOptions>} */
export default {
  entryPoints,
  tsconfig: 'tsconfig.build.json',
  out: 'docs/api',
  name: 'pg-once',
  readme: 'none',
  treatWarningsAsErrors: true,
  excludePrivate: true,
  excludeInternal: true,
  validation: { notExported: true, invalidLink: true, notDocumented: false },
  // Helper types of the driver subpaths' signatures: structural plumbing a user never names.
  intentionallyNotExported: [
    'RunIdempotentPassing',
    'AnyTransaction',
    'AnyDatabase',
    'RunIdempotentExternal',
    'WithTenant',
    'PrismaTransaction',
    'Resolvable',
    'StoredError',
    'DriverApi.runIdempotentExternal',
    'DriverApi.receiveOnce',
  ],
};
