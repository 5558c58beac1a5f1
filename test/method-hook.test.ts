/**
 * hookMethod (src/drivers/method-hook.ts): a method of a library's object replaced for one
 * transaction at a time, without a property deleted afterwards (which would leave the object in
 * V8's slow dictionary mode for good).
 */
import { describe, expect, it } from 'vitest';
import { hookMethod } from '../src/drivers/method-hook.ts';

class Client {
  calls: string[] = [];
  query(text: string): string {
    this.calls.push(text);
    return `own:${text}`;
  }
}

describe('hookMethod', () => {
  it('an inherited method: calls go to the replacement until restore, then to the method again; the own dispatcher stays', () => {
    const client = new Client();
    const hook = hookMethod(client, 'query', (...args) => `hooked:${String(args[0])}`);
    expect(client.query('a')).toBe('hooked:a');
    expect(hook.original.call(client, 'b')).toBe('own:b');
    hook.restore();
    expect(client.query('c')).toBe('own:c');
    expect(client.calls).toEqual(['b', 'c']);
    const keys = Object.keys(client);
    // A second transaction reuses the dispatcher: no property is added or deleted.
    const again = hookMethod(client, 'query', () => 'again');
    expect(client.query('d')).toBe('again');
    again.restore();
    expect(Object.keys(client)).toEqual(keys);
    expect(client.query('e')).toBe('own:e');
  });

  it("an own property (pg-pool's release): assigned, and assigned back", () => {
    const release = () => 'released';
    const client = { release };
    const hook = hookMethod(client, 'release', () => 'hooked');
    expect(client.release()).toBe('hooked');
    expect(hook.original).toBe(release);
    hook.restore();
    expect(client.release).toBe(release);
    expect(Object.keys(client)).toEqual(['release']);
  });

  it('a restore after the owner replaced the method itself leaves the owner its own', () => {
    const client = { release: () => 'first checkout' };
    const hook = hookMethod(client, 'release', () => 'hooked');
    const next = () => 'next checkout';
    client.release = next; // pg-pool assigns a new release on every checkout
    hook.restore();
    expect(client.release).toBe(next);
  });

  it('the dispatcher keeps `this` for a caller that calls the method on another receiver', () => {
    const client = new Client();
    hookMethod(client, 'query', () => 'hooked').restore();
    const other = new Client();
    expect(client.query.call(other, 'x')).toBe('own:x');
    expect(other.calls).toEqual(['x']);
  });
});
