// tok_corpus.mjs — deterministic generated corpora for the tokenizer goldens, and the shared
// harness of tests/js/test_tokenizer_*.mjs (loading the reference tokenizer, running the CLIs).
//
// Strings are built from fragment pools by a seeded PRNG, so every run tests the same corpus
// and a failure can be reproduced. Characters where the reference (transformers.js, through
// @lenml/tokenizers) is known to differ from Hugging Face tokenizers are left out of the pools,
// and only those (see docs/arch-tokenizer.md, "Golden tests"):
//   - U+0085 (NEL) and U+FEFF (BOM): JavaScript's \s lacks the first and has the second;
//     Hugging Face's Oniguruma \s is exactly Unicode White_Space (NEL yes, BOM no);
//   - U+017F (long s) and U+212A (Kelvin) after an apostrophe: Hugging Face's (?i:'s|...)
//     case-folds them to s / k; transformers.js rewrites the group to [sS]... without folding.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT =
  process.env.RADIXSERVE_ROOT ?? path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const BIN = path.resolve(ROOT, process.env.BIN ?? "bin/radixserve");
export const TMP = process.env.RADIXSERVE_TMP ?? path.join(ROOT, "build/test-tmp");

// mulberry32: small, fast, good enough to pick fragments.
export function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const pick = (r, a) => a[Math.floor(r() * a.length)];
const int = (r, lo, hi) => lo + Math.floor(r() * (hi - lo + 1));

const POOLS = {
  english: [
    "Once upon a time", "there was a little girl named Lily", "She loved to play outside.",
    "The quick brown fox jumps over the lazy dog", "Hello, world!", "What's up?", "I don't know",
    "they're here", "we've been", "I'm fine", "you'll see", "he'd go", "IT'S BIG", "We'Ve",
    "THEY'RE", "She'LL", "I'D", "don'T", "rock'n'roll", "O'Neil's", "e-mail", "state-of-the-art",
    "Mr. Smith", "U.S.A.", "naïve café", "résumé", "Zoë", "coöperate",
  ],
  chinese: [
    "明月几时有，把酒问青天。", "不知天上宫阙，今夕是何年。", "我们今天去公园玩吧！", "人工智能",
    "你好，世界", "这是一个测试。", "中华人民共和国", "机器学习和深度学习", "（括号）「引号」",
    "一二三四五", "２０２４年", "繁體中文測試", "《红楼梦》",
  ],
  japanese: [
    "こんにちは世界", "日本語のテキストです。", "カタカナとひらがな", "東京都渋谷区", "ｶﾀｶﾅ",
    "ありがとうございます！", "すし🍣が好き",
  ],
  korean: ["안녕하세요", "한국어 문장입니다.", "서울특별시", "감사합니다!"],
  other: [
    "Привет, мир!", "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם", "สวัสดีครับ",
    "नमस्ते दुनिया", "Ünïcödé ßtraße", "Ærøskøbing", "İstanbul ılık", "ǅemal", "ﬁne ﬂow",
    "x² + y³ = z⁴", "½ ¼ ¾", "①②③", "Ⅻ", "𝓗𝓮𝓵𝓵𝓸", "𝟘𝟙𝟚",
  ],
  emoji: [
    "😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵🇺🇸", "❤️", "🧑🏿‍💻", "👩‍❤️‍💋‍👨", "✌️", "🤖🚀✨",
    "1️⃣", "🫠", "☕️",
  ],
  code: [
    "int main(void) { return 0; }", "for (int i = 0; i < n; i++) {\n\tx[i] += 1;\n}",
    "def f(x):\n    return x ** 2\n", "if __name__ == '__main__':\n    main()",
    '{"key": "value", "n": [1, 2, 3]}', "const a = () => { /* arrow */ };", "#include <stdio.h>",
    "SELECT * FROM t WHERE id = 42;", "x += y >> 3 & 0xFF", "<div class=\"a\">hi</div>",
    "https://example.com/path?q=1&r=2#frag", "a_b_c = foo.bar[baz]", "$ ls -la | grep '\\.c$'",
    "    indented();", "//comment", "#!/bin/sh", "```python\nprint('hi')\n```",
  ],
  digits: [
    "0", "7", "42", "1234567890", "3.14159", "-273.15", "1,000,000", "2024-01-31", "12:30:45",
    "1e-10", "0x1F", "99%", "$19.99", "٣٤٥", "१२३",
  ],
  space: [
    " ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\t \n", "        ",
    "\n    ", " \t\t ", "\u00a0", "\u3000", "\u2003", "\u2028", "\r", "\v", "\f",
  ],
  punct: [
    ".", ",", "!", "?", "...", "!!!", "?!", "--", "—", "–", "…", "''", "\"", "'", "(", ")", "[]",
    "{}", "<>", "@#$%^&*", "~`|\\", ";:", "''s", "'", " 's", "'ll", "'VE",
  ],
  special: [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>", "<tool_call>",
    "</tool_call>", "<|im_start", "im_start|>", "<|im_start|>user\n", "<think>\n\n</think>\n\n",
    "<|fim_prefix|>", "<thinking>", "<|vision_pad|>", "< think>", "<<|im_end|>>",
  ],
  nfd: [
    "e\u0301", "a\u0308", "o\u0302", "n\u0303", "A\u030a", "\u1100\u1161\u11a8", "c\u0327",
    "u\u0308\u0301", "\u0041\u030a\u0301",
  ],
};

