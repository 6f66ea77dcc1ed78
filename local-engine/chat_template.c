/* Chat template families (see chat_template.h): detection by distinctive template text and
 * one C renderer per family reproducing its Jinja template's output byte for byte, including
 * the templates' defaults (Qwen2.5's and SmolLM2's default system prompts, Llama-3.1's
 * knowledge/date header, Python's str.strip for "| trim"/".strip()", and jinja2's tojson for
 * Llama-3 tool results). Pure functions; any thread. */
#include <string.h>

#include "local-engine/chat_template.h"
#include "local-engine/unicode.h"

#define QWEN_SYSTEM "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
#define SMOLLM_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
#define LLAMA3_DATE "26 Jul 2024"

static bool contains(const char *s, size_t n, const char *needle)
{
    return memmem(s, n, needle, strlen(needle)) != NULL;
}

enum eng_chat_family eng_chat_detect(const char *tmpl, size_t len, bool *known)
{
    *known = true;
    if (tmpl == NULL) {
        *known = false;
        return ENG_CHAT_CHATML;
    }
    if (contains(tmpl, len, "<|im_start|>")) {
        /* Only Qwen2/2.5 inject their default system prompt (Qwen3 has the same tool
         * markup but no default), so key on the prompt itself. */
        if (contains(tmpl, len, "You are Qwen")) {
            return ENG_CHAT_QWEN2;
        }
        if (contains(tmpl, len, "SmolLM")) {
            return ENG_CHAT_SMOLLM2;
        }
        /* Phi-4 separates role and content with <|im_sep|>: not ChatML. */
        *known = !contains(tmpl, len, "<|im_sep|>");
        return ENG_CHAT_CHATML;
    }
    if (contains(tmpl, len, "<|start_header_id|>")) {
        return contains(tmpl, len, "Cutting Knowledge Date") ? ENG_CHAT_LLAMA3 : ENG_CHAT_LLAMA3_0;
    }
    if (contains(tmpl, len, "<start_of_turn>")) {
        return ENG_CHAT_GEMMA;
    }
    if (contains(tmpl, len, "<|user|>")) {
        if (contains(tmpl, len, "<|end|>")) {
            return contains(tmpl, len, "<|system|>") ? ENG_CHAT_PHI3 : ENG_CHAT_PHI3_LEGACY;
        }
        return ENG_CHAT_ZEPHYR;
    }
    if (contains(tmpl, len, "[INST]")) {
        return ENG_CHAT_LLAMA2;
    }
    *known = false;
    return ENG_CHAT_CHATML;
}

const char *eng_chat_family_name(enum eng_chat_family f)
{
    static const char *const names[ENG_CHAT__COUNT] = {
        [ENG_CHAT_CHATML] = "chatml",     [ENG_CHAT_LLAMA3] = "llama3",
        [ENG_CHAT_LLAMA2] = "llama2",     [ENG_CHAT_ZEPHYR] = "zephyr",
        [ENG_CHAT_PHI3] = "phi3",         [ENG_CHAT_GEMMA] = "gemma",
        [ENG_CHAT_QWEN2] = "qwen2",       [ENG_CHAT_SMOLLM2] = "smollm2",
        [ENG_CHAT_LLAMA3_0] = "llama3.0", [ENG_CHAT_PHI3_LEGACY] = "phi3-legacy",
    };
    return (unsigned)f < ENG_CHAT__COUNT ? names[f] : "?";
}

/* ---- helpers ---- */

struct w {
    struct wye_buf *b;
    enum wye_err err; /* the first error; later appends are skipped */
};

static void put(struct w *w, const char *s, size_t n)
{
    if (w->err == WYE_OK && n > 0) {
        w->err = wye_buf_append(w->b, s, n);
    }
}

static void puts_(struct w *w, const char *s)
{
    if (s != NULL) {
        put(w, s, strlen(s));
    }
}

/* Python's str.isspace(), which str.strip() and Jinja's trim use. */
static bool py_space(uint32_t cp)
{
    return eng_uc_is_space(cp) || (cp >= 0x1C && cp <= 0x1F);
}

