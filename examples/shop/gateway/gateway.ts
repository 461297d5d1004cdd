/**
 * The gateway: the shop's one public port. It forwards the public API to the services over
 * ServiceClient (each service one or more instances), answers `GET /health` once every service is
 * ready, and serves the operator's routes behind the admin token.
 *
 *   POST /users, GET /users/:id                     → users
 *   POST /products (admin), GET /products/:id       → inventory
 *   POST /orders, GET /orders/:id, POST /orders/:id/cancel → orders
 *   GET  /health                                    → 200 when every service is ready, else 503
 *   PUT|GET /admin/faults/payment-provider (admin)  → the provider's fault switch
 *   GET  /admin/payment-provider/charges (admin)    → the provider's ledger
 *
 * The POSTs that create something (users, products, orders) carry an Idempotency-Key to the service,
 * the client's or one the gateway makes.
 *
 * The gateway checks every body itself (JSON only, 1 MB at most, `__proto__` refused), so that a
 * malformed request gets its 4xx problem here and never reaches a service, and passes it on as it
 * came. A problem a service answers names, as its `instance`, the path the client called.
 */
import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import {
  createHealth,
  HttpProblemError,
  isCircuitOpenError,
  isFerryError,
  isHttpError,
  type Logger,
  type ServiceResponse,
} from 'ferry';
import { ferryFastify, ferryFastifyOptions } from 'ferry/fastify';
import { requireAdmin } from '../admin-token.js';
import { sentKey } from '../keyed-id.js';
import { listen } from '../listen.js';
import { nothingWasSent, Upstream } from '../upstream.js';
import { firstDuplicateMember } from './duplicate-members.js';
import { firstRoundedFraction } from './rounded-fractions.js';

/** Base URLs of the services' instances. */
export interface ServiceUrls {
  readonly users: readonly string[];
  readonly inventory: readonly string[];
  readonly orders: readonly string[];
  readonly payments: readonly string[];
  readonly paymentProvider: string;
}

export interface GatewayOptions {
  readonly services: ServiceUrls;
  /** `Authorization: Bearer <adminToken>` opens the admin routes; unset, they answer 401. */
  readonly adminToken: string | undefined;
  /** @default 3000 */
  readonly port?: number;
  /** @default '127.0.0.1' */
  readonly host?: string;
  /** Time limit of a call to a service, its retries included. @default 10000 */
  readonly serviceTimeoutMs?: number;
  /** @default stderr */
  readonly logger?: Logger;
  /** Checks of `GET /health` besides the services' readiness (the embedded shop's: room on its disk). */
  readonly readiness?: Readonly<Record<string, () => Promise<void>>>;
}

export interface Gateway {
  readonly url: string;
  close(): Promise<void>;
}

/** A JSON body as it came: checked, and passed on without being serialized again. */
class JsonBody {
  constructor(readonly text: string) {}
}

