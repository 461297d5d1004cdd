import type { StandardSchemaV1 } from './standard-schema.js';

/** One failed check of a value (a message, a request) against its schema. */
export interface ValidationIssue {
  /** Dotted path of the failing field; empty for the whole value. */
  readonly path: string;
  readonly message: string;
}

function pathOf(issue: StandardSchemaV1.Issue): string {
  if (!issue.path) return '';
  return issue.path.map((p) => String(typeof p === 'object' ? p.key : p)).join('.');
}

/** Converts Standard Schema issues into Ferry's plain, serialisable form. */
export function toValidationIssues(issues: ReadonlyArray<StandardSchemaV1.Issue>): ValidationIssue[] {
  return issues.map((issue) => ({ path: pathOf(issue), message: issue.message }));
}
