/**
 * Copy code specialised for one shape of published data (keys, member types, nesting), compiled
 * once a message type has been published with that shape a few times. A generic copier handles
 * every shape from one site, where V8's inline caches see every object of the application and go
 * megamorphic: in the in-memory bus that made the two copies of each message cost more than the
 * rest of a publish and delivery together. Code for one shape is monomorphic, like hand-written
 * `{ ...data, items: [...] }`.
 *
 * A plan never changes what a copy contains: its copier checks, before reading any member, that the
 * object has the plan's prototype and exactly the plan's enumerable keys in the plan's order, and
 * hands each member that is not of the expected kind to the generic copier; a member the JSON
 * encoding leaves out finishes the object key by key. Members are read once, in key order, as the
 * generic copier and `JSON.stringify` read them.
 */

/** A copy of one value, as the generic copier makes it (or one of the two markers). */
export type GenericCopy = (value: unknown, depth: number) => unknown;

/** What a plan's copier needs from the generic one. */
/** Most bytes of JSON one UTF-16 unit of a string takes: `\u001f` for a control character. */
export const STRING_BYTES_PER_UNIT = 6;
/**
 * Bytes of JSON counted for each member of an object or array besides its key's and its string's:
 * quotes, colon and comma, and a number (at most 24 characters), `true`, `false` or `null`.
 */
export const MEMBER_BYTES = 32;

export interface PlanHelpers {
  /** The generic copier. */
  readonly copy: GenericCopy;
  /** Finishes `object` key by key from key `from` on, given the copies of the keys before it. */
  readonly finish: (
    object: Record<string, unknown>,
    keys: readonly string[],
    from: number,
    copies: readonly unknown[],
    depth: number,
  ) => unknown;
  readonly notPlain: symbol;
  readonly omitted: symbol;
  readonly maxLength: number;
  /**
   * `strayed`: set to `true` when a container does not follow the plan (its copy made by the generic
   * copier). `bound`: grown by every copier by at least the bytes of JSON its part takes (see
   * `data-snapshot.ts`), so that the size of a snapshot is counted only when it may be too large.
   */
  readonly report: { strayed: boolean; bound: number };
}

/**
 * The compiled code of one shape. `copy` answers {@link MISS} when the value is not of the plan's
 * shape at the top (nothing read then), else what the generic copier would answer. `clone` copies a
 * snapshot made by `copy` that kept to the plan all the way down (see {@link ShapePlan.copy}).
 */
export interface ShapePlan {
  /**
   * Copies `value`; sets `helpers.report.strayed` when some container in it did not follow the plan
   * (its copy was made by the generic copier), in which case `clone` does not apply to the result.
   */
  readonly copy: (value: unknown) => unknown;
  readonly clone: (snapshot: unknown) => unknown;
}

export const MISS: unique symbol = Symbol('miss');

/** Shapes planned no deeper than this, with no more members than this in all. */
const MAX_PLAN_DEPTH = 6;
const MAX_PLAN_MEMBERS = 64;
const MAX_PLAN_KEY_LENGTH = 128;
const INTEGER_LIKE = /^(?:0|[1-9][0-9]*)$/;

type Shape =
  | { readonly kind: 'any' | 'string' | 'number' | 'boolean' | 'null' }
  | { readonly kind: 'object'; readonly keys: readonly string[]; readonly members: readonly Shape[] }
  | { readonly kind: 'array'; readonly element: Shape };

/**
 * The shape of `sample`, a snapshot made by the generic copier (so plain, with no getters, symbol
 * keys or omitted members); parts too deep, too large or with keys a plan cannot hold are `any`.
 */
