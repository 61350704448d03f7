// The conversation's DOM. Model text only ever goes in as text nodes (never innerHTML), so a reply that contains
// markup shows it rather than runs it. The view follows the newest text only while the reader is at the bottom,
// so scrolling up to read is not undone by every token.

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

function nearBottom(scroller) {
  return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 40;
}

/** Run `change`, then keep the newest content in view if the reader was at the bottom before it. */
function following(scroller, change) {
  const follow = nearBottom(scroller);
  change();
  if (follow) scroller.scrollTop = scroller.scrollHeight;
}

function messageElement(role, label) {
  const el = element("article", `message ${role}`);
  el.setAttribute("aria-label", label);
  el.append(element("div", "role", label));
  return el;
}

export function addUserMessage(conversation, text) {
  const el = messageElement("user", "You");
  el.append(element("div", "content", text));
  following(conversation, () => conversation.append(el));
  return el;
}

/** One assistant reply as it streams: thinking (folded, above), tool calls (folded), text, then error or stats.
 *  `el.dataset.state` is streaming, done, stopped or error. */
export class AssistantView {
  constructor(conversation, modelId) {
    this.conversation = conversation;
    this.el = messageElement("assistant", modelId || "Assistant");
    this.el.dataset.state = "streaming";
    this.contentEl = element("div", "content");
    this.text = this.contentEl.appendChild(document.createTextNode(""));
    this.tail = element("div", "tail");  // error and stats go below the reply
    this.el.append(this.contentEl, this.tail);
    this.thinking = null;
    this.calls = new Map();  // tool call index -> its elements and what has arrived
    following(conversation, () => conversation.append(this.el));
  }

  get content() {
    return this.text.data;
  }

  appendContent(piece) {
    following(this.conversation, () => this.text.appendData(piece));
  }

  appendReasoning(piece) {
    if (!this.thinking) {
      const details = element("details", "thinking");
      details.append(element("summary", "", "Thinking"), element("div", "text"));
      this.thinking = details.lastChild.appendChild(document.createTextNode(""));
      this.el.insertBefore(details, this.contentEl);
    }
    following(this.conversation, () => this.thinking.appendData(piece));
  }

  /** One tool_calls delta: {index, id?, type?, function: {name?, arguments?}}. */
  toolCallDelta(delta) {
    const index = delta.index ?? this.calls.size;
    let call = this.calls.get(index);
    if (!call) {
      const details = element("details", "tool-call");
      const summary = element("summary", "", "Tool call ");
      const name = summary.appendChild(element("span", "name"));
      const args = details.appendChild(element("pre", "arguments"));
      details.prepend(summary);
      this.el.insertBefore(details, this.tail);  // below the text, in the order they came
      call = {details, name, args, id: ""};
      this.calls.set(index, call);
    }
    if (delta.id) call.details.dataset.callId = call.id = delta.id;
    const fn = delta.function || {};
    following(this.conversation, () => {
      if (fn.name) call.name.textContent += fn.name;  // sent whole in one delta by most servers, in pieces by some
      if (fn.arguments) call.args.textContent += fn.arguments;
    });
  }

  showError(message) {
    const error = element("div", "error", message);
    error.setAttribute("role", "alert");
    following(this.conversation, () => this.tail.append(error));
  }

  setStats(text, title = "") {
    const stats = element("div", "stats", text);
    stats.title = title;
    following(this.conversation, () => this.tail.append(stats));
  }

  setState(state) {
    this.el.dataset.state = state;
  }
}
