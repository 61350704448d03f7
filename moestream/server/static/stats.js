// The numbers under each reply. Time to first token runs from sending the request to the first delta that carries
// text, thinking or a tool call. Tokens/s is the decode rate: the usage chunk's completion tokens after the first,
// over the time from the first token to the last (the first token's wait is time to first token, not decoding).

import {hitRate} from "./prometheus.js";

export class ReplyTimer {
  constructor() {
    this.sent = performance.now();
    this.first = null;
    this.last = null;
  }

  token() {
    this.last = performance.now();
    if (this.first === null) this.first = this.last;
  }

  ttftSeconds() {
    return this.first === null ? null : (this.first - this.sent) / 1000;
  }

  tokensPerSecond(completionTokens) {
    const seconds = this.first === null ? 0 : (this.last - this.first) / 1000;
    return completionTokens > 1 && seconds > 0 ? (completionTokens - 1) / seconds : null;
  }
}

function milliseconds(seconds) {
  return seconds < 10 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`;
}

/** "41.3 tokens/s · 200 tokens · first token 25 ms · expert cache hits 83% · length" */
export function formatStats({timer, usage, before, after, outcome, finishReason}) {
  const tokens = usage ? usage.completion_tokens : null;
  const rate = tokens === null ? null : timer.tokensPerSecond(tokens);
  const ttft = timer.ttftSeconds();
  const cache = hitRate(before, after);
  const parts = [
    `${rate === null ? "—" : rate.toFixed(1)} tokens/s`,
    ...(tokens === null ? [] : [`${tokens} tokens`]),
    `first token ${ttft === null ? "—" : milliseconds(ttft)}`,
    `expert cache hits ${cache === null ? "—" : `${Math.round(cache.rate * 100)}%`}`,
  ];
  if (outcome === "stopped") parts.push("stopped");
  else if (finishReason) parts.push(finishReason);
  return parts.join(" · ");
}

/** The title (hover text) of the stats line: the raw counts behind the percentages. */
export function statsDetail({before, after, usage}) {
  const cache = hitRate(before, after);
  const lines = [];
  if (usage) lines.push(`prompt ${usage.prompt_tokens} tokens, completion ${usage.completion_tokens} tokens`);
  lines.push(cache ? `expert cache: ${cache.hits} hits of ${cache.lookups} lookups` : "expert cache: no lookups");
  return lines.join("\n");
}
