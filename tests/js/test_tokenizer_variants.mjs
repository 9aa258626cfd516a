// test_tokenizer_variants.mjs — the golden suite on modified copies of stories260K's
// tokenizer.json, for components the two shipped tokenizers do not use: the older Metaspace
// pre-tokenizer / decoder form of Llama tokenizers, and added tokens with lstrip / rstrip.
import { goldenSuite, noRoundTrip, storiesCorpus, tap, variant } from "./tok_corpus.mjs";

const t = tap();
const plainAscii = (s) => (/^[\x20-\x7e\n\t]*$/.test(s) && !/<\/?s>|<unk>|▁|<mask>|\[X\]/.test(s) ? s : null);

// Metaspace: Prepend + Replace as a pre-tokenizer (split=false: transformers.js does not
// split, and Llama files that use this form set it so), decoded by the Metaspace decoder.
const meta = { type: "Metaspace", replacement: "▁", add_prefix_space: true, prepend_scheme: "first", split: false };
const metaDir = variant("stories260K", "tok-variant-metaspace", (j) => {
  j.normalizer = null;
  j.pre_tokenizer = meta;
  j.decoder = { type: "Sequence", decoders: [{ type: "ByteFallback" }, { ...meta }, { type: "Fuse" }] };
});
await goldenSuite(t, metaDir, storiesCorpus(300, 3), {
  // a leading space becomes the prepended "▁", which the decoder strips: as in HF
  roundTrip: (s, plain) => (plain || /^\s/.test(s) ? null : plainAscii(s)),
  isAdded: (id) => id <= 2,
});

// Added tokens that swallow the whitespace to their left (<mask>) or right ([X]).
const stripDir = variant("stories260K", "tok-variant-strip", (j) => {
  const tok = (id, content, lstrip, rstrip) => ({ id, content, single_word: false, lstrip, rstrip, normalized: false, special: true });
  j.added_tokens.push(tok(512, "<mask>", true, false), tok(513, "[X]", false, true));
});
const words = ["a <mask> b", "a   <mask>", "<mask>  x", "x [X]   y", "[X]\n\nz", "p\t<mask>\t[X]\tq", "  [X]  <mask>  "];
const corpus = storiesCorpus(200, 4).map((s, i) => s + " " + words[i % words.length] + (i % 3 ? "" : " " + s));
await goldenSuite(t, stripDir, corpus, {
  roundTrip: noRoundTrip, // stripped whitespace is gone by design
  isAdded: (id) => id <= 2 || id >= 512,
});
t.done();