/* The length of s[0..n) without its trailing whitespace (Python str.rstrip()). */
static size_t rstrip_len(const char *s, size_t n)
{
    size_t e = 0, i = 0;
    while (i < n) {
        uint32_t cp;
        size_t l = eng_utf8_decode(s + i, n - i, &cp);
        i += l;
        if (cp == ENG_UC_INVALID || !py_space(cp)) {
            e = i;
        }
    }
    return e;
}

/* Appends s with leading and trailing whitespace removed (Python str.strip()). */
static void put_strip(struct w *w, const char *s)
{
    size_t n = strlen(s), a = 0;
    while (a < n) {
        uint32_t cp;
        size_t l = eng_utf8_decode(s + a, n - a, &cp);
        if (cp == ENG_UC_INVALID || !py_space(cp)) {
            break;
        }
        a += l;
    }
    put(w, s + a, rstrip_len(s + a, n - a));
}

/* Appends s as the tojson filter of transformers' chat templates renders a string
 * (json.dumps with ensure_ascii=False: only ", \\ and control characters are escaped; the
 * same as llama.cpp's template engine). Invalid UTF-8 bytes become U+FFFD. */
static void put_tojson(struct w *w, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    size_t n = strlen(s);
    put(w, "\"", 1);
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t l = eng_utf8_decode(s + i, n - i, &cp);
        const char *p = s + i;
        i += l;
        switch (cp) {
        case '"':
            put(w, "\\\"", 2);
            continue;
        case '\\':
            put(w, "\\\\", 2);
            continue;
        case '\n':
            put(w, "\\n", 2);
            continue;
        case '\r':
            put(w, "\\r", 2);
            continue;
        case '\t':
            put(w, "\\t", 2);
            continue;
        case '\b':
            put(w, "\\b", 2);
            continue;
        case '\f':
            put(w, "\\f", 2);
            continue;
        case ENG_UC_INVALID:
            put(w, "\xef\xbf\xbd", 3);
            continue;
        default:
            break;
        }
        if (cp < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[cp >> 4], hex[cp & 15]};
            put(w, e, 6);
        } else {
            put(w, p, l);
        }
    }
    put(w, "\"", 1);
}

static const char *role_name(enum wye_role r)
{
    return wye_role_name(r);
}

/* ---- families ---- */

/* Generic ChatML, and SmolLM2's (a default system turn when the first is not system). */
static void fmt_chatml(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen,
                       const char *default_system)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0 && default_system != NULL && m[0].role != WYE_ROLE_SYSTEM) {
            puts_(w, "<|im_start|>system\n");
            puts_(w, default_system);
            puts_(w, "<|im_end|>\n");
        }
        puts_(w, "<|im_start|>");
        puts_(w, role_name(m[i].role));
        puts_(w, "\n");
        puts_(w, m[i].content);
        puts_(w, "<|im_end|>\n");
    }
    if (gen) {
        puts_(w, "<|im_start|>assistant\n");
    }
}

/* Qwen2.5-Instruct without tools: a system turn always (the default one if the first message
 * is not system); consecutive tool results are grouped in one user turn. */
static void fmt_qwen2(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen)
{
    puts_(w, "<|im_start|>system\n");
    puts_(w, n > 0 && m[0].role == WYE_ROLE_SYSTEM ? m[0].content : QWEN_SYSTEM);
    puts_(w, "<|im_end|>\n");
    for (size_t i = 0; i < n; i++) {
        enum wye_role r = m[i].role;
        if (r == WYE_ROLE_SYSTEM && i == 0) {
            continue;
        }
        if (r != WYE_ROLE_TOOL) {
            puts_(w, "<|im_start|>");
            puts_(w, role_name(r));
            puts_(w, "\n");
            puts_(w, m[i].content);
            puts_(w, "<|im_end|>\n");
            continue;
        }
        if (i == 0 || m[i - 1].role != WYE_ROLE_TOOL) {
            puts_(w, "<|im_start|>user");
        }
        puts_(w, "\n<tool_response>\n");
        puts_(w, m[i].content);
        puts_(w, "\n</tool_response>");
        if (i + 1 == n || m[i + 1].role != WYE_ROLE_TOOL) {
            puts_(w, "<|im_end|>\n");
        }
    }
    if (gen) {
        puts_(w, "<|im_start|>assistant\n");
    }
}

