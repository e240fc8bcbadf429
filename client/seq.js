// Event positions (`seq`, "<xid>-<id>"): parsing and ordering, as the server orders them.

/** Splits a seq into its two numbers, or returns null when it is not a seq. */
export function parseSeq(seq) {
  if (typeof seq !== 'string') return null;
  const m = /^(\d+)-(\d+)$/.exec(seq.trim());
  if (!m) return null;
  return [BigInt(m[1]), BigInt(m[2])];
}

/** Compares two seqs: negative, zero or positive. A missing or malformed seq sorts first. */
export function compareSeq(a, b) {
  const pa = parseSeq(a);
  const pb = parseSeq(b);
  if (!pa || !pb) return (pa ? 1 : 0) - (pb ? 1 : 0);
  if (pa[0] !== pb[0]) return pa[0] < pb[0] ? -1 : 1;
  if (pa[1] !== pb[1]) return pa[1] < pb[1] ? -1 : 1;
  return 0;
}

/** The later of two seqs (either may be null). */
export function maxSeq(a, b) {
  if (!parseSeq(a)) return parseSeq(b) ? b : a ?? b ?? null;
  if (!parseSeq(b)) return a;
  return compareSeq(a, b) >= 0 ? a : b;
}
