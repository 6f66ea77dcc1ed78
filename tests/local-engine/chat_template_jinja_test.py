#!/usr/bin/python3
"""CTest: renders conversations with jinja2 (Debian's python3-jinja2, set up as transformers
does: sandboxed, trim_blocks, lstrip_blocks, raise_exception, its tojson) using the real
templates in ../shared/tokenizers/chat-templates and, for the other families, each model's
published template written out below; compares byte for byte with eng_chat_format's output
from chat_template_dump. Prints both strings on a difference.
Usage: chat_template_jinja_test.py path/to/chat_template_dump path/to/chat-templates"""
import json
import os
import subprocess
import sys

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Published templates (text-only parts), as in each model's tokenizer_config.json / GGUF.
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}"
          "{{ '<|im_start|>assistant\\n' }}{% endif %}")
SMOLLM2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
           "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
           "Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
           "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
           "{{ '<|im_start|>assistant\n' }}{% endif %}")
LLAMA2 = ("{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
          "{% set system_message = messages[0]['content'] %}{% else %}"
          "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
          "{% for message in loop_messages %}{% if (message['role'] == 'user') != "
          "(loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
          "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and "
          "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
          "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = "
          "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
          "'[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
          "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""
PHI3 = ("{% for message in messages %}{% if message['role'] == 'system' and message['content'] %}"
        "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}"
        "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == "
        "'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}"
        "{{ eos_token }}{% endif %}")
PHI3_LEGACY = ("{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') %}"
               "{{'<|user|>' + '\n' + message['content'] + '<|end|>' + '\n' + '<|assistant|>' + "
               "'\n'}}{% elif (message['role'] == 'assistant') %}{{message['content'] + "
               "'<|end|>' + '\n'}}{% endif %}{% endfor %}")
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- endif -%}
    {{ '<end_of_turn>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\\n'}}
{%- endif -%}
"""
LLAMA3_0 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
            "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ "
            "message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = "
            "bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt "
            "%}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

S = {'role': 'system', 'content': 'You are a terse assistant.'}
U1 = {'role': 'user', 'content': 'Hello!'}
A1 = {'role': 'assistant', 'content': 'Hi, how can I help?'}
U2 = {'role': 'user', 'content': 'What is 2+2?'}
UWS = {'role': 'user', 'content': '  \n Spaces around\tand "quotes" \n\n'}
AWS = {'role': 'assistant', 'content': '\t4, of course.  \n'}
SWS = {'role': 'system', 'content': '\n  Be brief; use <b>bold</b> & \'quotes\'.  \u3000'}
UNI = {'role': 'user', 'content': 'Héllo wörld 🦙 日本語 \u2028 end'}
EMPTY = {'role': 'user', 'content': ''}
T1 = {'role': 'tool', 'content': '{"temp": 21, "unit": "C", "note": "<ok> & \'fine\'\n\u00e9 🦙"}'}
T2 = {'role': 'tool', 'content': 'second\tresult \\ "q"'}
S2 = {'role': 'system', 'content': 'A later system note.'}

ALTERNATING = [
    [U1], [S, U1], [S, U1, A1, U2], [U1, A1, U2], [UWS, AWS, UNI], [SWS, UWS],
    [S, U1, A1], [EMPTY], [SWS, UNI, AWS, U2],
]
GENERAL = ALTERNATING + [
    [U1, A1, T1, T2, U2], [S, U1, T1], [U1, S2, U2], [T1], [S, U1, A1, T2, A1],
]


def env():
    e = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(msg):
        raise TemplateError(msg)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    e.globals['raise_exception'] = raise_exception
    e.filters['tojson'] = tojson
    return e


def main():
    dump, tdir = sys.argv[1], sys.argv[2]

    def real(name):
        with open(os.path.join(tdir, name), encoding='utf-8') as f:
            return f.read()

    # (family, template text, bos, eos, conversations)
    cases = [
        ('qwen2', real('Qwen-Qwen2.5-7B-Instruct.jinja'), None, '<|im_end|>', GENERAL),
        ('llama3', real('meta-llama-Llama-3.1-8B-Instruct.jinja'), '<|begin_of_text|>',
         '<|eot_id|>', GENERAL),
        ('llama3', real('meta-llama-Llama-3.2-3B-Instruct.jinja'), '<|begin_of_text|>',
         '<|eot_id|>', GENERAL),
        ('chatml', CHATML, None, '<|im_end|>', GENERAL),
        ('smollm2', SMOLLM2, None, '<|im_end|>', GENERAL),
        ('llama3.0', LLAMA3_0, '<|begin_of_text|>', '<|eot_id|>', GENERAL),
        ('llama2', LLAMA2, '<s>', '</s>', ALTERNATING),
        ('zephyr', ZEPHYR, '<s>', '</s>', ALTERNATING),
        ('phi3', PHI3, '<s>', '<|endoftext|>', ALTERNATING + [[{'role': 'system', 'content': ''}, U1]]),
        ('phi3-legacy', PHI3_LEGACY, '<s>', '<|endoftext|>', ALTERNATING),
        ('gemma', GEMMA, '<bos>', '<eos>', ALTERNATING),
    ]
    e = env()
    n = bad = 0
    for family, text, bos, eos, convs in cases:
        tmpl = e.from_string(text)
        for conv in convs:
            for gen in (True, False):
                want = tmpl.render(messages=conv, add_generation_prompt=gen,
                                   bos_token=bos or '', eos_token=eos)
                req = {'family': family, 'bos': bos, 'add_generation_prompt': gen,
                       'messages': conv}
                res = subprocess.run([dump], input=json.dumps(req).encode(), capture_output=True,
                                     timeout=30)
                n += 1
                got = res.stdout.decode('utf-8', 'replace')
                if res.returncode != 0 or got != want:
                    bad += 1
                    print('MISMATCH %s gen=%s conv=%s' % (family, gen, json.dumps(conv)))
                    print('  jinja2: %r' % want)
                    print('  ours:   %r %s' % (got, res.stderr.decode()))
    # Detection on the real templates.
    for name, fam in (('Qwen-Qwen2.5-7B-Instruct.jinja', 'qwen2 1'),
                      ('meta-llama-Llama-3.1-8B-Instruct.jinja', 'llama3 1'),
                      ('meta-llama-Llama-3.2-3B-Instruct.jinja', 'llama3 1')):
        res = subprocess.run([dump], input=json.dumps({'detect': real(name)}).encode(),
                             capture_output=True, timeout=30)
        n += 1
        if res.stdout.decode().strip() != fam:
            bad += 1
            print('DETECT %s: want %r got %r' % (name, fam, res.stdout.decode()))
    print('%d comparisons, %d mismatches' % (n, bad))
    return 1 if bad or n < 100 else 0


if __name__ == '__main__':
    sys.exit(main())
