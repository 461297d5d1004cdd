import { describe, expect, it } from 'vitest';
import { isReservedHeader } from './reserved-headers.js';

describe('isReservedHeader', () => {
  it.each([
    'x-ferry-attempt',
    'x-ferry-routing-key',
    'X-Ferry-Attempt',
    'X-FERRY-REASON',
    'x-death',
    'X-Death',
    'x-first-death-exchange',
    'x-last-death-queue',
    'x-delivery-count',
    'x-delay',
    'X-Delay',
    'x-received-from',
    'cloudEvents:time',
    'cloudevents:time',
    'CLOUDEVENTS:expiresat',
    'CloudEvents:custom',
    'CC',
    'BCC',
  ])('reserves %s', (name) => {
    expect(isReservedHeader(name)).toBe(true);
  });

  it.each([
    'tenant',
    'ferry-attempt',
    'traceparent',
    'cloudevents-time',
    'cloudEvents',
    'xx-tenant',
    'x_tenant',
    // Other x- names are the application's (x-match is read from bindings, not messages).
    'x-tenant',
    'X-Request-Id',
    'x-match',
    // Names that only start like a reserved one.
    'x-deathly',
    'x-death-note',
    'X-Death-Note',
    'x-delivery-count2',
    'x-delivery-countdown',
    'x-delays',
    'x-received-from-app',
    'X-',
    // RabbitMQ reads CC and BCC exactly so: these route nothing.
    'cc',
    'Cc',
    'bcc',
    'Bcc',
    'CCx',
    // Only ASCII letters fold: U+017F (long s) is not an s.
    'cloudevent\u017f:time',
  ])('leaves %s to applications', (name) => {
    expect(isReservedHeader(name)).toBe(false);
  });
});
