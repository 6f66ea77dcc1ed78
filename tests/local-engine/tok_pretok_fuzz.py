#!/usr/bin/env python3
"""Development check (not a CTest: needs the third-party `regex` module): compares the C
pre-tokenizers (via tok_pretok_dump) with the original regexes, run by `regex`, on random
strings drawn from tricky characters. Usage: tok_pretok_fuzz.py path/to/tok_pretok_dump [N]"""
import random
import subprocess
import sys

import regex

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
          r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = LLAMA3.replace(r"\p{N}{1,3}", r"\p{N}")
STAGES = {
    'gpt-2': [GPT2],
    'llama3': [LLAMA3],
    'qwen2': [QWEN2],
    'smollm': [r"\p{N}", GPT2],
    'default': [r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
    'falcon': [r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
}
ALPHABET = (list("aAzZ sStTdDmMlLrReEvV'\"\t\n\r\x0b\x0c.,!?-_$+<=>^~|`0123456789") +
            ["  ", "   ", "\u00a0", "\u3000", "\u2009", "\u0085", "é", "e\u0301", "ß", "Ж",
             "中", "文", "٣", "½", "Ⅻ", "①", "🦙", "😁", "\u200d", "👍🏽", "क्ष", "ก", "ๆ",
             "\U0001F680", "\u2028", "\x1c", "\x1f", "\ufeff", "\u0378", "ǅ", "ʰ", "𝔘"])


def ref_split(stages, s):
    pieces = [s]
    for pat in stages:
        out = []
        for p in pieces:
            pos = 0
            for m in regex.finditer(pat, p):
                if m.start() > pos:
                    out.append(p[pos:m.start()])
                if m.end() > m.start():
                    out.append(m.group())
                pos = m.end()
            if pos < len(p):
                out.append(p[pos:])
        pieces = out
    return [len(x.encode()) for x in pieces]


def main():
    dump = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    rnd = random.Random(1234)
    strings = [''.join(rnd.choice(ALPHABET) for _ in range(rnd.randint(1, int(sys.argv[3]) if len(sys.argv) > 3 else 24))) for _ in range(n)]
    bad = 0
    for pre, stages in STAGES.items():
        data = b'\0'.join(s.encode() for s in strings)
        res = subprocess.run([dump, pre], input=data, capture_output=True, check=True)
        lines = res.stdout.decode().split('\n')
        for s, line in zip(strings, lines):
            got = [int(x) for x in line.split()]
            want = ref_split(stages, s)
            if got != want:
                bad += 1
                if bad < 20:
                    print(pre, repr(s), 'want', want, 'got', got)
    print('mismatches:', bad)
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
