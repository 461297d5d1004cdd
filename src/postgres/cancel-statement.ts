import { connect } from 'node:net';

/** What the server told a connection at its start, to cancel that connection's statements with. */
export interface CancelTarget {
  readonly host?: string | null | undefined;
  readonly port?: number | null | undefined;
  readonly processID?: number | null | undefined;
  readonly secretKey?: number | null | undefined;
}

/** The protocol's CancelRequest code (1234 << 16 | 5678). */
export const CANCEL_REQUEST_CODE = 80877102;

/**
 * Asks the server to cancel the statement running on `target`'s connection, as `psql` does on Ctrl-C:
 * a CancelRequest on a connection of its own (no login, no pooled connection taken, so it works with
 * every pooled connection busy). Resolves once that connection is closed, or after `timeoutMs`;
 * never rejects. Nothing says when the server acts on it: it cancels whatever statement `target`
 * runs then, so `target` must not be given other work afterwards (destroy it, do not pool it). A
 * statement the request did not reach ends when it ends, or at the connection's `statement_timeout`.
 */
export function cancelStatement(target: CancelTarget, timeoutMs: number): Promise<void> {
  const { processID, secretKey } = target;
  if (typeof processID !== 'number' || typeof secretKey !== 'number') return Promise.resolve();
  const host = target.host ?? 'localhost';
  const port = target.port ?? 5432;
  return new Promise((resolve) => {
    const socket = host.startsWith('/') ? connect(`${host}/.s.PGSQL.${port}`) : connect(port, host);
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('connect', () => {
      const request = Buffer.alloc(16);
      request.writeInt32BE(16, 0);
      request.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      request.writeInt32BE(processID, 8);
      request.writeInt32BE(secretKey, 12);
      socket.end(request);
    });
    // The server answers nothing: it closes the connection once it has read the request.
    socket.on('data', () => {});
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}