const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Response headers a service's answer keeps on its way out. */
const PASSED_HEADERS = ['location', 'idempotent-replayed', 'retry-after', 'www-authenticate'] as const;

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  const { services } = options;
  const limits = options.serviceTimeoutMs === undefined ? {} : { timeoutMs: options.serviceTimeoutMs };
  const upstreams = {
    users: new Upstream('users', services.users, limits),
    inventory: new Upstream('inventory', services.inventory, limits),
    orders: new Upstream('orders', services.orders, limits),
    payments: new Upstream('payments', services.payments, limits),
    paymentProvider: new Upstream('payment-provider', [services.paymentProvider], limits),
  };
  const all = Object.values(upstreams);

  // The public edge: a client's x-deadline-ms is not ours to honour. Taken as the deadline, a short
  // one cut the call to a service that went on to store (and charge) an order the client was told
  // to try again; the gateway's own time limits apply instead.
  const ferry = {
    trustDeadline: false,
    ...(options.logger === undefined ? {} : { logger: options.logger }),
  };
  const app = Fastify({ ...ferryFastifyOptions(ferry), bodyLimit: 1_048_576 });
  ferryFastify(app, ferry);
  // JSON only (any other type is a 415 here), checked by Fastify's own parser and kept as text:
  // parsing is not recursive but serializing is, and a body nested some thousands of levels deep
  // would overflow the stack on its way to the service.
  const checkJson = app.getDefaultJsonParser('error', 'error');
  app.removeAllContentTypeParsers();
  const parseJson = (
    request: FastifyRequest,
    body: Buffer | string,
    done: (error: Error | null, body?: unknown) => void,
  ): void => {
    // JSON is UTF-8 (RFC 8259), sent as it is: another charset would be read as UTF-8 and mangled
    // (é stored as U+FFFD), a compressed body taken for malformed JSON.
    if (!isPlainUtf8(request.headers['content-type'], request.headers['content-encoding'])) {
      done(
        new HttpProblemError(415, undefined, {
          detail: 'Send JSON as UTF-8 text (charset utf-8 or none), without a content-encoding.',
        }),
      );
      return;
    }
    let text: string;
    try {
      // Strictly: bytes that are not UTF-8 would otherwise be kept as U+FFFD.
      text = STRICT_UTF8.decode(body as Buffer);
    } catch {
      done(new HttpProblemError(400, undefined, { detail: 'The request body is not valid UTF-8.' }));
      return;
    }
    checkJson(request, text, (error) => {
      if (error === null) {
        const problem = ambiguityOf(text);
        if (problem === undefined) done(null, new JsonBody(text));
        else done(problem);
      } else if (isJson(text)) done(forbiddenMemberProblem());
      else done(error);
    });
  };
  app.addContentTypeParser('application/json', { parseAs: 'buffer' }, parseJson);

  /** The Idempotency-Key the gateway made for a request that came without one. */
  const madeKeys = new WeakMap<FastifyRequest, string>();

  /** Forwards the request to `upstream` at `path` and answers with what it answered. */
  async function forward(
    upstream: Upstream,
    request: FastifyRequest,
    reply: FastifyReply,
    path: string,
    init: {
      readonly authorization?: boolean;
      /** What a client may do after a 504 to this route (the request may have been carried out). */
      readonly afterTimeout?: string;
      /** Pass the request's Idempotency-Key on (or the one the gateway made): the routes that create something. */
      readonly idempotencyKey?: boolean;
    } = {},
  ): Promise<FastifyReply> {
    const key =
      init.idempotencyKey === true
        ? (madeKeys.get(request) ?? request.headers['idempotency-key'])
        : undefined;
    const headers: Record<string, string> = {};
    if (init.authorization === true && request.headers.authorization !== undefined) {
      headers.authorization = request.headers.authorization;
    }
    // HEAD is answered from the GET's answer (Fastify drops its body and keeps its length).
    const method = request.method === 'HEAD' ? 'GET' : request.method;
    const body = method !== 'GET' && request.body instanceof JsonBody ? request.body.text : undefined;
    if (body !== undefined) headers['content-type'] = 'application/json';
    let response: ServiceResponse;
    try {
      response = await upstream.request({
        method,
        path,
        ...(body === undefined ? {} : { body }),
        ...(typeof key === 'string' ? { idempotencyKey: key } : {}),
        headers,
        // Metrics and breakers by route, not by id.
        route: request.routeOptions.url ?? path,
      });
    } catch (error) {
      // Sent, and no answer in time: what the service did is not known. A POST may have been
      // carried out (an order stored, and charged later): "try again" would invite a second one.
      if (method !== 'GET' && !nothingWasSent(error)) {
        throw new HttpProblemError(504, 'Gateway Timeout', {
          detail: `The ${upstream.name} service did not answer in time: the request may have been carried out. ${init.afterTimeout ?? 'Look it up before sending it again.'}`,
          cause: error,
        });
      }
      throw new HttpProblemError(503, 'Service unavailable', {
        detail: isCircuitOpenError(error)
          ? `The ${upstream.name} service is failing just now (its last answers were errors); try again shortly.`
          : `The ${upstream.name} service cannot be reached just now; try again.`,
        headers: { 'retry-after': '1' },
        cause: error,
      });
    }
    reply.code(response.status);
    for (const name of PASSED_HEADERS) {
      const value = response.headers[name];
      if (typeof value === 'string') reply.header(name, value);
    }
    const type = response.headers['content-type'];
    if (typeof type === 'string') reply.header('content-type', type);
    const answer = isProblem(type) ? calledPath(response.body, request) : response.body;
    if (answer === undefined || answer === null || answer === '') return reply.send();
    return reply.send(typeof answer === 'string' ? answer : JSON.stringify(answer));
  }

  const id = (request: FastifyRequest) => encodeURIComponent((request.params as { id: string }).id);

  // The routes that create something honour keys, so they always get one: one the gateway made (the
  // client sent none) is named in every answer to the request, its own refusals (400, 401, 413, 415)
  // included, so that a client can send the request again with it after a 504 or a 5xx and learn its
  // outcome instead of creating a second user, product or order. With a key, the gateway may send a
  // request again itself (to the same instance or, refused, to another).
  const makeKey = async (request: FastifyRequest) => {
    if (typeof request.headers['idempotency-key'] !== 'string') madeKeys.set(request, randomUUID());
  };
  const checkKey = async (request: FastifyRequest) => {
    // Refused here, with what a key may hold (or sent on two lines): the services could not be
    // sent it as it is.
    sentKey(request);
  };
  const keyed = {
    onRequest: [makeKey, checkKey],
    onSend: async (request: FastifyRequest, reply: FastifyReply) => {
      const made = madeKeys.get(request);
      if (made !== undefined) reply.header('idempotency-key', made);
    },
  };
  const sendAgain = (request: FastifyRequest, what: string) =>
    `Send it again with the same Idempotency-Key${madeKeys.has(request) ? ' (the one this answer names: you sent none)' : ''} to get its outcome rather than ${what}.`;

  app.post('/users', keyed, (request, reply) =>
    forward(upstreams.users, request, reply, '/users', {
      idempotencyKey: true,
      afterTimeout: sendAgain(request, 'registering the user twice'),
    }),
  );
  app.get('/users/:id', (request, reply) =>
    forward(upstreams.users, request, reply, `/users/${id(request)}`),
  );
  // Catalog management is the operator's: the token is checked as the request arrives, before the
  // body is read, as on the other operator routes (a caller without it got 400, 413 or 415).
  app.post(
    '/products',
    {
      // The key made first: a 401 names it too.
      onRequest: [makeKey, async (request) => requireAdmin(request, options.adminToken), checkKey],
      onSend: keyed.onSend,
    },
    (request, reply) =>
      forward(upstreams.inventory, request, reply, '/products', {
        authorization: true,
        idempotencyKey: true,
        afterTimeout: sendAgain(request, 'adding a second product'),
      }),
  );
  app.get('/products/:id', (request, reply) =>
    forward(upstreams.inventory, request, reply, `/products/${id(request)}`),
  );
  app.post('/orders', keyed, (request, reply) =>
    forward(upstreams.orders, request, reply, '/orders', {
      idempotencyKey: true,
      afterTimeout: sendAgain(request, 'placing a second order'),
    }),
  );
  app.get('/orders/:id', (request, reply) =>
    forward(upstreams.orders, request, reply, `/orders/${id(request)}`),
  );
  // Cancelling takes no body: none (under any content type or none), or JSON as every other route
  // takes it, which is checked and not passed on. Anything else is refused as elsewhere.
  app.register(async (noBody) => {
    noBody.removeAllContentTypeParsers();
    noBody.addContentTypeParser('*', { parseAs: 'buffer' }, (request, body, done) => {
      if ((body as Buffer).length === 0) done(null, undefined);
      else if (mediaType(request.headers['content-type']) === 'application/json')
        parseJson(request, body, (error) => done(error, undefined));
      else done(new HttpProblemError(415, undefined, { detail: 'Send no body, or JSON.' }));
    });
    noBody.post('/orders/:id/cancel', (request, reply) =>
      forward(upstreams.orders, request, reply, `/orders/${id(request)}/cancel`, {
        afterTimeout: 'Asking again is harmless.',
      }),
    );
  });

  // Operator routes: checked here, and by the provider again (it gets the same token). The token is
  // checked as the request arrives, before its body is read: a caller without it learns nothing of
  // what the body should be (401, not 400 or 415).
  const admin = { authorization: true } as const;
  const operatorOnly = {
    onRequest: async (request: FastifyRequest) => requireAdmin(request, options.adminToken),
  };
  app.get('/admin/faults/payment-provider', operatorOnly, (request, reply) =>
    forward(upstreams.paymentProvider, request, reply, '/faults', admin),
  );
  app.put('/admin/faults/payment-provider', operatorOnly, (request, reply) =>
    forward(upstreams.paymentProvider, request, reply, '/faults', {
      ...admin,
      afterTimeout: 'Setting it again is harmless.',
    }),
  );
  app.get('/admin/payment-provider/charges', operatorOnly, (request, reply) =>
    forward(upstreams.paymentProvider, request, reply, '/charges', admin),
  );

  // Ready when every instance of every service says it is ready.
  const health = createHealth({
    checks: {
      ...Object.fromEntries(
        all.flatMap((upstream) =>
          upstream.clients.map((client) => [
            client.name,
            async (signal: AbortSignal) => {
              try {
                await client.get('/health/ready', {
                  signal,
                  retry: false,
                  timeout: READY_TIMEOUT_MS,
                });
              } catch (error) {
                // The report is public: it says what failed, not where the instance lives.
                throw new Error(notReady(error));
              }
            },
          ]),
        ),
      ),
      ...options.readiness,
    },
    timeoutMs: 1500,
    cacheMs: 500,
  });
  app.get('/health', async (_request, reply) => {
    const report = await health.ready();
    return reply
      .code(report.status === 'ok' ? 200 : 503)
      .header('cache-control', 'no-store')
      .send(report);
  });

  let url: string;
  try {
    url = await listen(app, { port: options.port ?? 3000, host: options.host });
  } catch (error) {
    await Promise.all(all.map((u) => u.close()));
    throw error;
  }
  return {
    url,
    async close() {
      await app.close();
      await Promise.all(all.map((u) => u.close()));
    },
  };
}