function shapeOf(sample: unknown, depth: number, budget: { members: number }): Shape {
  if (sample === null) return { kind: 'null' };
  switch (typeof sample) {
    case 'string':
      return { kind: 'string' };
    case 'number':
      return { kind: 'number' };
    case 'boolean':
      return { kind: 'boolean' };
    case 'object':
      break;
    default:
      return { kind: 'any' };
  }
  if (depth >= MAX_PLAN_DEPTH) return { kind: 'any' };
  if (Array.isArray(sample)) {
    const first: unknown = sample[0];
    // Arrays of primitives copy each element generically: a primitive costs nothing to check.
    const element =
      typeof first === 'object' && first !== null
        ? shapeOf(first, depth + 1, budget)
        : { kind: 'any' as const };
    return { kind: 'array', element };
  }
  const keys = Object.keys(sample);
  budget.members -= keys.length;
  // Integer-like keys are ordered apart by JavaScript; `toJSON` changes what JSON writes; long keys
  // would make long source (keys are written into it as JSON string literals, which escapes them).
  if (
    budget.members < 0 ||
    keys.some(
      (key) =>
        key.length > MAX_PLAN_KEY_LENGTH || INTEGER_LIKE.test(key) || key === 'toJSON' || key === '__proto__',
    )
  ) {
    return { kind: 'any' };
  }
  const members = keys.map((key) => shapeOf((sample as Record<string, unknown>)[key], depth + 1, budget));
  return { kind: 'object', keys, members };
}

/** Generates the source of the copier and cloner functions of `shape` and what they refer to. */
class Generator {
  readonly lines: string[] = [];
  readonly keyLists: (readonly string[])[] = [];
  #next = 0;

  readonly #names = new Map<Shape, { copy: string; clone: string }>();

  /** Adds the functions of a container shape, once; answers the names of its copier and cloner. */
  container(shape: Shape & { kind: 'object' | 'array' }, depth: number): { copy: string; clone: string } {
    const known = this.#names.get(shape);
    if (known !== undefined) return known;
    const id = this.#next++;
    const copy = `copy${id}`;
    const clone = `clone${id}`;
    this.#names.set(shape, { copy, clone });
    if (shape.kind === 'array') this.#array(shape.element, depth, copy, clone);
    else this.#object(shape.keys, shape.members, depth, copy, clone);
    return { copy, clone };
  }

