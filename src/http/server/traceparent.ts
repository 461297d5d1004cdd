import { asciiOf, writeAscii, writeRandomHex } from '../../context/random.js';

/** The fields of a `traceparent` header (W3C Trace Context). */
export interface Traceparent {
  /** 2 lowercase hex digits, not `ff`. A later version than `00` is read by its first four fields. */
  readonly version: string;
  /** 32 lowercase hex digits, not all zeros. */
  readonly traceId: string;
  /** 16 lowercase hex digits, not all zeros: the span that sent the request. */
  readonly parentId: string;
  /** 2 hex digits as received; only bit 0 ("sampled") is defined, and only it is passed on. */
  readonly flags: string;
}

// The four fields every version starts with (W3C Trace Context §3.2 and §4.3, versioning).
const TRACEPARENT_FIELDS = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})/;
const TRACEPARENT_LENGTH = 55;
const DASH = 0x2d;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_PARENT_ID = '0'.repeat(16);

/**
 * Parses a `traceparent`; `undefined` when it is missing or malformed. Version `00` must be exactly
 * its four fields. A later version is read by its first four fields and the rest ignored, as the
 * specification asks so that a trace survives a newer caller: at least 55 characters, and a `-`
 * after the flags when there is more. Version `ff` is invalid.
 */
export function parseTraceparent(value: unknown): Traceparent | undefined {
  if (typeof value !== 'string' || value.length < TRACEPARENT_LENGTH) return undefined;
  const match = TRACEPARENT_FIELDS.exec(value);
  if (!match) return undefined;
  const [, version, traceId, parentId, flags] = match as unknown as [string, string, string, string, string];
  if (version === '00') {
    if (value.length !== TRACEPARENT_LENGTH) return undefined;
  } else if (version === 'ff') {
    return undefined;
  } else if (value.length > TRACEPARENT_LENGTH && value.charCodeAt(TRACEPARENT_LENGTH) !== DASH) {
    return undefined;
  }
  if (traceId === ZERO_TRACE_ID || parentId === ZERO_PARENT_ID) return undefined;
  return { version, traceId, parentId, flags };
}

/** The flags a child passes on: the sampled bit, every other bit zeroed (§3.2.2.5). */
function childFlags(flags: string): '00' | '01' {
  return (Number.parseInt(flags, 16) & 1) === 1 ? '01' : '00';
}

/**
 * Starts a new trace: random trace id and span id. It is marked sampled so that downstream services
 * with parent-based sampling keep the spans of a trace that started here.
 */
export function newTraceparent(): string {
  // Assembled in one flat string: it goes straight into a request's header block.
  writeAscii('00-', 0);
  writeRandomHex(16, 3);
  writeAscii('-', 35);
  writeRandomHex(8, 36);
  writeAscii('-01', 52);
  return asciiOf(55);
}

/**
 * The `traceparent` of a child span: same trace id, new span id, the parent's sampled flag (other
 * flag bits are zeroed), always version `00`. Use it for each outgoing call. A missing or malformed
 * parent starts a new trace instead.
 *
 * @example
 * headers.traceparent = childTraceparent(currentContext()?.traceparent ?? '');
 */
export function childTraceparent(traceparent: string): string {
  const parent = parseTraceparent(traceparent);
  if (!parent) return newTraceparent();
  writeAscii('00-', 0);
  writeAscii(parent.traceId, 3);
  writeAscii('-', 35);
  writeRandomHex(8, 36);
  writeAscii('-', 52);
  writeAscii(childFlags(parent.flags), 53);
  return asciiOf(55);
}