/** How long `GET /health` waits for each instance's readiness. */
const READY_TIMEOUT_MS = 1000;

/** Why an instance is not ready, in words that name no address. */
function notReady(error: unknown): string {
  if (isHttpError(error)) {
    // Which of its own checks failed (its bus, its outbox, its disk): names only, as the report is public.
    const checks = (error.body as { checks?: unknown } | undefined)?.checks;
    const failing =
      typeof checks === 'object' && checks !== null
        ? Object.entries(checks)
            .filter(([, check]) => (check as { status?: unknown } | null)?.status === 'fail')
            .map(([name]) => name)
        : [];
    return failing.length === 0
      ? `answered ${error.status}`
      : `answered ${error.status} (failing: ${failing.join(', ')})`;
  }
  if (isFerryError(error) && error.code === 'TIMEOUT') return `did not answer within ${READY_TIMEOUT_MS} ms`;
  if (isCircuitOpenError(error)) return 'failing: its last answers were errors';
  return 'cannot be reached';
}

const isProblem = (type: unknown) =>
  typeof type === 'string' && mediaType(type) === 'application/problem+json';

/**
 * A service's problem with the path the client called as its `instance`: the provider's would name
 * `/faults` for `/admin/faults/payment-provider`.
 */
function calledPath(body: unknown, request: FastifyRequest): unknown {
  if (typeof body !== 'object' || body === null || Array.isArray(body) || !('instance' in body)) return body;
  return { ...body, instance: request.url.split('?', 1)[0] };
}

