import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { StringDecoder } from 'node:string_decoder';
import { fileURLToPath } from 'node:url';

/**
 * Runs the example `script` from its sources in a child process, as its npm script does, with `env`
 * added; with `interruptAt`, sends it SIGINT once its output contains that text. Resolves its exit
 * code and output (stdout and stderr).
 */
export async function runExample(
  script: URL,
  env: NodeJS.ProcessEnv = {},
  interruptAt?: string,
): Promise<{ code: number | null; out: string }> {
  const child = spawn(
    process.execPath,
    ['--conditions=ferry-source', '--import', 'tsx', fileURLToPath(script)],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } },
  );
  let out = '';
  // One decoder per stream, as onLines (ferry/testing) has: a character split across chunks is decoded whole.
  const reader = (decoder: StringDecoder) => (chunk: Buffer) => {
    out += decoder.write(chunk);
    if (interruptAt !== undefined && out.includes(interruptAt) && child.exitCode === null) {
      interruptAt = undefined;
      child.kill('SIGINT');
    }
  };
  child.stdout.on('data', reader(new StringDecoder('utf8')));
  child.stderr.on('data', reader(new StringDecoder('utf8')));
  const [code] = (await once(child, 'exit')) as [number | null];
  return { code, out };
}
