import { describe, expect, it } from 'vitest';
import packageJson from '../package.json' with { type: 'json' };

describe('runtime', () => {
  it("runs on the pinned Node 24 LTS, not the machine's older Node", () => {
    // npm puts node_modules/.bin (the `node` devDependency) first on PATH for `npm test`; a silent
    // fall-back to a system Node 20 would show here.
    const major = Number(process.versions.node.split('.')[0]);
    expect(major).toBe(24);
    expect(packageJson.devDependencies.node).toMatch(/^\^?24\./);
  });

  it('declares the Node versions it supports', () => {
    expect(packageJson.engines.node).toBe('>=22.18');
  });
});
