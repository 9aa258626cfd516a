// test_tokenizer_stories.mjs — golden test of the C tokenizer against transformers.js
// (@lenml/tokenizers) for stories260K's Llama-style tokenizer (Prepend/Replace normalizer,
// byte-fallback BPE, TemplateProcessing BOS), over >= 400 generated strings.
import { goldenSuite, reference, storiesCorpus, tap } from "./tok_corpus.mjs";

const t = tap();
const ref = await reference("stories260K");
const once = ref.encode("Once upon a time");
t.ok(once[0] === 1 && once.length === 5, `reference puts BOS first (${JSON.stringify(once)})`);
const corpus = storiesCorpus(450);
await goldenSuite(t, "stories260K", corpus, {
  // "▁" decodes to a space, and the Prepend normalizer adds "▁" after every added token (as
  // Hugging Face does), so texts with either cannot round-trip; all others must.
  roundTrip: (s, plain) => (s.includes("▁") || (!plain && /<\/?s>|<unk>/.test(s)) ? null : s),
  isAdded: (id) => id <= 2, // <unk>, <s>, </s>
});
t.done();
