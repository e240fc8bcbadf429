// Event positions (`seq`, a decimal string such as "1187"): parsing and ordering, as the
// server orders them. BigInt keeps values past 2^53 exact.

/** Parses a seq, or returns null when it is not one. */
export function parseSeq(seq) {
  if (typeof seq === 'number' && Number.isSafeInteger(seq) && seq >= 0) return BigInt(seq);
  if (typeof seq !== 'string') return null;
  const s = seq.trim();
  if (!/^\d+$/.test(s)) return null;
  return BigInt(s);
}

/** Compares two seqs: negative, zero or positive. A missing or malformed seq sorts first. */
export function compareSeq(a, b) {
  const pa = parseSeq(a);
  const pb = parseSeq(b);
  if (pa === null || pb === null) return (pa !== null ? 1 : 0) - (pb !== null ? 1 : 0);
  if (pa !== pb) return pa < pb ? -1 : 1;
  return 0;
}

/** The later of two seqs (either may be null). */
export function maxSeq(a, b) {
  if (parseSeq(a) === null) return parseSeq(b) !== null ? b : a ?? b ?? null;
  if (parseSeq(b) === null) return a;
  return compareSeq(a, b) >= 0 ? a : b;
}
