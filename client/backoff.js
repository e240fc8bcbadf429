// Reconnect delays: exponential backoff with jitter, so that thousands of browsers dropped at
// once by a restart do not all come back in the same millisecond.

export const DEFAULT_RECONNECT = Object.freeze({
  minDelay: 500,
  maxDelay: 15000,
  factor: 2,
  jitter: 0.5,
});

/**
 * The delay before reconnect attempt `attempt` (0 for the first retry), in milliseconds:
 * `min(maxDelay, minDelay * factor^attempt)`, of which the fraction `jitter` is random.
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const o = { ...DEFAULT_RECONNECT, ...options };
  const base = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, Math.max(0, attempt)));
  const jitter = Math.min(1, Math.max(0, o.jitter));
  return Math.round(base * (1 - jitter) + base * jitter * random());
}
