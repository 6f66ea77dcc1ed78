#!/usr/bin/env python3
"""Writes the seed corpora of the engine fuzz targets (see engine.cmake) into DIR/tokenizer,
DIR/chat_template and DIR/schema, from the test strings and chat templates in SHARED
(../shared beside the clone) and a few hand-written conversations and JSON schemas, and a
libFuzzer dictionary of JSON-Schema keywords into DIR/schema.dict.
Usage: gen_engine_seeds.py DIR [SHARED]"""
import os
import sys

# fuzz_tokenizer's order; 5..7 are GPT-2's vocabulary under other pre-tokenizers
VOCABS = ["llama-spm", "phi-3", "gpt-2", "qwen2", "llama-bpe", "gpt-2", "gpt-2", "gpt-2"]
F_ADD_SPECIAL, F_PARSE_SPECIAL, F_DETOK_SPECIAL, F_NOT_FIRST, F_IDS = 0x08, 0x10, 0x20, 0x40, 0x80
SEP = b"\n__ggml_vocab_test__\n"

SCHEMAS = [
    (b'{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"},'
     b'"tags":{"type":"array","items":{"type":"string"}}},"required":["name","age"]}',
     b'{"name":"x","age":3,"tags":["a","b"]}'),
    (b'{"properties":{"a":{"type":"integer"},"b":{"type":"boolean"},"c":{"type":"null"}},'
     b'"required":["b"]}', b'{"a":1,"b":true,"c":null}'),
    (b'{"enum":["red","green",1,null,{"a":[1]}]}', b'{"a":[1]}'),
    (b'{"const":"x\\"y"}', b'"x\\"y"'),
    (b'{"type":"number"}', b'-12.5e+3'),
    (b'{"type":"string","minLength":2,"maxLength":3}', b'"\\u00e9\\ud83d\\ude00"'),
    (b'{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":2}', b'[1, 2]'),
    (b'{"anyOf":[{"type":"string"},{"type":"null"},{"type":"array"}]}', b'[{"a":[]}]'),
    (b'{"type":["integer","null","string"]}', b'null'),
    (b'{"$defs":{"t":{"type":"object","properties":{"v":{"type":"integer"},"kids":{"type":'
     b'"array","items":{"$ref":"#/$defs/t"}}},"required":["v"]}},"$ref":"#/$defs/t"}',
     b'{"v":1,"kids":[{"v":2,"kids":[]}]}'),
    (b'{"anyOf":[{"type":"object","properties":{"name":{"const":"get_weather"},"arguments":'
     b'{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}},'
     b'"required":["name","arguments"]},{"type":"object","properties":{"name":{"const":'
     b'"search"},"arguments":{"type":"object","properties":{"q":{"type":"string"}}}},'
     b'"required":["name","arguments"]}]}', b'{"name":"search","arguments":{"q":"x"}}'),
    (b'{"oneOf":[{"type":"integer"},{"type":"boolean"}]}', b'true'),
    (b'{"type":"object","properties":{},"additionalProperties":false}', b'{}'),
    (b'{"definitions":{"n":{"anyOf":[{"type":"null"},{"type":"array","items":{"$ref":'
     b'"#/definitions/n"},"maxItems":3}]}},"$ref":"#/definitions/n"}', b'[[null],[]]'),
    (b'{"type":"object","properties":{"a":{"type":"object","properties":{"b":{"type":"object",'
     b'"properties":{"c":{"type":"string","maxLength":4}},"required":["c"]}},"required":["b"]}},'
     b'"required":["a"]}', b'{"a":{"b":{"c":"abcd"}}}'),
    (b'{"type":"array","items":{"enum":[true,false,"maybe"]},"minItems":3}', b'[true,"maybe",false]'),
    (b'{"type":"string","description":"a title","title":"t"}', b'"\xc3\xa9\xe2\x82\xac"'),
    (b'true', b'{"k":[1,2,{"x":"y"}]}'),
    (b'', b'{"a":{"b":[]}}'),  # the json_object constraint
    (b'{"type":"object","properties":{"id":{"type":"string","pattern":"^a"}}}', b''),
    (b'{"anyOf":[{"type":"integer"},{"type":"string"}],"type":"string"}', b''),
]