/* Llama-3.1/3.2-Instruct without tools. */
static void fmt_llama3(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen,
                       const char *bos)
{
    puts_(w, bos);
    size_t i = 0;
    puts_(w, "<|start_header_id|>system<|end_header_id|>\n\n");
    puts_(w, "Cutting Knowledge Date: December 2023\nToday Date: " LLAMA3_DATE "\n\n");
    if (n > 0 && m[0].role == WYE_ROLE_SYSTEM) {
        put_strip(w, m[0].content);
        i = 1;
    }
    puts_(w, "<|eot_id|>");
    for (; i < n; i++) {
        if (m[i].role == WYE_ROLE_TOOL) {
            /* The template runs tojson on the content: a string is "iterable" in Jinja. */
            puts_(w, "<|start_header_id|>ipython<|end_header_id|>\n\n");
            put_tojson(w, m[i].content);
        } else {
            puts_(w, "<|start_header_id|>");
            puts_(w, role_name(m[i].role));
            puts_(w, "<|end_header_id|>\n\n");
            put_strip(w, m[i].content);
        }
        puts_(w, "<|eot_id|>");
    }
    if (gen) {
        puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
}

/* Llama-3.0-Instruct: bos before the first turn, no system header of its own. */
static void fmt_llama3_0(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen,
                         const char *bos)
{
    for (size_t i = 0; i < n; i++) {
        if (i == 0) {
            puts_(w, bos);
        }
        puts_(w, "<|start_header_id|>");
        puts_(w, role_name(m[i].role));
        puts_(w, "<|end_header_id|>\n\n");
        put_strip(w, m[i].content);
        puts_(w, "<|eot_id|>");
    }
    if (gen) {
        puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    }
}

/* Appends the strip() of the first turn's content with the system text folded in:
 * '<<SYS>>\n' + sys + '\n<</SYS>>\n\n' + content. Written piece by piece: that text starts
 * with '<', so only the end is stripped, and only content's end, or the "\n\n" too when
 * content is all whitespace ('>' stops it there). */
static void put_llama2_sys(struct w *w, const char *sys, const char *content)
{
    puts_(w, "<<SYS>>\n");
    puts_(w, sys);
    puts_(w, "\n<</SYS>>");
    size_t n = rstrip_len(content, strlen(content));
    if (n > 0) {
        puts_(w, "\n\n");
        put(w, content, n);
    }
}

/* Llama-2-chat: the system text wraps into the first turn; each user turn is
 * "<s>[INST] ... [/INST]", each answer " ... </s>". Other roles render nothing. */
static void fmt_llama2(struct w *w, const struct wye_chat_msg *m, size_t n, const char *bos)
{
    size_t i = 0;
    const char *sys = NULL;
    if (n > 0 && m[0].role == WYE_ROLE_SYSTEM) {
        sys = m[0].content;
        i = 1;
    }
    for (size_t k = 0; i < n; i++, k++) {
        bool with_sys = k == 0 && sys != NULL;
        if (m[i].role == WYE_ROLE_USER) {
            puts_(w, bos);
            puts_(w, "[INST] ");
        } else if (m[i].role == WYE_ROLE_ASSISTANT) {
            puts_(w, " ");
        } else {
            continue;
        }
        if (with_sys) {
            put_llama2_sys(w, sys, m[i].content);
        } else {
            put_strip(w, m[i].content);
        }
        puts_(w, m[i].role == WYE_ROLE_USER ? " [/INST]" : " </s>");
    }
}

/* Zephyr / TinyLlama-Chat (rendered with trim_blocks as transformers does). */
static void fmt_zephyr(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].role != WYE_ROLE_TOOL) {
            puts_(w, "<|");
            puts_(w, role_name(m[i].role));
            puts_(w, "|>\n");
            puts_(w, m[i].content);
            puts_(w, "</s>\n");
        }
        if (i + 1 == n && gen) {
            puts_(w, "<|assistant|>\n");
        }
    }
}