  /** Statements that set `target` to the copy of `value` (a member at `depth`) or return early. */
  #member(shape: Shape, value: string, target: string, depth: number, onOmitted: string): string[] {
    const generic = `${target} = generic(${value}, ${depth});`;
    const check = [
      `if (${target} === NOT_PLAIN) return NOT_PLAIN;`,
      `if (${target} === OMITTED) ${onOmitted}`,
    ];
    switch (shape.kind) {
      case 'string':
        return [
          `if (typeof ${value} === 'string') { ${target} = ${value}; report.bound += ${STRING_BYTES_PER_UNIT} * ${value}.length; } else {`,
          generic,
          ...check,
          '}',
        ];
      case 'boolean':
        return [
          `if (typeof ${value} === '${shape.kind}') ${target} = ${value}; else {`,
          generic,
          ...check,
          '}',
        ];
      case 'number':
        // `+ 0` turns -0 into 0, as JSON does.
        return [
          `if (typeof ${value} === 'number') ${target} = Number.isFinite(${value}) ? ${value} + 0 : null; else {`,
          generic,
          ...check,
          '}',
        ];
      case 'null':
        return [`if (${value} === null) ${target} = null; else {`, generic, ...check, '}'];
      case 'any':
        return [generic, ...check];
      default: {
        const fns = this.container(shape, depth);
        return [
          `${target} = typeof ${value} === 'object' && ${value} !== null ? ${fns.copy}(${value}) : MISS;`,
          `if (${target} === MISS) {`,
          generic,
          ...check,
          '}',
          `else if (${target} === NOT_PLAIN) return NOT_PLAIN;`,
        ];
      }
    }
  }

  /** The expression that clones member `value` of a snapshot that kept to the plan. */
  #cloneOf(shape: Shape, value: string, depth: number): string {
    if (shape.kind !== 'object' && shape.kind !== 'array') return value;
    // A member may be a primitive where the plan has a container: the generic copier made it.
    const fns = this.container(shape, depth);
    return `(typeof ${value} === 'object' && ${value} !== null ? ${fns.clone}(${value}) : ${value})`;
  }

  #array(element: Shape, depth: number, copy: string, clone: string): void {
    const body = this.#member(element, 'item', 'copy', depth + 1, 'copy = null;');
    const elementClone = this.#cloneOf(element, 'snapshot[i]', depth + 1);
    this.lines.push(
      `function ${copy}(value) {`,
      '  if (!Array.isArray(value) || Object.getPrototypeOf(value) !== Array.prototype) return MISS;',
      "  if (value.length > MAX_LENGTH || typeof value.toJSON === 'function') return MISS;",
      '  const length = value.length;',
      `  report.bound += ${MEMBER_BYTES} * length + 2;`,
      '  const out = new Array(length);',
      '  for (let i = 0; i < length; i++) {',
      '    const item = value[i];',
      '    let copy;',
      ...body.map((line) => `    ${line}`),
      '    out[i] = copy;',
      '  }',
      '  return out;',
      '}',
      `function ${clone}(snapshot) {`,
      ...(element.kind === 'object' || element.kind === 'array'
        ? [
            '  const out = new Array(snapshot.length);',
            `  for (let i = 0; i < snapshot.length; i++) out[i] = ${elementClone};`,
            '  return out;',
          ]
        : ['  return snapshot.slice();']),
      '}',
    );
  }

  #object(
    keys: readonly string[],
    members: readonly Shape[],
    depth: number,
    copy: string,
    clone: string,
  ): void {
    const list = this.keyLists.push(keys) - 1;
    const literal = (name: (i: number) => string): string =>
      `{ ${keys.map((key, i) => `${JSON.stringify(key)}: ${name(i)}`).join(', ')} }`;
    const statements: string[] = [];
    keys.forEach((key, i) => {
      const copies = `[${keys
        .slice(0, i)
        .map((_, j) => `c${j}`)
        .join(', ')}]`;
      statements.push(`const v${i} = value[${JSON.stringify(key)}];`, `let c${i};`);
      statements.push(
        ...this.#member(
          members[i]!,
          `v${i}`,
          `c${i}`,
          depth + 1,
          `return finish(value, KEYS[${list}], ${i}, ${copies}, ${depth});`,
        ),
      );
    });
    const clones = members.map((member, i) =>
      this.#cloneOf(member, `snapshot[${JSON.stringify(keys[i])}]`, depth + 1),
    );
    this.lines.push(
      `function ${copy}(value) {`,
      '  if (Array.isArray(value) || Object.getPrototypeOf(value) !== Object.prototype) return MISS;',
      "  if (typeof value.toJSON === 'function') return MISS;",
      `  const keys = KEYS[${list}];`,
      '  let n = 0;',
      '  for (const key in value) if (key !== keys[n++]) return MISS;',
      `  if (n !== ${keys.length}) return MISS;`,
      `  report.bound += ${keys.reduce((sum, key) => sum + STRING_BYTES_PER_UNIT * key.length + MEMBER_BYTES, 2)};`,
      ...statements.map((line) => `  ${line}`),
      `  return ${literal((i) => `c${i}`)};`,
      '}',
      `function ${clone}(snapshot) {`,
      `  return ${literal((i) => clones[i]!)};`,
      '}',
    );
  }
}

/**
 * Compiles the plan of the shape of `sample` (a snapshot the generic copier made), or answers
 * `undefined` when the shape is not a container or code cannot be generated here (a runtime that
 * forbids `new Function`).
 */
export function compileShapePlan(sample: unknown, helpers: PlanHelpers): ShapePlan | undefined {
  const shape = shapeOf(sample, 0, { members: MAX_PLAN_MEMBERS });
  if (shape.kind !== 'object' && shape.kind !== 'array') return undefined;
  const generator = new Generator();
  const top = generator.container(shape, 0);
  const source = [
    '"use strict";',
    'function generic(value, depth) {',
    "  if (typeof value === 'object' && value !== null) report.strayed = true;",
    '  return copyGeneric(value, depth);',
    '}',
    'function finish(value, keys, from, copies, depth) {',
    '  report.strayed = true;',
    '  return finishGeneric(value, keys, from, copies, depth);',
    '}',
    ...generator.lines,
    'return {',
    `  copy: ${top.copy},`,
    `  clone: ${top.clone},`,
    '};',
  ].join('\n');
  try {
    const factory = new Function(
      'copyGeneric',
      'finishGeneric',
      'NOT_PLAIN',
      'OMITTED',
      'MISS',
      'MAX_LENGTH',
      'KEYS',
      'report',
      source,
    ) as (...args: unknown[]) => ShapePlan;
    return factory(
      helpers.copy,
      helpers.finish,
      helpers.notPlain,
      helpers.omitted,
      MISS,
      helpers.maxLength,
      generator.keyLists,
      helpers.report,
    );
  } catch {
    return undefined;
  }
}
