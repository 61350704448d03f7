// Streaming chat completions: POST /v1/chat/completions with `stream: true`, read as server-sent events. Each
// event's `data:` is one JSON chunk, and `data: [DONE]` ends the stream. A stream that stops without [DONE] was cut
// off, and one carrying `{"error": ...}` failed on the server: both are thrown, never swallowed.

import {ApiError, authHeaders, errorFromObject, errorFromResponse} from "./api.js";

/** The `data` of each event in an SSE body (multi-line data joined by "\n", as the SSE spec says). */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  try {
    for (;;) {
      const {value, done} = await reader.read();  // rejects with AbortError when the request is aborted
      if (done) break;
      buffer += value;
      const lines = buffer.split("\n");
      buffer = lines.pop();  // the last piece may be half a line: keep it for the next read
      for (const raw of lines) {
        const line = raw.endsWith("\r") ? raw.slice(0, -1) : raw;  // CRLF line ends are allowed too
        if (line === "") {  // a blank line ends an event
          if (data.length) yield data.join("\n");
          data = [];
        } else if (line.startsWith("data:")) {
          data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
        }  // other fields (event:, id:, retry:) and comments (":") carry nothing a chat completion uses
      }
    }
    if (data.length) yield data.join("\n");  // a last event without its blank line
  } finally {
    reader.cancel().catch(() => {});  // a consumer that stopped early must not leave the connection open
  }
}

/** The parsed chunks of one streamed chat completion. */
export async function* chatChunks(request, {apiKey, signal}) {
  const res = await fetch("/v1/chat/completions", {
    method: "POST",
    headers: {"Content-Type": "application/json", Accept: "text/event-stream", ...authHeaders(apiKey)},
    body: JSON.stringify(request),
    signal,
  });
  if (!res.ok) throw await errorFromResponse(res);
  for await (const data of sseData(res.body)) {
    if (data === "[DONE]") return;
    let chunk;
    try {
      chunk = JSON.parse(data);
    } catch {
      throw new ApiError(null, `the server sent an event that is not JSON: ${data.slice(0, 200)}`);
    }
    if (chunk.error) throw errorFromObject(null, chunk.error);
    yield chunk;
  }
  throw new ApiError(null, "the stream ended without data: [DONE]; the reply may be cut short");
}
