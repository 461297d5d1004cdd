/**
 * A map shared by every copy of Ferry's modules in the process (a package installed twice, test
 * runners that load modules per file), kept on `globalThis` under `Symbol.for(name)`: what must be one
 * per SQLite file for the whole process, whichever copy asks.
 */
export function processWideMap<K, V>(name: string): Map<K, V> {
  const key = Symbol.for(name);
  const registry = globalThis as { [key]?: Map<K, V> };
  registry[key] ??= new Map();
  return registry[key];
}
