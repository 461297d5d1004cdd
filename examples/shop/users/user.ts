/**
 * A user, and the claim on an email address that keeps addresses unique. Both are event-sourced: the
 * claim is a stream of its own per normalised address, written with the user's stream in one unit of
 * work, so two registrations racing for one address cannot both commit on any store backend (the
 * loser's append finds the claim stream already there).
 */
import type { Decider } from 'ferry';

export interface User {
  readonly id: string;
  readonly name: string;
  readonly email: string;
  readonly createdAt: string;
}

export type UserEvent = { type: 'UserRegistered'; data: User };
export type UserCommand = { type: 'Register' } & User;
export type UserState = { readonly user?: User };

export class UserExistsError extends Error {
  readonly code = 'USER_EXISTS';
}

export const userDecider: Decider<UserCommand, UserEvent, UserState> = {
  initialState: () => ({}),
  evolve: (_state, event) => ({ user: event.data }),
  decide(command, state) {
    if (state.user !== undefined) throw new UserExistsError(`user ${command.id} exists`);
    const { id, name, email, createdAt } = command;
    return { type: 'UserRegistered', data: { id, name, email, createdAt } };
  },
};

export type EmailEvent = { type: 'EmailClaimed'; data: { email: string; userId: string } };
export type EmailCommand = { type: 'Claim'; email: string; userId: string };
export type EmailState = { readonly userId?: string };

/** The address belongs to another user already. */
export class EmailTakenError extends Error {
  readonly code = 'EMAIL_TAKEN';
}

export const emailDecider: Decider<EmailCommand, EmailEvent, EmailState> = {
  initialState: () => ({}),
  evolve: (_state, event) => ({ userId: event.data.userId }),
  decide(command, state) {
    if (state.userId === command.userId) return []; // the same registration, run again
    if (state.userId !== undefined) throw new EmailTakenError('this email is registered already');
    return { type: 'EmailClaimed', data: { email: command.email, userId: command.userId } };
  },
};

/** One spelling per address: `Ann@Example.COM ` and `ann@example.com` are the same. */
export const normalizeEmail = (email: string): string => email.trim().toLowerCase();

export const userStream = (userId: string): string => `user-${userId}`;

/** Whether `id` can name a user at all: the store refuses stream ids with control characters. */
export const isUserId = (id: string): boolean =>
  id.length > 0 && id.length <= 200 && !/\p{Cc}|\p{Cs}/u.test(id); // Cs: a lone surrogate
export const emailStream = (email: string): string => `user-email-${normalizeEmail(email)}`;
