// The settings panel. Every field is mirrored into localStorage as one JSON object, so a reload keeps them; the
// fields hold strings exactly as typed, and only `samplingFields` turns them into the numbers a request carries
// (a blank field is left out of the request, so the server's own default applies).

const STORAGE_KEY = "moestream.chat.settings";

// setting name -> id of its form field
const FIELD_IDS = {
  model: "model", temperature: "temperature", top_p: "top-p", max_tokens: "max-tokens", seed: "seed",
  system: "system", api_key: "api-key",
};

const DEFAULTS = {
  model: "", temperature: "0.8", top_p: "0.95", max_tokens: "512", seed: "", system: "", api_key: "",
};

function field(name) {
  return document.getElementById(FIELD_IDS[name]);
}

function stored() {
  try {
    return JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
  } catch {
    return {};  // storage disabled or an old, unreadable entry: start from the defaults
  }
}

function save(values) {
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(values));
  } catch {
    // storage disabled (private mode, quota): the page still works, it just forgets on reload
  }
}

/** The settings as typed, strings throughout. */
export function currentSettings() {
  const values = {};
  for (const name of Object.keys(FIELD_IDS)) values[name] = field(name).value;
  return values;
}

/** Fill the form from storage and keep storage up to date; `onChange(name)` hears each edit. */
export function bindSettings(onChange) {
  const values = {...DEFAULTS, ...stored()};
  for (const [name, value] of Object.entries(values)) {
    if (name in FIELD_IDS && name !== "model") field(name).value = value;  // model: once the list has loaded
  }
  for (const name of Object.keys(FIELD_IDS)) {
    field(name).addEventListener("input", () => {
      const values = currentSettings();
      if (!field("model").options.length) delete values.model;  // list not loaded yet: keep the stored choice
      save({...stored(), ...values});
      onChange(name);
    });
  }
  return values;
}

/** Replace the model list (from GET /v1/models), keeping the stored choice when it is still served. */
export function setModels(models, wanted) {
  const select = field("model");
  select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
  if (models.some((m) => m.id === wanted)) select.value = wanted;
  save({...stored(), model: select.value});
}

function number(text, parse) {
  if (text.trim() === "") return undefined;
  const value = parse(text);
  return Number.isFinite(value) ? value : undefined;
}

/** The sampling fields of a chat request; blanks are left out. */
export function samplingFields(s) {
  const fields = {
    temperature: number(s.temperature, parseFloat),
    top_p: number(s.top_p, parseFloat),
    max_tokens: number(s.max_tokens, (t) => parseInt(t, 10)),
    seed: number(s.seed, (t) => parseInt(t, 10)),
  };
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}
