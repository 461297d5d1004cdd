import {
  createServer,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  STATUS_CODES,
} from 'node:http';
import { describeValue } from '../errors/describe-value.js';
import { InvalidOptionsError } from '../errors/ferry-error.js';
import { checkOptions } from '../errors/options-object.js';
import { HTTP_TOKEN } from '../http/client-options.js';
import { PROBLEM_CONTENT_TYPE } from '../http/headers.js';
import { checkFault, checkFaults } from './fault-check.js';

/** A problem+json body to answer with; `status` and `title` default from the fault. */
export interface FaultProblem {
  readonly type?: string;
  readonly title?: string;
  readonly status?: number;
  readonly detail?: string;
  readonly [extension: string]: unknown;
}

/**
 * How the server answers one request. Without `reset`, `hang` or `problem` it answers `status`
 * (200; 503 when `retryAfter` is set) with `body`, or with `{ ok, path, method }` for a 2xx
 * without a body (204 excepted).
 */
export interface Fault {
  readonly status?: number;
  /** A string is sent as is (text/plain unless `headers` say otherwise), bytes as octet-stream, anything else as JSON. */
  readonly body?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  /** Wait this long before answering (or resetting). */
  readonly delayMs?: number;
  /** Sets `Retry-After`: seconds, or an HTTP date string. */
  readonly retryAfter?: number | string;
  /** Destroy the connection (TCP RST) instead of answering. */
  readonly reset?: true;
  /** Never answer; the connection stays open until `close()`. */
  readonly hang?: true;
  /** Answer with this `application/problem+json` document (status 500 unless given). */
  readonly problem?: FaultProblem;
}

/** A request the server received. */
export interface RecordedRequest {
  readonly method: string;
  /** Path and query string. */
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  /** Epoch ms when the request (its body included) was received. */
  readonly at: number;
}

/** Options of {@link FaultServer.start}. */
export interface FaultServerOptions {
  /** The answer when no scripted fault is left. @default {} (200 `{ ok: true, path, method }`) */
  readonly default?: Fault;
}

interface Route {
  readonly method: string;
  readonly path: string;
  readonly script: Fault[];
}

/**
 * An HTTP server for tests that misbehaves on demand: scripted faults are consumed one per request,
 * first those of a matching route, then the global script, then the default answer. Every request
 * is recorded, so that tests can assert on what a client sent (idempotency key, correlation id,
 * deadline) and how often.
 *
 * @example
 * const server = await FaultServer.start();
 * server.enqueue({ status: 503, retryAfter: 1 }, { reset: true }); // then 200s
 * server.route('GET', '/users/42', { hang: true });
 * // …call server.url…
 * expect(server.requests).toHaveLength(3);
 * await server.close();
 */
export class FaultServer {
  readonly #server: Server;
  readonly #script: Fault[] = [];
  readonly #routes: Route[] = [];
  readonly #requests: RecordedRequest[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #default: Fault;
  #closed = false;

  private constructor(server: Server, fallback: Fault) {
    this.#server = server;
    this.#default = fallback;
  }

