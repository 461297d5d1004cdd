/** `String.prototype.isWellFormed` (Node 20), not yet in TypeScript's ES2023 library. */
interface WellFormedCheck {
  isWellFormed(): boolean;
}

/** Whether `text` has a UTF-8 form: no lone surrogate, which RabbitMQ would carry as U+FFFD. */
export function isWellFormed(text: string): boolean {
  return (text as unknown as WellFormedCheck).isWellFormed();
}