/** Valid JSON that Fastify's parser refused all the same: it has a member that could reach a prototype. */
const forbiddenMemberProblem = () =>
  new HttpProblemError(400, undefined, {
    detail: 'The request body has a member named __proto__, or constructor.prototype: neither is accepted.',
  });

function isJson(text: string): boolean {
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

const mediaType = (type: string | undefined) => type?.split(';', 1)[0]?.trim().toLowerCase();

/**
 * A problem for a body that is valid JSON but would not be read as sent: a member repeated in one
 * object (JSON.parse keeps the last without a word; refused, as unknown ones are), or a number whose
 * fraction is too fine for a JSON number (0.99999999999999999 is read as 1: a fractional quantity or
 * price would pass as whole).
 */
function ambiguityOf(text: string): HttpProblemError | undefined {
  const repeated = firstDuplicateMember(text);
  if (repeated !== undefined) {
    return new HttpProblemError(400, undefined, {
      detail: `The request body has the member ${JSON.stringify(repeated.slice(0, 64))} twice in one object: send each member once.`,
    });
  }
  const rounded = firstRoundedFraction(text);
  if (rounded !== undefined) {
    return new HttpProblemError(400, undefined, {
      detail: `The request body has the number ${rounded.slice(0, 64)}, a fraction too fine for a JSON number, which would be read as the whole number ${Number(rounded)}: send whole numbers as such.`,
    });
  }
  return undefined;
}

/** A JSON body in UTF-8 (`charset=utf-8` or none) and not encoded (`identity` or none). */
function isPlainUtf8(type: string | undefined, encoding: string | undefined): boolean {
  if (encoding !== undefined && encoding.trim().toLowerCase() !== 'identity') return false;
  const charset = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(type ?? '')?.[1]?.toLowerCase();
  return charset === undefined || charset === 'utf-8' || charset === 'utf8';
}
