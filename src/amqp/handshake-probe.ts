import { once } from 'node:events';
import net from 'node:net';
import tls from 'node:tls';

/** Why the broker closed the connection when asked to open the vhost. */
export interface OpenRefusal {
  readonly replyCode: number;
  readonly replyText: string;
}

const FRAME_METHOD = 1;
const FRAME_END = 0xce;
const CONNECTION = 10;
const START = 10;
const START_OK = 11;
const TUNE = 30;
const TUNE_OK = 31;
const OPEN = 40;
const OPEN_OK = 41;
const CLOSE = 50;
const CLOSE_OK = 51;

function shortString(text: string): Buffer {
  const bytes = Buffer.from(text, 'utf8');
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

function longString(bytes: Buffer): Buffer {
  const size = Buffer.alloc(4);
  size.writeUInt32BE(bytes.length);
  return Buffer.concat([size, bytes]);
}

function methodFrame(method: number, args: Buffer): Buffer {
  const header = Buffer.alloc(11);
  header.writeUInt8(FRAME_METHOD, 0);
  header.writeUInt16BE(0, 1);
  header.writeUInt32BE(4 + args.length, 3);
  header.writeUInt16BE(CONNECTION, 7);
  header.writeUInt16BE(method, 9);
  return Buffer.concat([header, args, Buffer.from([FRAME_END])]);
}

/**
 * Replays the AMQP 0-9-1 opening handshake of `url` (PLAIN login, then connection.open of its vhost)
 * and resolves the broker's reason when it closes the connection instead of opening the vhost, or
 * `undefined` when it opens it. amqplib drops that reason (`Expected ConnectionOpenOk; got
 * <ConnectionClose channel:0>`), and it is what tells a missing vhost from missing permissions.
 * Used only to explain a failure, never on the normal connect path.
 */
export async function probeVhostAccess(url: string, timeoutMs = 5000): Promise<OpenRefusal | undefined> {
  const parsed = new URL(url);
  const secure = parsed.protocol === 'amqps:';
  const host = parsed.hostname.replace(/^\[|\]$/g, '');
  const port = Number(parsed.port) || (secure ? 5671 : 5672);
  const user = decodeURIComponent(parsed.username || 'guest');
  const password = decodeURIComponent(parsed.password || 'guest');
  const vhost = parsed.pathname.length <= 1 ? '/' : decodeURIComponent(parsed.pathname.slice(1));
  const socket = secure
    ? tls.connect({ host, port, ...(net.isIP(host) ? {} : { servername: host }) })
    : net.connect({ host, port });
  socket.setTimeout(timeoutMs, () => socket.destroy(new Error('handshake probe timed out')));
  try {
    await once(socket, secure ? 'secureConnect' : 'connect');
    const frames = readMethodFrames(socket);
    const next = async (): Promise<{ method: number; args: Buffer }> => {
      const { value, done } = await frames.next();
      if (done) throw new Error('the broker closed the socket during the handshake probe');
      return value;
    };
    socket.write(Buffer.from('AMQP\x00\x00\x09\x01', 'latin1'));
    if ((await next()).method !== START) throw new Error('expected connection.start');
    socket.write(
      methodFrame(
        START_OK,
        Buffer.concat([
          longString(Buffer.alloc(0)), // client properties: empty table
          shortString('PLAIN'),
          longString(Buffer.from(`\0${user}\0${password}`, 'utf8')),
          shortString('en_US'),
        ]),
      ),
    );
    const tune = await next();
    if (tune.method === CLOSE) return refusalOf(tune.args);
    if (tune.method !== TUNE) throw new Error('expected connection.tune');
    const tuneOk = Buffer.alloc(8);
    tuneOk.writeUInt16BE(tune.args.readUInt16BE(0), 0);
    tuneOk.writeUInt32BE(tune.args.readUInt32BE(2), 2);
    tuneOk.writeUInt16BE(0, 6);
    socket.write(methodFrame(TUNE_OK, tuneOk));
    socket.write(methodFrame(OPEN, Buffer.concat([shortString(vhost), shortString(''), Buffer.from([0])])));
    const answer = await next();
    if (answer.method === CLOSE) {
      socket.write(methodFrame(CLOSE_OK, Buffer.alloc(0)));
      return refusalOf(answer.args);
    }
    if (answer.method === OPEN_OK) return undefined;
    throw new Error('unexpected answer to connection.open');
  } finally {
    socket.destroy();
  }
}

function refusalOf(args: Buffer): OpenRefusal {
  const replyCode = args.readUInt16BE(0);
  const length = args.readUInt8(2);
  return { replyCode, replyText: args.subarray(3, 3 + length).toString('utf8') };
}

/** Method frames on channel 0 of the connection class, as they arrive; heartbeats are skipped. */
async function* readMethodFrames(socket: net.Socket): AsyncGenerator<{ method: number; args: Buffer }> {
  let buffer = Buffer.alloc(0);
  for await (const chunk of socket) {
    buffer = Buffer.concat([buffer, chunk as Buffer]);
    while (buffer.length >= 7) {
      const size = buffer.readUInt32BE(3);
      if (buffer.length < 8 + size) break;
      const type = buffer.readUInt8(0);
      const payload = buffer.subarray(7, 7 + size);
      buffer = buffer.subarray(8 + size);
      if (type !== FRAME_METHOD || payload.readUInt16BE(0) !== CONNECTION) continue;
      yield { method: payload.readUInt16BE(2), args: payload.subarray(4) };
    }
  }
}