const QWEN_KINDS = Object.keys(POOLS);
const STORY_WORDS = [
  "Lily", "Tom", "the", "a", "dog", "cat", "ball", "park", "happy", "sad", "big", "little",
  "said", "went", "played", "saw", "tree", "sun", "mom", "dad", "friend", "toy", "red", "blue",
  "and", "was", "very", "day", "one", "home", "jumped", "ran", "smiled", "loved",
];
const STORY_EXTRA = [
  ".", ",", "!", "?", "\"", "'", ":", ";", "-", "(", ")", "\n", "\n\n", "\t", "  ", "   ", "123",
  "7", "2024", "3.5", "你好", "世界", "😀", "Привет", "é", "ß", "ñ", "<s>", "</s>", "<unk>",
  "▁", "こんにちは", "🇯🇵", "\u00a0", "~", "@", "#", "{", "}", "[", "]",
];

/** Qwen3 corpus: n strings mixing every pool, plus each fragment alone. */
export function qwenCorpus(n, seed = 1) {
  const r = rng(seed);
  const out = [];
  for (const k of QWEN_KINDS) out.push(...POOLS[k]);
  while (out.length < n) {
    const parts = int(r, 1, 8);
    let s = "";
    for (let i = 0; i < parts; i++) {
      const k = pick(r, QWEN_KINDS);
      s += pick(r, POOLS[k]);
      if (r() < 0.5) s += pick(r, [" ", "", "\n", "  ", "\t"]);
    }
    if (r() < 0.05) s = s.repeat(int(r, 2, 5)); // longer texts and long repeated runs
    if (r() < 0.03) s += " ".repeat(int(r, 10, 200)) + "x"; // long whitespace runs
    out.push(s);
  }
  out.push("", " ", "a", "\n", "明月几时有，把酒问");
  return out;
}

/** stories260K corpus: story-like sentences with punctuation, digits, whitespace, bytes. */
export function storiesCorpus(n, seed = 2) {
  const r = rng(seed);
  const out = [...STORY_EXTRA];
  while (out.length < n) {
    const words = int(r, 1, 14);
    let s = r() < 0.1 ? pick(r, [" ", "  ", "\n", "\t"]) : "";
    for (let i = 0; i < words; i++) {
      let w = pick(r, STORY_WORDS);
      if (r() < 0.1) w = w[0].toUpperCase() + w.slice(1);
      s += w;
      if (r() < 0.25) s += pick(r, STORY_EXTRA);
      s += i + 1 < words ? pick(r, [" ", " ", " ", "  ", "\n", "\t", ""]) : "";
    }
    if (r() < 0.1) s += pick(r, [" ", "  ", "\n"]);
    out.push(s);
  }
  out.push("", "Once upon a time", "Once upon a time, there was a little girl named Lily.");
  return out;
}

/** The reference tokenizer (transformers.js) over the local files of a model directory (a name
 * under models/ or a path); no network. */
export async function reference(model) {
  const { TokenizerLoader } = await import("@lenml/tokenizers");
  const dir = path.isAbsolute(model) ? model : path.join(ROOT, "models", model);
  return TokenizerLoader.fromPreTrained({
    tokenizerJSON: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer.json"), "utf8")),
    tokenizerConfig: JSON.parse(fs.readFileSync(path.join(dir, "tokenizer_config.json"), "utf8")),
  });
}