  /**
   * Starts a server on an ephemeral port of 127.0.0.1. Every fault is checked as it is given
   * (here, and by `enqueue`, `route` and `setDefault`). @throws InvalidOptionsError
   */
  static async start(options: FaultServerOptions = {}): Promise<FaultServer> {
    checkOptions('FaultServer.start', options, ['default']);
    if (options.default !== undefined) checkFault('FaultServer.start default', options.default);
    let faultServer!: FaultServer;
    const server = createServer((req, res) => faultServer.#receive(req, res));
    faultServer = new FaultServer(server, options.default ?? {});
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    return faultServer;
  }

  /** The port the server listens on. */
  get port(): number {
    const address = this.#server.address();
    if (address === null || typeof address === 'string') throw new Error('fault server is not listening');
    return address.port;
  }

  /** `http://127.0.0.1:<port>`, without a trailing slash. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Every request received so far, oldest first. */
  get requests(): readonly RecordedRequest[] {
    return this.#requests;
  }

  /** Scripted faults not consumed yet, routes included. */
  get pending(): number {
    return this.#script.length + this.#routes.reduce((n, route) => n + route.script.length, 0);
  }

  /** Appends faults to the global script: each is the answer to one request, in order. */
  enqueue(...faults: Fault[]): this {
    checkFaults('FaultServer.enqueue', faults);
    this.#script.push(...faults);
    return this;
  }

  /**
   * Appends faults to the script of one route: requests with this method and path consume them
   * before the global script. A path without `?` matches whatever the query string.
   */
  route(method: string, path: string, ...faults: Fault[]): this {
    if (typeof method !== 'string' || !HTTP_TOKEN.test(method)) {
      throw new InvalidOptionsError(
        `FaultServer.route method must be an HTTP method, not ${describeValue(method)}`,
      );
    }
    if (typeof path !== 'string' || !path.startsWith('/')) {
      throw new InvalidOptionsError(`FaultServer.route path must start with "/", not ${describeValue(path)}`);
    }
    checkFaults('FaultServer.route', faults);
    const upper = method.toUpperCase();
    const existing = this.#routes.find((r) => r.method === upper && r.path === path);
    if (existing) existing.script.push(...faults);
    else this.#routes.push({ method: upper, path, script: [...faults] });
    return this;
  }

  /** The answer when no scripted fault is left. */
  setDefault(fault: Fault): this {
    checkFault('FaultServer.setDefault', fault);
    this.#default = fault;
    return this;
  }

  /** Forgets scripts, routes and recorded requests; the default stays. */
  clear(): this {
    this.#script.length = 0;
    this.#routes.length = 0;
    this.#requests.length = 0;
    return this;
  }

  /** Stops the server, ending every connection: hanging, delayed and idle keep-alive ones. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    this.#server.closeAllConnections();
    await closed;
  }

  #receive(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('error', () => {});
    req.on('end', () => {
      const method = req.method ?? 'GET';
      const path = req.url ?? '/';
      this.#requests.push({
        method,
        path,
        headers: req.headers,
        body: Buffer.concat(chunks).toString('utf8'),
        at: Date.now(),
      });
      const fault = this.#next(method, path);
      if (fault.hang) return;
      const act = () => (fault.reset ? req.socket.resetAndDestroy() : respond(res, fault, method, path));
      if (fault.delayMs === undefined || fault.delayMs <= 0) {
        act();
        return;
      }
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        act();
      }, fault.delayMs);
      this.#timers.add(timer);
    });
  }

  #next(method: string, path: string): Fault {
    const pathname = path.split('?', 1)[0];
    const route = this.#routes.find(
      (r) => r.method === method && (r.path.includes('?') ? r.path === path : r.path === pathname),
    );
    return route?.script.shift() ?? this.#script.shift() ?? this.#default;
  }
}

function respond(res: ServerResponse, fault: Fault, method: string, path: string): void {
  if (res.destroyed) return;
  const headers: Record<string, string> = {};
  let status: number;
  let body: Buffer;
  if (fault.problem !== undefined) {
    status = fault.status ?? fault.problem.status ?? 500;
    headers['content-type'] = PROBLEM_CONTENT_TYPE;
    body = Buffer.from(
      JSON.stringify({
        type: 'about:blank',
        title: STATUS_CODES[status] ?? 'Error',
        ...fault.problem,
        status,
      }),
    );
  } else {
    status = fault.status ?? (fault.retryAfter === undefined ? 200 : 503);
    const bodiless = status === 204 || status === 304;
    const content =
      fault.body ?? (status >= 200 && status < 300 && !bodiless ? { ok: true, path, method } : undefined);
    if (content === undefined) body = Buffer.alloc(0);
    else if (typeof content === 'string') {
      headers['content-type'] = 'text/plain; charset=utf-8';
      body = Buffer.from(content);
    } else if (content instanceof Uint8Array) {
      headers['content-type'] = 'application/octet-stream';
      body = Buffer.from(content);
    } else {
      headers['content-type'] = 'application/json; charset=utf-8';
      body = Buffer.from(JSON.stringify(content));
    }
  }
  if (fault.retryAfter !== undefined) headers['retry-after'] = String(fault.retryAfter);
  for (const [name, value] of Object.entries(fault.headers ?? {})) headers[name.toLowerCase()] = value;
  headers['content-length'] = String(body.length);
  res.writeHead(status, headers);
  res.end(method === 'HEAD' ? undefined : body);
}
