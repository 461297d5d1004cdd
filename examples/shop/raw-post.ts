/**
 * For tests: a POST of a JSON body with its header lines sent exactly as given, repeats included
 * (fetch joins repeated names into one line; Node's `request` with a list of headers does not).
 */
import { request } from 'node:http';

export interface RawAnswer {
  readonly status: number;
  /** The answer's content type ('' without one). */
  readonly type: string;
  /** The answer's body as JSON, or `undefined` when empty. */
  readonly body: unknown;
}

/** POSTs `body` (JSON text) to `url` with `headerLines` (name, value, name, value, …) after its own Host and Content-Type. */
export function postWithHeaderLines(
  url: string,
  body: string,
  headerLines: readonly string[],
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const call = request(
      url,
      // A list of headers gets no Host from Node.
      {
        method: 'POST',
        headers: ['host', new URL(url).host, 'content-type', 'application/json', ...headerLines],
      },
      (response) => {
        let text = '';
        response.setEncoding('utf8');
        response.on('data', (chunk: string) => {
          text += chunk;
        });
        response.on('end', () =>
          resolve({
            status: response.statusCode ?? 0,
            type: String(response.headers['content-type'] ?? ''),
            body: text === '' ? undefined : JSON.parse(text),
          }),
        );
      },
    );
    call.on('error', reject);
    call.end(body);
  });
}
