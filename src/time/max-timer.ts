/**
 * The longest delay `setTimeout` honours (2^31 - 1 ms, about 24.8 days): a longer one fires at once.
 * Every time limit Ferry arms a timer for is checked against it.
 */
export const MAX_TIMER_MS = 2_147_483_647;