/** Run `$BIN sub args` with lines of JSON on stdin; returns {status, lines, stderr, signal}. */
export function runCli(sub, args, inputLines) {
  const p = spawnSync(BIN, [sub, ...args], {
    input: inputLines.map((x) => (typeof x === "string" ? x : JSON.stringify(x))).join("\n") + "\n",
    maxBuffer: 1 << 28,
    encoding: "utf8",
  });
  const lines = (p.stdout ?? "").split("\n").filter((l) => l.length);
  return { status: p.status, signal: p.signal, stderr: p.stderr ?? "", lines };
}

/** TAP output. */
export function tap() {
  let n = 0, failed = 0;
  return {
    ok(cond, what) {
      n++;
      if (!cond) failed++;
      console.log(`${cond ? "" : "not "}ok ${n} - ${what}`);
      return cond;
    },
    diag(s) {
      console.log("# " + String(s).replace(/\n/g, "\n# "));
    },
    skip(why) {
      n++;
      console.log(`ok ${n} - # SKIP ${why}`);
    },
    done() {
      console.log(`1..${n}`);
      process.exitCode = failed ? 1 : 0;
    },
  };
}

/** Compare C ids with reference ids per string; diagnostics for the first few mismatches. */
export function compareIds(t, corpus, got, want, what) {
  let bad = 0;
  for (let i = 0; i < corpus.length; i++) {
    const g = got[i] ?? "(missing)";
    if (g !== JSON.stringify(want[i])) {
      if (++bad <= 5) t.diag(`${what}: ${JSON.stringify(corpus[i])}\n  got  ${g}\n  want ${JSON.stringify(want[i])}`);
    }
  }
  return bad;
}

export const noRoundTrip = () => null;

/** A copy of a model's tokenizer files in TMP/name, with tokenizer.json changed by edit(json). */
export function variant(model, name, edit) {
  const src = path.join(ROOT, "models", model), dir = path.join(TMP, name);
  fs.mkdirSync(dir, { recursive: true });
  const json = JSON.parse(fs.readFileSync(path.join(src, "tokenizer.json"), "utf8"));
  edit(json);
  fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(json));
  fs.copyFileSync(path.join(src, "tokenizer_config.json"), path.join(dir, "tokenizer_config.json"));
  return dir;
}

/**
 * The golden suite for one model directory: C `tokenize` against the reference with and
 * without the post-processor, C `detokenize` against the reference decode and against the
 * input (round trip), streamed decoding against whole decoding, and bad input.
 *   opts.roundTrip(s): the text decode(encode(s)) must give, or null to skip s
 *                      (noRoundTrip: the tokenizer cannot round-trip by design)
 *   opts.isAdded(id): whether id is an added token (for the --no-special check)
 */
