// test_tokenizer_qwen3.mjs — golden test of the C tokenizer against transformers.js
// (@lenml/tokenizers) for the Qwen3 byte-level BPE tokenizer, over >= 2,000 generated strings.
import { goldenSuite, qwenCorpus, reference, tap } from "./tok_corpus.mjs";

const t = tap();
const ref = await reference("qwen3-tokenizer");
// The reference itself must agree with a known Hugging Face vector before it may judge us.
const article = ref.encode("明月几时有，把酒问");
t.ok(JSON.stringify(article) === "[30858,9754,99195,13343,18830,3837,99360,99525,56007]",
  `reference gives the known vector for 明月几时有，把酒问 (${JSON.stringify(article)})`);
const corpus = qwenCorpus(2200);
await goldenSuite(t, "qwen3-tokenizer", corpus, {
  roundTrip: (s) => s.normalize("NFC"),
  isAdded: (id) => id >= 151643,
});
t.done();
