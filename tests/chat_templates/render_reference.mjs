// Renders every chat template of tests/data/chat_templates over every
// conversation of conversations.json (add_generation_prompt false and true),
// and every feature snippet over the first conversation, with the reference
// Jinja implementation (@huggingface/jinja, pinned in package.json), and
// writes the results as JSON to stdout. The ctest test "chat templates: ..."
// compares fedge's renderings with these byte for byte (tests/tokenizer/
// test_chat_template_oracle.cpp). Usage: node render_reference.mjs > out.json
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";

const here = dirname(fileURLToPath(import.meta.url));
const data = join(here, "..", "data", "chat_templates");
const manifest = JSON.parse(readFileSync(join(data, "templates.json"), "utf8"));
const { conversations, features } = JSON.parse(readFileSync(join(here, "conversations.json"), "utf8"));

// Special tokens and variables a template is rendered with, as fedge passes them.
function variables(entry) {
  const vars = {};
  for (const key of ["bos_token", "eos_token", "pad_token", "unk_token"]) if (key in entry) vars[key] = entry[key];
  return Object.assign(vars, entry.variables ?? {});
}

function render(source, context) {
  try {
    return { output: new Template(source).render(context) };
  } catch (e) {
    return { error: String(e.message ?? e) };
  }
}

const cases = [];
for (const entry of manifest.templates) {
  const source = readFileSync(join(data, entry.file), "utf8");
  for (const conversation of conversations) {
    for (const add_generation_prompt of [false, true]) {
      const context = { ...variables(entry), messages: conversation.messages, add_generation_prompt };
      cases.push({ template: entry.name, file: entry.file, conversation: conversation.name, variables: variables(entry),
                   add_generation_prompt, ...render(source, context) });
    }
  }
}
for (const feature of features) {
  const context = { messages: conversations[2].messages, add_generation_prompt: true };
  cases.push({ feature: feature.name, source: feature.template, conversation: conversations[2].name,
               add_generation_prompt: true, variables: {}, ...render(feature.template, context) });
}
process.stdout.write(JSON.stringify({ reference: "@huggingface/jinja", cases }, null, 1) + "\n");
