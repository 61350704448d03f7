// The chat page's wiring: one conversation, one request in flight at a time. A turn is: scrape /metrics, stream
// the reply, scrape /metrics again (the difference is this reply's expert-cache hits), then keep the exchange in
// the history sent with the next message. Stop aborts the request and keeps the text so far; a turn that failed
// (or was stopped before any text) stays on screen but is left out of the history, since chat templates want user
// and assistant turns to alternate.

import {ApiError, cacheCounters, listModels} from "./api.js";
import {bindSettings, currentSettings, samplingFields, setModels} from "./settings.js";
import {formatStats, ReplyTimer, statsDetail} from "./stats.js";
import {chatChunks} from "./stream.js";
import {addUserMessage, AssistantView} from "./view.js";

const $ = (id) => document.getElementById(id);
const conversation = $("conversation");
const prompt = $("prompt");
const emptyHint = $("empty-hint");

let history = [];  // [{role, content}] of the finished turns of this conversation
let chatNumber = 0;  // bumped by New chat, so a reply still finishing cannot write into the next conversation
let inFlight = null;  // the AbortController of the request streaming now
let models = [];

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  document.body.dataset.busy = busy ? "true" : "false";
}

function describe(err) {
  if (err instanceof ApiError) return err.describe();
  return `could not reach the server: ${err.message || err}`;  // fetch rejects with a TypeError when offline
}

function requestBody(s, messages) {
  const system = s.system.trim() ? [{role: "system", content: s.system}] : [];
  return {
    model: s.model, messages: [...system, ...messages], stream: true, stream_options: {include_usage: true},
    ...samplingFields(s),
  };
}

/** Show one chunk's deltas in `reply`; returns the chunk's finish_reason, if any. */
function absorb(chunk, reply, timer) {
  let finish = null;
  for (const choice of chunk.choices || []) {
    const delta = choice.delta || {};
    if (delta.reasoning_content) reply.appendReasoning(delta.reasoning_content);
    if (delta.content) reply.appendContent(delta.content);
    for (const call of delta.tool_calls || []) reply.toolCallDelta(call);
    if (delta.content || delta.reasoning_content || delta.tool_calls?.length) timer.token();
    finish = choice.finish_reason || finish;
  }
  return finish;
}

/** Stream one reply into `reply`; returns what the stats need. */
async function streamReply(s, messages, reply, signal) {
  const timer = new ReplyTimer();
  const result = {timer, usage: null, outcome: "done", finishReason: null};
  try {
    for await (const chunk of chatChunks(requestBody(s, messages), {apiKey: s.api_key, signal})) {
      if (chunk.usage) result.usage = chunk.usage;
      result.finishReason = absorb(chunk, reply, timer) || result.finishReason;
    }
  } catch (err) {
    if (err.name === "AbortError") {
      result.outcome = "stopped";
    } else {
      result.outcome = "error";
      reply.showError(describe(err));
    }
  }
  return result;
}

async function send() {
  const text = prompt.value.trim();
  if (!text || inFlight) return;
  const controller = (inFlight = new AbortController());
  const chat = chatNumber;
  setBusy(true);
  prompt.value = "";
  emptyHint.hidden = true;
  const s = currentSettings();
  const turn = {role: "user", content: text};
  const userEl = addUserMessage(conversation, text);
  const reply = new AssistantView(conversation, s.model);
  const before = await cacheCounters(s.api_key);  // before the request: its own lookups are the difference
  const result = await streamReply(s, [...history, turn], reply, controller.signal);
  const after = await cacheCounters(s.api_key);
  reply.setStats(formatStats({...result, before, after}), statsDetail({...result, before, after}));
  reply.setState(result.outcome);
  if (chat === chatNumber) {
    if (result.outcome !== "error" && reply.content) {
      history.push(turn, {role: "assistant", content: reply.content});
    } else {
      for (const el of [userEl, reply.el]) el.classList.add("left-out");
      userEl.title = reply.el.title = "not part of the conversation sent with the next message";
    }
  }
  if (inFlight === controller) inFlight = null;
  setBusy(inFlight !== null);
  prompt.focus();
}

function stop() {
  inFlight?.abort();
}

function newChat() {
  stop();
  inFlight = null;
  chatNumber += 1;
  history = [];
  conversation.replaceChildren(emptyHint);
  emptyHint.hidden = false;
  setBusy(false);
  prompt.focus();
}

function showModel() {
  const model = models.find((m) => m.id === $("model").value);
  const context = model && model.context_length ? `context ${model.context_length} tokens` : "";
  $("model-status").textContent = context;
  $("model-status").classList.remove("bad");
  $("model-badge").textContent = model ? `${model.id}${context ? ` · ${context}` : ""}` : "";
}

async function refreshModels() {
  const s = currentSettings();
  try {
    models = await listModels(s.api_key);
    setModels(models, s.model || stored.model);
    showModel();
  } catch (err) {
    // keep the list already shown (a mistyped key should not wipe it) and say why it could not be refreshed
    $("model-status").textContent = `Could not list models: ${describe(err)}`;
    $("model-status").classList.add("bad");
  }
}

function debounce(fn, ms) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(fn, ms);
  };
}

function onKey(event) {
  // Enter sends, Shift+Enter is a new line; not while an input method is composing (Enter picks its candidate)
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
}

function toggleSettings() {
  const panel = $("settings");
  panel.hidden = !panel.hidden;
  $("toggle-settings").setAttribute("aria-expanded", String(!panel.hidden));
}

const refreshSoon = debounce(refreshModels, 300);
const stored = bindSettings((name) => {
  if (name === "api_key") refreshSoon();
  if (name === "model") showModel();
});
$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  send();
});
prompt.addEventListener("keydown", onKey);
$("stop").addEventListener("click", stop);
$("new-chat").addEventListener("click", newChat);
$("toggle-settings").addEventListener("click", toggleSettings);
setBusy(false);
refreshModels();
prompt.focus();
