/**
 * The deliveries' timeouts on one timer (src/outbox/delivery-deadlines.ts): each delivery is
 * aborted at its own deadline and no other, however deliveries finish around it, the queue stays
 * small behind a slow one, and nothing is left keeping Node alive once nothing is running.
 * No database: the queue is plain bookkeeping over real timers.
 */
import { describe, expect, it } from 'vitest';
import { DeliveryFailedError } from '../src/errors.ts';
import { type Deadline, DeliveryDeadlines } from '../src/outbox/delivery-deadlines.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const delivery = (): Deadline => ({ controller: new AbortController(), finished: false });
const timers = () => process.getActiveResourcesInfo().filter((kind) => kind === 'Timeout').length;

describe('delivery deadlines on one timer', () => {
  it('aborts a delivery still running at its timeout with a DeliveryFailedError, and leaves finished ones alone', async () => {
    const deadlines = new DeliveryDeadlines(60);
    const slow = delivery();
    const fast = delivery();
    deadlines.add(slow);
    deadlines.add(fast);
    deadlines.finished(fast);
    await sleep(150);
    expect(slow.controller.signal.aborted).toBe(true);
    expect(slow.controller.signal.reason).toBeInstanceOf(DeliveryFailedError);
    expect((slow.controller.signal.reason as Error).message).toBe('delivery timed out after 60 ms');
    expect(fast.controller.signal.aborted).toBe(false);
    deadlines.finished(slow);
    expect(deadlines.size).toBe(0);
  });

  it('aborts each delivery at its own deadline, not at an earlier one', async () => {
    const deadlines = new DeliveryDeadlines(120);
    const first = delivery();
    deadlines.add(first);
    await sleep(80);
    const second = delivery();
    deadlines.add(second);
    await sleep(70); // the first's deadline has passed, the second's has not
    expect(first.controller.signal.aborted).toBe(true);
    expect(second.controller.signal.aborted).toBe(false);
    await sleep(100);
    expect(second.controller.signal.aborted).toBe(true);
    deadlines.finished(first);
    deadlines.finished(second);
  });

  it('stays near the number of live deliveries while thousands finish behind a slow one', () => {
    const deadlines = new DeliveryDeadlines(60_000);
    const slow = delivery();
    deadlines.add(slow);
    let most = 0;
    for (let i = 0; i < 10_000; i += 1) {
      const fast = delivery();
      deadlines.add(fast);
      deadlines.finished(fast);
      most = Math.max(most, deadlines.size);
    }
    expect(most).toBeLessThan(200);
    expect(slow.controller.signal.aborted).toBe(false);
    deadlines.finished(slow);
    expect(deadlines.size).toBe(0);
  });

  it('keeps one timer while deliveries run and none once they have all finished', () => {
    const before = timers();
    const deadlines = new DeliveryDeadlines(60_000);
    const running = Array.from({ length: 50 }, delivery);
    for (const entry of running) deadlines.add(entry);
    expect(timers()).toBe(before + 1);
    for (const entry of running) deadlines.finished(entry);
    expect(timers()).toBe(before);
    // Finishing twice changes nothing.
    deadlines.finished(running[0]!);
    expect(deadlines.size).toBe(0);
  });
});
