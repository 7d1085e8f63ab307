/**
 * "did you mean" for unknown keys and names: the closest candidate by edit distance, offered only
 * when it is close enough to be a typo (at most a third of the word, minimum 1 edit), so an unrelated
 * key never gets a misleading suggestion. Case-only differences always count (`binpath`).
 */

/** Levenshtein distance, two-row dynamic programming: O(a*b) time, O(b) memory. */
export function editDistance (a: string, b: string): number {
  if (a === b) return 0
  if (a.length === 0) return b.length
  if (b.length === 0) return a.length
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  let cur = new Array<number>(b.length + 1)
  for (let i = 1; i <= a.length; i++) {
    cur[0] = i
    for (let j = 1; j <= b.length; j++) {
      const cost = a.charCodeAt(i - 1) === b.charCodeAt(j - 1) ? 0 : 1
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
    }
    [prev, cur] = [cur, prev]
  }
  return prev[b.length]
}

export function didYouMean (word: string, candidates: Iterable<string>): string | null {
  let best: string | null = null
  let bestScore = Infinity
  for (const c of candidates) {
    const score = c.toLowerCase() === word.toLowerCase() ? 0 : editDistance(word.toLowerCase(), c.toLowerCase())
    if (score < bestScore) { best = c; bestScore = score }
  }
  const limit = Math.max(1, Math.floor(word.length / 3))
  return best !== null && bestScore <= limit ? best : null
}
