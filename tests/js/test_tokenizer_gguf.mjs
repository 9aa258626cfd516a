// test_tokenizer_gguf.mjs — the tokenizer read from a GGUF file's metadata gives the same ids,
// decoded text, streamed pieces and chat prompts as the tokenizer.json path of the same model.
//
// GGUF files are written by tests/gguf_write.py from the repository's tokenizers: Qwen3 (gpt2
// model, pre-tokenizer "qwen2") and stories260K (llama model: pieces, scores and types from its
// SentencePiece tok512.model, so the merges are derived in C from the scores). The Qwen3
// vocabulary is also written with the pre-tokenizers "llama-bpe" and "default" and compared with
// copies of tokenizer.json whose pipeline is what those names mean. The tokenizer.json path itself
// is golden-tested against transformers.js (test_tokenizer_qwen3 / _stories).
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

import { BIN, ROOT, TMP, qwenCorpus, runCli, storiesCorpus, tap, variant } from "./tok_corpus.mjs";

const t = tap();
const dir = fs.mkdtempSync(path.join(TMP, "tok-gguf-"));

function writeGguf(src, out, extra = []) {
  const p = spawnSync("/usr/bin/python3", [path.join(ROOT, "tests/gguf_write.py"), src, out, "--no-weights", ...extra], { encoding: "utf8" });
  return t.ok(p.status === 0, `gguf_write.py ${path.basename(src)} ${extra.join(" ")}`.trim() + (p.status ? `: ${p.stderr}` : ""));
}

// Every CLI mode over the corpus: ids (with and without the post-processor and added tokens),
// decode (with and without skip_special), streamed decode.
function same(what, a, b, corpus) {
  const lines = corpus.map((s) => JSON.stringify(s));
  const modes = [[], ["--no-add-special"], ["--no-special", "--no-add-special"]];
  for (const m of modes) {
    const x = runCli("tokenize", ["--model", a, ...m], lines), y = runCli("tokenize", ["--model", b, ...m], lines);
    let bad = 0;
    for (let i = 0; i < corpus.length; i++)
      if (x.lines[i] !== y.lines[i] && ++bad <= 3)
        t.diag(`${JSON.stringify(corpus[i])}\n  json ${x.lines[i]}\n  gguf ${y.lines[i]}`);
    t.ok(x.status === 0 && y.status === 0 && x.lines.length === corpus.length && !bad,
      `${what}: tokenize ${m.join(" ") || "(default)"}: ${corpus.length - bad}/${corpus.length} strings give the same ids`);
    if (m.length) continue;
    const ids = x.lines.map((l) => JSON.parse(l));
    for (const d of [[], ["--skip-special"], ["--stream"]]) {
      const p = runCli("detokenize", ["--model", a, ...d], ids), q = runCli("detokenize", ["--model", b, ...d], ids);
      const diff = p.lines.filter((l, i) => l !== q.lines[i]).length;
      t.ok(p.status === 0 && q.status === 0 && p.lines.length === ids.length && !diff,
        `${what}: detokenize ${d.join(" ") || "(default)"}: the same text for all ${ids.length} id lists`);
    }
  }
}

if (!fs.existsSync(BIN)) {
  t.ok(false, `binary ${BIN} exists`);
} else {
  const qwen = path.join(ROOT, "models/qwen3-tokenizer"), stories = path.join(ROOT, "models/stories260K");
  const qg = path.join(dir, "qwen3.gguf"), sg = path.join(dir, "stories.gguf");
  if (writeGguf(qwen, qg)) same("qwen3", qwen, qg, qwenCorpus(2205));
  if (writeGguf(stories, sg)) same("stories260K", stories, sg, storiesCorpus(450));

  // The same vocabulary under the other gpt2 pre-tokenizers llama.cpp names.
  const llama3Re = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const pres = {
    "llama-bpe": (j) => {
      j.normalizer = null;
      j.model.ignore_merges = true;
      j.pre_tokenizer = { type: "Sequence", pretokenizers: [
        { type: "Split", pattern: { Regex: llama3Re }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: false }] };
    },
    default: (j) => {
      j.normalizer = null;
      j.pre_tokenizer = { type: "ByteLevel", add_prefix_space: false, trim_offsets: false, use_regex: true };
    },
  };
  const small = qwenCorpus(400, 7);
  for (const [name, edit] of Object.entries(pres)) {
    const v = variant("qwen3-tokenizer", `tok-gguf-${name}`, edit), g = path.join(dir, `qwen3-${name}.gguf`);
    if (writeGguf(qwen, g, ["--pre", name])) same(`pre ${name}`, v, g, small);
  }

  // Chat template from tokenizer.chat_template renders as tokenizer_config.json's.
  const reqs = [
    { messages: [{ role: "user", content: "Hi" }], add_generation_prompt: true },
    { messages: [{ role: "system", content: "Be brief." }, { role: "user", content: "2+2?" }, { role: "assistant", content: "4" }, { role: "user", content: "明月几时有" }], add_generation_prompt: true },
    { messages: [{ role: "user", content: "think" }], add_generation_prompt: true, chat_template_kwargs: { enable_thinking: false } },
  ];
  for (const [src, g] of [[qwen, qg], [stories, sg]]) {
    const a = runCli("template", ["--model", src], reqs), b = runCli("template", ["--model", g], reqs);
    t.ok(a.status === 0 && b.status === 0 && a.lines.length === reqs.length && a.lines.every((l, i) => l === b.lines[i]),
      `${path.basename(src)}: chat template from GGUF renders the ${reqs.length} requests as tokenizer_config.json's`);
  }

  // An unknown pre-tokenizer or tokenizer model is a clear error naming it.
  for (const [flag, val, key] of [["--pre", "no-such-pre", "tokenizer.ggml.pre"]]) {
    const g = path.join(dir, "bad-pre.gguf");
    if (writeGguf(qwen, g, [flag, val])) {
      const r = runCli("tokenize", ["--model", g], ['"hi"']);
      t.ok(r.status === 1 && !r.signal && r.stderr.includes(val) && r.stderr.includes(key),
        `unknown ${key} '${val}' is refused naming it: ${r.stderr.trim()}`);
    }
  }
}
fs.rmSync(dir, { recursive: true, force: true });
t.done();