export async function goldenSuite(t, model, corpus, opts) {
  const dir = path.isAbsolute(model) ? model : path.join(ROOT, "models", model);
  if (!fs.existsSync(BIN)) {
    t.ok(false, `binary ${BIN} exists`);
    return;
  }
  const ref = await reference(model);
  const lines = corpus.map((s) => JSON.stringify(s));

  const def = runCli("tokenize", ["--model", dir], lines);
  t.ok(def.status === 0 && def.lines.length === corpus.length,
    `${model}: tokenize answered ${def.lines.length}/${corpus.length} lines (status ${def.status}) ${def.stderr.slice(0, 200)}`);
  const wantDef = corpus.map((s) => ref.encode(s));
  const badDef = compareIds(t, corpus, def.lines, wantDef, "default");
  t.ok(badDef === 0, `${model}: tokenize (default add_special, as HF encode(text)) == reference on ${corpus.length} strings (${badDef} differ)`);

  const raw = runCli("tokenize", ["--model", dir, "--no-add-special"], lines);
  const wantRaw = corpus.map((s) => ref.encode(s, { add_special_tokens: false }));
  const badRaw = compareIds(t, corpus, raw.lines, wantRaw, "no-add-special");
  t.ok(raw.status === 0 && badRaw === 0, `${model}: tokenize --no-add-special == reference add_special_tokens=false (${badRaw} differ)`);

  const ids = raw.lines.map((l) => JSON.parse(l));
  const dec = runCli("detokenize", ["--model", dir], ids);
  t.ok(dec.status === 0 && dec.lines.length === corpus.length, `${model}: detokenize answered every line`);
  const texts = dec.lines.map((l) => JSON.parse(l));
  let badRef = 0, badRt = 0, rtChecked = 0;
  for (let i = 0; i < corpus.length; i++) {
    const want = ids[i].length ? ref.decode(ids[i]) : ""; // the reference refuses []
    if (texts[i] !== want && ++badRef <= 5) t.diag(`decode ${JSON.stringify(ids[i])}\n  got  ${JSON.stringify(texts[i])}\n  want ${JSON.stringify(want)}`);
    const rt = opts.roundTrip(corpus[i]);
    if (rt === null) continue;
    rtChecked++;
    if (texts[i] !== rt && ++badRt <= 5) t.diag(`round trip ${JSON.stringify(corpus[i])} -> ${JSON.stringify(texts[i])}`);
  }
  t.ok(badRef === 0, `${model}: detokenize == reference decode (${badRef} differ)`);
  if (opts.roundTrip !== noRoundTrip)
    t.ok(badRt === 0 && rtChecked >= corpus.length / 3, `${model}: decode(encode(s)) == s on ${rtChecked} strings (${badRt} differ)`);

  // Streaming: id by id, with and without skip_special, on the ids with the post-processor.
  const idsDef = def.lines.map((l) => JSON.parse(l));
  for (const skip of [[], ["--skip-special"]]) {
    const whole = runCli("detokenize", ["--model", dir, ...skip], idsDef);
    const st = runCli("detokenize", ["--model", dir, "--stream", ...skip], idsDef);
    let bad = 0;
    for (let i = 0; i < corpus.length; i++) {
      const pieces = JSON.parse(st.lines[i] ?? "null");
      const joined = Array.isArray(pieces) ? pieces.join("") : null;
      const want = JSON.parse(whole.lines[i] ?? "null");
      const split = Array.isArray(pieces) && pieces.some((p) => p.includes("\ufffd")) && !want.includes("\ufffd");
      if ((joined !== want || split) && ++bad <= 5) t.diag(`stream ${JSON.stringify(idsDef[i])}\n  pieces ${st.lines[i]}\n  want   ${JSON.stringify(want)}`);
    }
    t.ok(st.status === 0 && whole.status === 0 && bad === 0,
      `${model}: streamed pieces${skip.length ? " (skip special)" : ""} concatenate to detokenize, no half characters (${bad} differ)`);
  }

  // --no-special: added-token spellings are plain text, and still round-trip.
  const withSpecial = corpus.filter((s) => /<\|?[a-z_/]+\|?>|<\/?s>|<unk>/.test(s));
  const ns = runCli("tokenize", ["--model", dir, "--no-special", "--no-add-special"], withSpecial.map((s) => JSON.stringify(s)));
  const nsIds = ns.lines.map((l) => JSON.parse(l));
  const nsDec = runCli("detokenize", ["--model", dir], nsIds).lines.map((l) => JSON.parse(l));
  let nsBad = 0;
  for (let i = 0; i < withSpecial.length; i++) {
    const rt = opts.roundTrip(withSpecial[i], true);
    if (nsIds[i].some(opts.isAdded) || (rt !== null && nsDec[i] !== rt))
      if (++nsBad <= 3) t.diag(`--no-special ${JSON.stringify(withSpecial[i])} -> ${JSON.stringify(nsIds[i])}`);
  }
  t.ok(ns.status === 0 && withSpecial.length > 5 && nsBad === 0,
    `${model}: --no-special never emits added-token ids, text round-trips (${withSpecial.length} strings)`);

  // Bad input: a clear error, a non-zero exit, never a crash.
  const cases = [
    ["tokenize", ['"ok"', '"\xff\xfe"'], /UTF-8/, "raw invalid UTF-8 in a JSON string"],
    ["tokenize", ['"\\ud800"'], /./, "a lone surrogate escape"],
    ["tokenize", ["{not json"], /JSON/, "invalid JSON"],
    ["tokenize", ["[1,2]"], /string/, "a non-string line"],
    ["detokenize", ["[1, 99999999]"], /out of range/, "an out-of-range id"],
    ["detokenize", ["[1.5]"], /integer/, "a non-integer id"],
    ["detokenize", ['"text"'], /array/, "a non-array line"],
  ];
  for (const [sub, input, re, what] of cases) {
    const p = spawnSync(BIN, [sub, "--model", dir], { input: Buffer.from(input.join("\n") + "\n", "latin1") });
    const err = p.stderr.toString();
    t.ok(p.signal === null && p.status === 1 && re.test(err), `${model}: ${sub} rejects ${what} (status ${p.status}, "${err.trim().slice(0, 80)}")`);
  }
}
