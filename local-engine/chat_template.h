/* Chat templates of the local engine: recognises a model's family from its
 * tokenizer.chat_template text and renders a conversation exactly as that family's Jinja
 * template does (no Jinja interpreter: each family is written out in C and checked against
 * jinja2 by tests/local-engine/chat_template_jinja_test.py). Pure functions; any thread. */
#ifndef WYE_ENGINE_CHAT_TEMPLATE_H
#define WYE_ENGINE_CHAT_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"
#include "common/chat.h"
#include "common/err.h"

enum eng_chat_family {
    ENG_CHAT_CHATML,      /* <|im_start|>role\n...<|im_end|>\n, no default system */
    ENG_CHAT_LLAMA3,      /* Llama-3.1/3.2: system header with "Cutting Knowledge Date" */
    ENG_CHAT_LLAMA2,      /* <s>[INST] <<SYS>>\n..\n<</SYS>>\n\n.. [/INST] .. </s> */
    ENG_CHAT_ZEPHYR,      /* <|user|>\n..</s>\n (Zephyr, TinyLlama-Chat) */
    ENG_CHAT_PHI3,        /* <|system|>/<|user|>/<|assistant|>\n..<|end|>\n (Phi-3.5) */
    ENG_CHAT_GEMMA,       /* <bos><start_of_turn>user\n..<end_of_turn>\n, system folded in */
    ENG_CHAT_QWEN2,       /* ChatML + Qwen2.5's default system prompt and tool turns */
    ENG_CHAT_SMOLLM2,     /* ChatML + SmolLM2's default system prompt */
    ENG_CHAT_LLAMA3_0,    /* Llama-3.0: no system header unless given */
    ENG_CHAT_PHI3_LEGACY, /* first Phi-3 GGUFs: bos, no system, <|assistant|> after user */
    ENG_CHAT__COUNT
};

/* Recognises the family from a tokenizer.chat_template text; *known = false (and ChatML
 * returned) when it is not recognised (the caller logs a warning). tmpl may be NULL. */
enum eng_chat_family eng_chat_detect(const char *tmpl, size_t len, bool *known);
/* "chatml", "llama3", ...; "?" for an out-of-range value. */
const char *eng_chat_family_name(enum eng_chat_family f);
/* Appends the conversation rendered as the family's template would with
 * add_generation_prompt. bos_text is the BOS token's text for templates that emit it
 * literally (Llama-2/3, Gemma, legacy Phi-3); NULL renders nothing there. Conversations the
 * Jinja template would reject (roles not alternating in Llama-2/Gemma, a system message
 * with Gemma-2) are rendered leniently rather than refused. On error (TOOBIG: out's cap,
 * NOMEM, INVAL: a NULL content or unknown role/family) out is left as it was. Llama-3.1+
 * renders "Today Date: 26 Jul 2024", the template's own default. When bos_text was given,
 * tokenize the result with parse_special and without add_special, or BOS comes twice. */
enum wye_err eng_chat_format(enum eng_chat_family f, const struct wye_chat_msg *msgs, size_t n_msgs,
                             bool add_generation_prompt, const char *bos_text, struct wye_buf *out);

#endif
