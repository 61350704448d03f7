// The Prometheus text exposition format, just enough of it for counters: `name{labels} value [timestamp]` lines,
// comments (# HELP, # TYPE) skipped. Samples of one name with different labels are summed, as the page only wants
// totals.

export function parsePrometheus(text) {
  const values = new Map();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const match = /^([A-Za-z_:][\w:]*)(\{.*\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const value = Number(match[3]);  // Number() reads "1.5e+06", "+Inf" and "NaN" as Prometheus writes them
    if (Number.isNaN(value)) continue;
    values.set(match[1], (values.get(match[1]) || 0) + value);
  }
  return values;
}

/** The share of lookups that hit between two scrapes, or null when there were none (a dense model, `--mmap`) or
 *  either scrape failed. */
export function hitRate(before, after) {
  if (!before || !after) return null;
  const hits = after.hits - before.hits;
  const lookups = hits + (after.misses - before.misses);
  return lookups > 0 ? {rate: hits / lookups, hits, lookups} : null;
}
