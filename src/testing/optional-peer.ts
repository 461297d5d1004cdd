import { FerryError } from '../errors/ferry-error.js';

/**
 * Loads an optional peer once, when `ferry/testing` is loaded, and resolves a getter for it: the
 * module, or, when it could not be loaded, `DEPENDENCY_MISSING` with `message(suite)` (saying what to
 * install) and the loading error as its cause. A project without the peer still uses the rest of
 * `ferry/testing`; only the suite that needs it throws, when called.
 */
export async function optionalPeer<T>(
  load: () => Promise<T>,
  message: (suite: string) => string,
): Promise<(suite: string) => T> {
  let loaded: T | undefined;
  let failure: unknown;
  try {
    loaded = await load();
  } catch (error) {
    failure = error;
  }
  return (suite) => {
    if (loaded !== undefined) return loaded;
    throw new FerryError('DEPENDENCY_MISSING', message(suite), { cause: failure });
  };
}
