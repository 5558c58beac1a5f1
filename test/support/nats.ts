/**
 * Whether the NATS server the broker tests use answers. Without one those suites are skipped,
 * unless CI or ONCE_REQUIRE_SERVICES is set: then they fail, so a CI run cannot go green by
 * silently testing nothing.
 */
import { connect } from '@nats-io/transport-node';

export const NATS_URL = process.env.NATS_URL ?? '127.0.0.1:4222';
export const natsRequired = Boolean(process.env.CI || process.env.ONCE_REQUIRE_SERVICES);
export const natsAvailable = await connect({ servers: NATS_URL, timeout: 2_000, reconnect: false }).then(
  async (nc) => {
    await nc.close();
    return true;
  },
  () => false,
);
