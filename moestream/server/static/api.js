// Requests to the server this page came from (same origin, relative URLs: nothing goes to any other host).
// Every failure becomes an ApiError whose message is the server's own words, so the page can show it as it is.

import {parsePrometheus} from "./prometheus.js";

export class ApiError extends Error {
  /** status: the HTTP status, or null for an error that arrived inside a 200 stream. */
  constructor(status, message, type = "") {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.type = type;
  }

  describe() {
    const where = this.status === null ? "error in the stream" : `HTTP ${this.status}`;
    return `${where}: ${this.message}${this.type ? ` (${this.type})` : ""}`;
  }
}

export function authHeaders(apiKey) {
  return apiKey ? {Authorization: `Bearer ${apiKey}`} : {};
}

/** An OpenAI-style error object ({message, type, code}) as an ApiError. */
export function errorFromObject(status, error) {
  if (typeof error !== "object" || error === null) return new ApiError(status, String(error));
  return new ApiError(status, error.message || JSON.stringify(error), error.code || error.type || "");
}

/** A non-2xx response as an ApiError: the body's error object when it has one, else its text. */
export async function errorFromResponse(res) {
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text);
    if (body && body.error) return errorFromObject(res.status, body.error);
  } catch {
    // not JSON (a proxy's HTML page, say): the text itself is the best message there is
  }
  return new ApiError(res.status, text.trim() || res.statusText || "no response body");
}

/** GET /v1/models: [{id, context_length}]. */
export async function listModels(apiKey) {
  const res = await fetch("/v1/models", {headers: authHeaders(apiKey)});
  if (!res.ok) throw await errorFromResponse(res);
  const body = await res.json();
  return (body.data || []).map((m) => ({id: m.id, context_length: m.context_length}));
}

/** The expert cache's counters from GET /metrics, or null when they cannot be read. Scraped before and after a
 *  request, the difference is that request's hits and misses (this page is single-user; others' requests in
 *  between would be counted too). */
export async function cacheCounters(apiKey) {
  try {
    const res = await fetch("/metrics", {headers: authHeaders(apiKey), cache: "no-store"});
    if (!res.ok) return null;
    const values = parsePrometheus(await res.text());
    const hits = values.get("moestream_cache_hits_total");
    const misses = values.get("moestream_cache_misses_total");
    return hits === undefined || misses === undefined ? null : {hits, misses};
  } catch {
    return null;  // the reply matters more than its cache statistics: never fail a turn over them
  }
}
