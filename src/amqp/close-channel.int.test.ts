import amqp from 'amqplib';
import { describe, expect, it } from 'vitest';
import { sleep } from '../testing/wait.js';
import { closeChannel } from './close-channel.js';
import { behindProxy } from './fixtures/behind-proxy.js';
import { testVhosts } from './fixtures/test-vhosts.js';

const { vhost, defer } = testVhosts('ferry-close-channel');

describe('closeChannel', () => {
  it('resolves when the connection is lost while the close waits for the broker (amqplib alone never settles)', async () => {
    // Must not happen: a dead-letter listing or replay, a declare or a hand-back whose channel was
    // closing as the connection dropped, waiting forever (a replay that never resolved nor rejected).
    const proxied = await behindProxy(await vhost(), defer);
    const { proxy } = proxied;
    const url = new URL(proxied.url);
    url.searchParams.set('heartbeat', '0');
    const connection = await amqp.connect(url.toString());
    connection.on('error', () => {});
    defer(() => connection.close().catch(() => {}));
    const channel = await connection.createChannel();
    channel.on('error', () => {});
    await channel.checkExchange('amq.topic');

    proxy.blackhole(); // the close frame goes out; no CloseOk comes back
    let closed: boolean | undefined;
    const closing = closeChannel(channel).then((confirmed) => {
      closed = confirmed;
    });
    await sleep(300);
    expect(closed).toBeUndefined();
    proxy.reset(); // the connection is lost with the close under way
    await Promise.race([closing, sleep(3000)]);
    expect(closed).toBe(false); // ended, but not confirmed by the broker
  });

  it('resolves at once for a channel that is already closed', async () => {
    const v = await vhost();
    const connection = await amqp.connect(v.url);
    defer(() => connection.close().catch(() => {}));
    const channel = await connection.createChannel();
    await channel.close();
    await expect(Promise.race([closeChannel(channel).then(() => 'closed'), sleep(1000)])).resolves.toBe(
      'closed',
    );
  });
});
