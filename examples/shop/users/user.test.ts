import { deciderSpec } from 'ferry/testing';
import { describe, expect, it } from 'vitest';
import { type EmailEvent, emailDecider, emailStream, type UserEvent, userDecider } from './user.js';

const ann = { id: 'u1', name: 'Ann', email: 'ann@example.com', createdAt: '2026-01-01T00:00:00.000Z' };
const claimed: EmailEvent = { type: 'EmailClaimed', data: { email: 'ann@example.com', userId: 'u1' } };

describe('user decider', () => {
  it('registers a user once', () => {
    const registered: UserEvent = { type: 'UserRegistered', data: ann };
    deciderSpec(userDecider)
      .given([])
      .when({ type: 'Register', ...ann })
      .then([registered]);
    deciderSpec(userDecider)
      .given([registered])
      .when({ type: 'Register', ...ann })
      .thenThrows(/exists/);
  });
});

describe('email claim decider', () => {
  it('gives an address to one user only', () => {
    deciderSpec(emailDecider)
      .given([])
      .when({ type: 'Claim', email: 'ann@example.com', userId: 'u1' })
      .then([claimed]);
    deciderSpec(emailDecider)
      .given([claimed])
      .when({ type: 'Claim', email: 'ann@example.com', userId: 'u2' })
      .thenThrows(/registered already/);
    deciderSpec(emailDecider)
      .given([claimed])
      .when({ type: 'Claim', email: 'ann@example.com', userId: 'u1' })
      .then([]);
  });

  it('claims one spelling per address', () => {
    expect(emailStream(' Ann@Example.COM')).toBe(emailStream('ann@example.com'));
  });
});
