// llama.cpp side by side with `wye bench`: loads a GGUF file with node-llama-cpp's prebuilt
// CPU build of llama.cpp (no GPU, nothing downloaded or compiled) and measures what `wye bench`
// measures, the same way: prompt processing of -p random token ids in one pass, then -n
// generation steps of one token each, feeding fixed random token ids (never sampled ones, so a
// random-weight model's end-of-generation token cannot stop the run early), with one warm-up
// token first and the sequence cleared before each of -r runs. Prints min/median/max and, with
// --json, the fields of `wye bench --json` (pp_tok_s, tg_tok_s and their min/max).
// Single Node thread; llama.cpp computes on -t threads.
//
// usage: node bench/llamacpp/bench.mjs -m MODEL.gguf [-t 2] [-p 128] [-n 64] [-r 3] [--json]
import { readFileSync } from "node:fs";

process.env.NODE_LLAMA_CPP_SKIP_DOWNLOAD = "true";
const { getLlama, LlamaLogLevel } = await import("node-llama-cpp");

function parseArgs(argv) {
    const o = { model: null, threads: 2, p: 128, n: 64, r: 3, json: false };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const num = () => {
            const v = Number(argv[++i]);
            if (!Number.isInteger(v) || v < 1 || v > 100000) {
                throw new Error(`${a}: expected a positive integer, got ${argv[i]}`);
            }
            return v;
        };
        if (a === "-m") o.model = argv[++i];
        else if (a === "-t") o.threads = num();
        else if (a === "-p") o.p = num();
        else if (a === "-n") o.n = num();
        else if (a === "-r") o.r = num();
        else if (a === "--json") o.json = true;
        else throw new Error(`unknown option ${a}`);
    }
    if (!o.model) throw new Error("usage: bench.mjs -m MODEL.gguf [-t 2] [-p 128] [-n 64] [-r 3] [--json]");
    return o;
}

// The token ids: the same 64-bit LCG as wye bench, kept below 32000 (every shape's vocabulary
// is at least that large), so both engines read the same kind of embedding rows.
function randomTokens(count) {
    const out = [];
    let s = 12345n;
    const mask = (1n << 64n) - 1n;
    for (let i = 0; i < count; i++) {
        s = (s * 6364136223846793005n + 1442695040888963407n) & mask;
        out.push(Number((s >> 33n) % 31998n) + 1);
    }
    return out;
}

function nlcVersion() {
    const url = new URL("./node_modules/node-llama-cpp/package.json", import.meta.url);
    try {
        return JSON.parse(readFileSync(url, "utf8")).version;
    } catch {
        return "unknown";
    }
}

const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const llama = await getLlama({
        gpu: false,
        build: "never",
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        logLevel: LlamaLogLevel.error,
        maxThreads: o.threads,
    });
    const model = await llama.loadModel({ modelPath: o.model, gpuLayers: 0 });
    const ctxSize = Math.max(256, o.p + o.n + 8);
    const context = await model.createContext({
        contextSize: ctxSize,
        batchSize: Math.max(o.p, 1),
        threads: { ideal: o.threads, min: o.threads },
        sequences: 1,
    });
    const seq = context.getSequence();
    const toks = randomTokens(o.p + o.n + 1);
    // One warm-up token pages the weights in (as wye bench does).
    await seq.evaluateWithoutGeneratingNewTokens([toks[0]]);
    const pp = [];
    const tg = [];
    for (let run = 0; run < o.r; run++) {
        await seq.clearHistory();
        const t0 = process.hrtime.bigint();
        await seq.evaluateWithoutGeneratingNewTokens(toks.slice(0, o.p));
        const t1 = process.hrtime.bigint();
        // Each next() evaluates one token and computes the logits of the next; the value given
        // to next() replaces the sampled token, so every step feeds a fixed id.
        const gen = seq.evaluate([toks[o.p]], { temperature: 0, yieldEogToken: true });
        let r = await gen.next();
        for (let j = 1; j < o.n && !r.done; j++) {
            r = await gen.next(toks[o.p + j]);
        }
        const t2 = process.hrtime.bigint();
        await gen.return();
        if (r.done) throw new Error("llama.cpp stopped generating early");
        if (seq.nextTokenIndex < o.p + o.n) {
            throw new Error(`only ${seq.nextTokenIndex} tokens in the sequence, expected ${o.p + o.n}`);
        }
        pp.push(o.p / (Number(t1 - t0) / 1e9));
        tg.push(o.n / (Number(t2 - t1) / 1e9));
    }
    const res = {
        model: o.model,
        engine: `llama.cpp (node-llama-cpp ${nlcVersion()})`,
        threads: o.threads,
        pp_tokens: o.p,
        tg_tokens: o.n,
        runs: o.r,
        pp_tok_s: +median(pp).toFixed(2),
        pp_tok_s_min: +Math.min(...pp).toFixed(2),
        pp_tok_s_max: +Math.max(...pp).toFixed(2),
        tg_tok_s: +median(tg).toFixed(2),
        tg_tok_s_min: +Math.min(...tg).toFixed(2),
        tg_tok_s_max: +Math.max(...tg).toFixed(2),
    };
    if (o.json) {
        console.log(JSON.stringify(res));
    } else {
        console.log(`model ${o.model}, ${res.engine}, ${o.threads} threads, ${o.r} runs`);
        console.log(`prompt processing (${o.p} tokens): ${res.pp_tok_s} tok/s (min ${res.pp_tok_s_min}, max ${res.pp_tok_s_max})`);
        console.log(`generation (${o.n} tokens):        ${res.tg_tok_s} tok/s (min ${res.tg_tok_s_min}, max ${res.tg_tok_s_max})`);
    }
    await context.dispose();
    await model.dispose();
    await llama.dispose();
}

main().catch((e) => {
    console.error(`bench.mjs: ${e.message}`);
    process.exit(1);
});
