/** The operator's token: routes that change the catalog or the payment provider's faults require it. */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { HttpProblemError } from 'ferry';

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Whether `authorization` is `Bearer <adminToken>`; never true when no token is set. */
export function isAdmin(authorization: string | undefined, adminToken: string | undefined): boolean {
  // The scheme's name is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are `Bearer`.
  const given = /^Bearer +(.+)$/i.exec(authorization ?? '')?.[1];
  // Hashes of equal length, so the comparison takes the same time whatever was sent.
  return !!adminToken && given !== undefined && timingSafeEqual(digest(given), digest(adminToken));
}

/** 401 (problem+json) unless the request carries `Authorization: Bearer <adminToken>`; always 401 when no token is set. */
export function requireAdmin(request: FastifyRequest, adminToken: string | undefined): void {
  if (!isAdmin(request.headers.authorization, adminToken)) {
    throw new HttpProblemError(401, undefined, {
      detail: 'This operation needs the admin token: Authorization: Bearer <token>.',
      headers: { 'www-authenticate': 'Bearer' },
    });
  }
}