DICT = [
    '"type"', '"object"', '"array"', '"string"', '"integer"', '"number"', '"boolean"', '"null"',
    '"properties"', '"required"', '"additionalProperties"', '"items"', '"minItems"',
    '"maxItems"', '"minLength"', '"maxLength"', '"enum"', '"const"', '"anyOf"', '"oneOf"',
    '"$ref"', '"#"', '"#/$defs/', '"#/definitions/', '"$defs"', '"definitions"', '"title"',
    '"description"', '"default"', '"format"', '"pattern"', 'true', 'false', 'null', '4096',
    '4097', '0', '1e300', '-1', '1.5', '{', '}', '[', ']', ':', ',', '"', '\\u', '\\ud83d',
]

CONVERSATIONS = [
    [(b"0", b"You are terse."), (b"1", b"Hi there"), (b"2", b"Hello!"), (b"1", b"  Bye  ")],
    [(b"1", b"What is the weather?"), (b"2", b""), (b"3", b'{"temp": 21}'), (b"3", b"ok\n")],
    [(b"0", b""), (b"1", b"\xc3\xa9t\xc3\xa9 \xf0\x9f\x98\x80"), (b"2", b"\tfine\x1f")],
    [(b"1", b"a")] * 40,
    [(b"0", b"sys"), (b"0", b"sys again"), (b"2", b"first answer"), (b"9", b"bad role")],
]


def write(d, name, data):
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    shared = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared")
    dirs = {k: os.path.join(out, k) for k in ("tokenizer", "chat_template", "schema")}
    for d in dirs.values():
        os.makedirs(d, exist_ok=True)

    # Tokenizer: every test string of each vocabulary, with rotating flags; some id runs.
    flag_sets = [0, F_ADD_SPECIAL, F_PARSE_SPECIAL | F_DETOK_SPECIAL, F_NOT_FIRST,
                 F_ADD_SPECIAL | F_PARSE_SPECIAL]
    for v, name in enumerate(VOCABS):
        with open(os.path.join(shared, "vocab", "ggml-vocab-%s.gguf.inp" % name), "rb") as f:
            cases = f.read().split(SEP)
        for i, case in enumerate(c for c in cases if c):
            write(dirs["tokenizer"], "%d-%s-%03d" % (v, name, i),
                  bytes([v | flag_sets[i % len(flag_sets)]]) + case)
        write(dirs["tokenizer"], "%d-%s-ids" % (v, name),
              bytes([v | F_IDS | F_DETOK_SPECIAL]) + bytes(range(0, 255)))
    chat = b"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n</s>  x<|end|>"
    for v in range(len(VOCABS)):
        write(dirs["tokenizer"], "special-%d" % v, bytes([v | F_PARSE_SPECIAL]) + chat)

    # Chat templates: the real ones (for eng_chat_detect) and some conversations.
    tdir = os.path.join(shared, "tokenizers", "chat-templates")
    for name in sorted(os.listdir(tdir)):
        with open(os.path.join(tdir, name), "rb") as f:
            write(dirs["chat_template"], name, f.read())
    for i, conv in enumerate(CONVERSATIONS):
        body = b"\0".join(role + content for role, content in conv)
        for flags in (0x01, 0x02 | 0x08, 0x05):
            write(dirs["chat_template"], "conv-%d-%x" % (i, flags), bytes([flags]) + body)

    with open(os.path.join(out, "schema.dict"), "w") as f:
        for i, word in enumerate(DICT):
            f.write('k%d="%s"\n' % (i, word.replace("\\", "\\\\").replace('"', '\\"')))

    # Schemas: each with a valid text of it as the drive bytes, and with a few pick bytes.
    for i, (schema, text) in enumerate(SCHEMAS):
        write(dirs["schema"], "schema-%02d-text" % i, schema + b"\0" + text)
        write(dirs["schema"], "schema-%02d-picks" % i, schema + b"\0" + bytes(range(0, 256, 7)))
    # Generated schemas (fuzz_schema's 0x01 mode): choice bytes, NUL, pick bytes.
    for i in range(24):
        choices = bytes((i * 37 + k * 11) % 251 + 2 for k in range(8 + 3 * i))
        write(dirs["schema"], "gen-%02d" % i, b"\x01" + choices + b"\0" + bytes(range(3, 200, 5)))


if __name__ == "__main__":
    main()
