/**
 * Resolves `true` once `work` settles (fulfilled or rejected), or `false` after `ms` if it has not:
 * for a broker round trip that a close must not wait on past its timeout (a broker that stops
 * answering without closing TCP never replies). A rejection of `work` is never left unhandled.
 */
export function settledWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), Math.max(0, ms));
    const settled = () => {
      clearTimeout(timer);
      resolve(true);
    };
    work.then(settled, settled);
  });
}
