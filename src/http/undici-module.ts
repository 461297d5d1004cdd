import type * as Undici from 'undici';

let loaded: typeof Undici | undefined;
let loading: Promise<typeof Undici> | undefined;

/**
 * Loads undici, once per process. It is loaded on demand rather than imported at the top, so that
 * importing Ferry for its bus or event store does not load an HTTP client (100 ms or more).
 * A failed load is tried again by the next caller.
 */
export function loadUndici(): Promise<typeof Undici> {
  loading ??= import('undici').then(
    (module) => {
      loaded = module;
      return module;
    },
    (error: unknown) => {
      loading = undefined;
      throw error;
    },
  );
  return loading;
}

/** undici once {@link loadUndici} has loaded it, else `undefined`. */
export function loadedUndici(): typeof Undici | undefined {
  return loaded;
}