/* Phi-3.5-mini / updated Phi-3-mini: <|role|>\n...<|end|>\n; eos when not prompting. */
static void fmt_phi3(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen)
{
    for (size_t i = 0; i < n; i++) {
        if (m[i].role == WYE_ROLE_TOOL ||
            (m[i].role == WYE_ROLE_SYSTEM && m[i].content[0] == '\0')) {
            continue; /* the template skips tool turns and empty system messages */
        }
        puts_(w, "<|");
        puts_(w, role_name(m[i].role));
        puts_(w, "|>\n");
        puts_(w, m[i].content);
        puts_(w, "<|end|>\n");
    }
    puts_(w, gen ? "<|assistant|>\n" : "<|endoftext|>");
}

/* The first Phi-3-mini GGUFs: bos, user turns followed by the assistant header, no system. */
static void fmt_phi3_legacy(struct w *w, const struct wye_chat_msg *m, size_t n, const char *bos)
{
    puts_(w, bos);
    for (size_t i = 0; i < n; i++) {
        if (m[i].role == WYE_ROLE_USER) {
            puts_(w, "<|user|>\n");
            puts_(w, m[i].content);
            puts_(w, "<|end|>\n<|assistant|>\n");
        } else if (m[i].role == WYE_ROLE_ASSISTANT) {
            puts_(w, m[i].content);
            puts_(w, "<|end|>\n");
        }
    }
}

/* Gemma-2/3-it: assistant is "model"; a system message becomes the first turn's prefix. */
static void fmt_gemma(struct w *w, const struct wye_chat_msg *m, size_t n, bool gen,
                      const char *bos)
{
    puts_(w, bos);
    size_t i = 0;
    const char *prefix = NULL;
    if (n > 0 && m[0].role == WYE_ROLE_SYSTEM) {
        prefix = m[0].content;
        i = 1;
    }
    for (size_t k = 0; i < n; i++, k++) {
        puts_(w, "<start_of_turn>");
        puts_(w, m[i].role == WYE_ROLE_ASSISTANT ? "model" : role_name(m[i].role));
        puts_(w, "\n");
        if (k == 0 && prefix != NULL) {
            puts_(w, prefix);
            puts_(w, "\n\n");
        }
        put_strip(w, m[i].content);
        puts_(w, "<end_of_turn>\n");
    }
    if (gen) {
        puts_(w, "<start_of_turn>model\n");
    }
}

enum wye_err eng_chat_format(enum eng_chat_family f, const struct wye_chat_msg *msgs, size_t n_msgs,
                             bool add_generation_prompt, const char *bos_text, struct wye_buf *out)
{
    struct w w = {out, WYE_OK};
    size_t start = out->len;
    const char *bos = bos_text != NULL ? bos_text : "";
    for (size_t i = 0; i < n_msgs; i++) {
        if (msgs[i].content == NULL || (unsigned)msgs[i].role > WYE_ROLE_TOOL) {
            return WYE_ERR_INVAL;
        }
    }
    bool gen = add_generation_prompt;
    switch (f) {
    case ENG_CHAT_CHATML:
        fmt_chatml(&w, msgs, n_msgs, gen, NULL);
        break;
    case ENG_CHAT_SMOLLM2:
        fmt_chatml(&w, msgs, n_msgs, gen, SMOLLM_SYSTEM);
        break;
    case ENG_CHAT_QWEN2:
        fmt_qwen2(&w, msgs, n_msgs, gen);
        break;
    case ENG_CHAT_LLAMA3:
        fmt_llama3(&w, msgs, n_msgs, gen, bos);
        break;
    case ENG_CHAT_LLAMA3_0:
        fmt_llama3_0(&w, msgs, n_msgs, gen, bos);
        break;
    case ENG_CHAT_LLAMA2:
        fmt_llama2(&w, msgs, n_msgs, bos);
        break;
    case ENG_CHAT_ZEPHYR:
        fmt_zephyr(&w, msgs, n_msgs, gen);
        break;
    case ENG_CHAT_PHI3:
        fmt_phi3(&w, msgs, n_msgs, gen);
        break;
    case ENG_CHAT_PHI3_LEGACY:
        fmt_phi3_legacy(&w, msgs, n_msgs, bos);
        break;
    case ENG_CHAT_GEMMA:
        fmt_gemma(&w, msgs, n_msgs, gen, bos);
        break;
    default:
        return WYE_ERR_INVAL;
    }
    if (w.err) {
        out->len = start;
        if (out->data != NULL) {
            out->data[start] = '\0';
        }
    }
    return w.err;
}
