// Development check (not a CTest: it needs npm's tiktoken, a WASM build of OpenAI's Rust BPE):
// wye's byte-level BPE tokenizers against tiktoken on random strings drawn from many scripts
// and from the pre-tokenizers' edge cases (contractions, digit runs, whitespace before
// newlines, marks, emoji, ...). tiktoken is given each vocabulary's ranks and its original
// pre-tokenizer regex: Llama-3 (../shared/tokenizers/llama3.2, ids = ranks), Qwen2
// (../shared/tokenizers/qwen2/qwen.tiktoken) and GPT-2 (tiktoken's own gpt2 table); wye
// tokenizes the same text with the vocab GGUFs in ../shared/vocab (`wye tokenize --no-bos`).
//
//   cd tests/local-engine/tiktoken && npm install
//   node diff.mjs --wye ../../../build/release/wye [--shared ../../../../shared] [--n 1000] [--seed 1]
//   node diff.mjs ... --write ../tokenizer_tiktoken_cases.jsonl   # regenerate the CTest corpus
//
// With --write it only writes the cases (text and the three tokenizers' ids) for
// test_tokenizer_tiktoken; otherwise it runs wye on every case and prints the mismatches.
import fs from "fs";
import path from "path";
import { execFile } from "child_process";
import { promisify } from "util";
import { fileURLToPath } from "url";
import { Tiktoken } from "tiktoken/lite";

const here = path.dirname(fileURLToPath(import.meta.url));
const args = { wye: null, shared: path.resolve(here, "../../../../shared"), n: 1000, seed: 1, write: null };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, ""), v = process.argv[i + 1];
  if (!(k in args) || v === undefined) {
    console.error("usage: node diff.mjs --wye PATH [--shared DIR] [--n N] [--seed S] [--write FILE]");
    process.exit(2);
  }
  args[k] = k === "n" || k === "seed" ? Number(v) : v;
}
if (!args.wye && !args.write) {
  console.error("diff.mjs: --wye PATH (the wye binary) or --write FILE is required");
  process.exit(2);
}

// GPT-2's byte <-> printable-character map, to turn encoder.json's strings back into bytes.
function unicodeToByte() {
  const bs = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = bs.slice();
  for (let b = 0, n = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCodePoint(cs[i]), b]));
}

const LLAMA3 = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const QWEN2 = LLAMA3.replace(String.raw`\p{N}{1,3}`, String.raw`\p{N}`);

function loadTokenizers() {
  const u2b = unicodeToByte();
  const enc = JSON.parse(fs.readFileSync(path.join(args.shared, "tokenizers/llama3.2/encoder.json"), "utf8"));
  const ranks = Object.entries(enc).map(([tok, id]) => {
    const bytes = Array.from(tok, (ch) => {
      const b = u2b.get(ch);
      if (b === undefined) throw new Error(`encoder.json: unexpected character in ${JSON.stringify(tok)}`);
      return b;
    });
    return `${Buffer.from(bytes).toString("base64")} ${id}`;
  });
  const gpt2 = JSON.parse(fs.readFileSync(path.join(here, "node_modules/tiktoken/encoders/gpt2.json"), "utf8"));
  return {
    llama3: { tt: new Tiktoken(ranks.join("\n"), {}, LLAMA3), gguf: "vocab/ggml-vocab-llama-bpe.gguf" },
    qwen2: {
      tt: new Tiktoken(fs.readFileSync(path.join(args.shared, "tokenizers/qwen2/qwen.tiktoken"), "utf8"), {}, QWEN2),
      gguf: "vocab/ggml-vocab-qwen2.gguf",
    },
    gpt2: { tt: new Tiktoken(gpt2.bpe_ranks, {}, gpt2.pat_str), gguf: "vocab/ggml-vocab-gpt-2.gguf" },
  };
}

// Text pieces: scripts, the regexes' edge cases, and whitespace of every kind.
const PIECES = [
  "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", " ", "  ", "    ", "\n",
  "\r\n", "\r", "\t", " \n ", "\n\n\n", " \t\n", "  \n\t  x", "\f", "\v", "\u00a0", "\u2003", "\u3000",
  "\u0085", "\u2028", "\u200b", "'s", "'T", "'re", "'LL", "'d", "'m", "'ve", "\u2019s", "don't", "I'M",
  "!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~", "...", "!!!\n\n", "…—–“”‘’«»", "éèêàçñüöäßÉÅø", "ÀÉÎÕÜ",
  "a\u0300", "\u0301\u0308", "İı", "ǅǈ", "ﬁ", "中文字符测试漢字", "日本語のテキストカタカナ", "한국어텍스트",
  "Здравствуйте мир", "مرحبا بالعالم", "שלום", "ελληνικά", "हिन्दी", "ไทย", "😀🎉👍🏽🇫🇷", "𝔘𝔫𝔦",
  "\u{10FFFF}", "\uFFFD", "１２３４５", "①②③", "½¾", "Ⅻ", "٣٤٥", "12345678901234", " 1 22 333 4444",
  "3.14159", "$1,000.00", "abc123def", "123abc", "http://example.com/a?b=c", "CamelCaseWord",
  "snake_case_id", "x=y+z;", "<html><body>", '{"k": [1, 2]}',
];

function cases() {
  let seed = args.seed >>> 0 || 1;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 4294967296);
  const pick = (a) => a[Math.floor(rnd() * a.length)];
  const piece = (p) => {
    const cps = Array.from(p);
    let s = "";
    for (let i = 1 + Math.floor(rnd() * 4); i > 0; i--) s += cps.length > 6 && rnd() < 0.7 ? pick(cps) : p;
    return s;
  };
  const out = [];
  for (let i = 0; i < args.n; i++) {
    let s = "";
    for (let k = 1 + Math.floor(rnd() * 8); k > 0; k--) s += piece(pick(PIECES));
    out.push(s);
  }
  return out;
}

const toks = loadTokenizers();
const texts = cases();
const expected = texts.map((s) => {
  const e = { s };
  for (const [name, t] of Object.entries(toks)) e[name] = Array.from(t.tt.encode_ordinary(s));
  return e;
});
if (args.write) {
  fs.writeFileSync(args.write, expected.map((e) => JSON.stringify(e)).join("\n") + "\n");
  console.log(`wrote ${expected.length} cases to ${args.write}`);
  process.exit(0);
}

const run = promisify(execFile);
const jobs = expected.flatMap((e) => Object.keys(toks).map((name) => [e, name]));
const bad = Object.fromEntries(Object.keys(toks).map((k) => [k, 0]));
let next = 0, shown = 0;
async function worker() {
  while (next < jobs.length) {
    const [e, name] = jobs[next++];
    const gguf = path.join(args.shared, toks[name].gguf);
    const { stdout } = await run(args.wye, ["tokenize", "-m", gguf, "--no-bos", e.s], { maxBuffer: 1 << 24 });
    if (stdout.trim() !== JSON.stringify(e[name]).replaceAll(",", ", ")) {
      bad[name]++;
      if (shown++ < 10) console.log(`${name} ${JSON.stringify(e.s)}\n  tiktoken ${JSON.stringify(e[name])}\n  wye      ${stdout.trim()}`);
    }
  }
}
await Promise.all([worker(), worker(), worker()]);
console.log(`${expected.length} strings; mismatches:`, bad);
process.exit(Object.values(bad).some((v) => v > 0) ? 1 : 0);
