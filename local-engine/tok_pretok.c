/* Pre-tokenizers of the byte-level BPE vocabularies: hand-written matchers equivalent to the
 * regex pipelines that tokenizer.ggml.pre names in llama.cpp (GPT-2, Llama-3, Qwen2, and the
 * multi-stage "default", Falcon and SmolLM/StarCoder ones), over Unicode classes from
 * unicode_tables.c. Each matcher tries the regex's alternatives in order at the current
 * position, as a backtracking regex engine would, and emits the first that matches; later
 * stages split each emitted piece further. tests/local-engine/tok_pretok_fuzz.py checks them
 * against the original regexes. Pure functions; any thread. */
#include <string.h>

#include "local-engine/tok_internal.h"
#include "local-engine/unicode.h"

#define CP_END 0xFFFFFFFEu /* past the end of the segment: matches nothing */

/* Later regex stages that llama.cpp applies to every piece of the earlier ones. */
enum refine {
    REFINE_NONE,
    REFINE_DEFAULT, /* \p{N}+ then [0-9][0-9][0-9] */
    REFINE_TRIPLES  /* [0-9][0-9][0-9] */
};

struct seg {
    const uint32_t *cp;
    size_t end;   /* exclusive; lookahead stops here */
    size_t *ends; /* output: piece ends (code point indices) */
    size_t k;     /* pieces so far */
    size_t last;  /* end of the last piece */
    enum refine refine;
};

static inline uint32_t at(const struct seg *s, size_t i)
{
    return i < s->end ? s->cp[i] : CP_END;
}

static bool is_letter(uint32_t c)
{
    if (c < 0x80) {
        return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    }
    return c != CP_END && eng_uc_class(c) == ENG_UC_LETTER;
}

static bool is_number(uint32_t c)
{
    if (c < 0x80) {
        return c >= '0' && c <= '9';
    }
    return c != CP_END && eng_uc_class(c) == ENG_UC_NUMBER;
}

static bool is_space(uint32_t c)
{
    return c != CP_END && c != ENG_UC_INVALID && eng_uc_is_space(c);
}

/* [^\s\p{L}\p{N}]: any character (including unassigned and invalid bytes) but those. */
static bool is_other(uint32_t c)
{
    return c != CP_END && !is_space(c) && !is_letter(c) && !is_number(c);
}

static bool is_crlf(uint32_t c)
{
    return c == '\r' || c == '\n';
}

static bool is_ascii_digit(uint32_t c)
{
    return c >= '0' && c <= '9';
}

static void push_end(struct seg *s, size_t end)
{
    if (end > s->last) {
        s->ends[s->k++] = end;
        s->last = end;
    }
}

/* [0-9][0-9][0-9] over [a, b): each leftmost run of three ASCII digits is a piece, and so is
 * each stretch between them. */
static void emit_triples(struct seg *s, size_t a, size_t b)
{
    size_t i = a;
    while (i + 3 <= b) {
        if (is_ascii_digit(s->cp[i]) && is_ascii_digit(s->cp[i + 1]) &&
            is_ascii_digit(s->cp[i + 2])) {
            push_end(s, i);
            push_end(s, i + 3);
            i += 3;
        } else {
            i++;
        }
    }
    push_end(s, b);
}

/* Emits the piece that ends at end, split further by the refinement stages. */
static void emit(struct seg *s, size_t end)
{
    size_t a = s->last;
    if (s->refine == REFINE_NONE) {
        push_end(s, end);
    } else if (s->refine == REFINE_TRIPLES) {
        emit_triples(s, a, end);
    } else {
        /* \p{N}+ runs become pieces (then split in triples); the rest stays as it is. */
        size_t i = a;
        while (i < end) {
            size_t j = i;
            bool num = is_number(s->cp[i]);
            while (j < end && is_number(s->cp[j]) == num) {
                j++;
            }
            if (num) {
                emit_triples(s, i, j);
            } else {
                push_end(s, j);
            }
            i = j;
        }
    }
}

static uint32_t ascii_lower(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

/* Length of a contraction ('s 't 're 've 'm 'll 'd) at i, or 0. */
static size_t contraction(const struct seg *s, size_t i, bool icase)
{
    if (at(s, i) != '\'') {
        return 0;
    }
    uint32_t a = at(s, i + 1), b = at(s, i + 2);
    if (icase) {
        a = ascii_lower(a);
        b = ascii_lower(b);
    }
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return 2;
    }
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
        return 3;
    }
    return 0;
}

/* \s+(?!\S)|\s+ at i (is_space(at(i)) holds): the run minus its last character when a
 * non-space follows and the run is longer than one; otherwise the whole run. */
static size_t space_run(const struct seg *s, size_t i)
{
    size_t n = 0;
    while (is_space(at(s, i + n))) {
        n++;
    }
    if (n > 1 && i + n < s->end) {
        return n - 1;
    }
    return n;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static void split_gpt2(struct seg *s, size_t i)
{
    while (i < s->end) {
        size_t n = contraction(s, i, false);
        if (n == 0) {
            size_t sp = at(s, i) == ' ' ? 1 : 0;
            uint32_t c = at(s, i + sp);
            bool (*cls)(uint32_t) = is_letter(c)   ? is_letter
                                    : is_number(c) ? is_number
                                    : is_other(c)  ? is_other
                                                   : NULL;
            if (cls) {
                n = sp;
                while (cls(at(s, i + n))) {
                    n++;
                }
            } else if (is_space(at(s, i))) {
                n = space_run(s, i);
            } else {
                n = 1; /* unreachable: every character is one of the above */
            }
        }
        i += n;
        emit(s, i);
    }
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,D}| ?[^\s\p{L}\p{N}]+[\r\n]*|
 * \s*[\r\n]+|\s+(?!\S)|\s+  with D = digits_max (3 for Llama-3, 1 for Qwen2). */
static void split_llama3(struct seg *s, size_t i, size_t digits_max)
{
    while (i < s->end) {
        uint32_t c = at(s, i);
        size_t n = contraction(s, i, true);
        if (n > 0) {
            goto emit;
        }
        if (!is_crlf(c) && !is_number(c) && (is_letter(c) || is_letter(at(s, i + 1)))) {
            n = 1;
            while (is_letter(at(s, i + n))) {
                n++;
            }
            goto emit;
        }
        if (is_number(c)) {
            n = 1;
            while (n < digits_max && is_number(at(s, i + n))) {
                n++;
            }
            goto emit;
        }
        {
            size_t sp = c == ' ' ? 1 : 0;
            if (is_other(at(s, i + sp))) {
                n = sp;
                while (is_other(at(s, i + n))) {
                    n++;
                }
                while (is_crlf(at(s, i + n))) {
                    n++;
                }
                goto emit;
            }
        }
        if (is_space(c)) {
            /* \s*[\r\n]+: the run up to its last \r or \n, if it has one. */
            size_t run = 0, last_nl = 0;
            while (is_space(at(s, i + run))) {
                if (is_crlf(at(s, i + run))) {
                    last_nl = run + 1;
                }
                run++;
            }
            n = last_nl > 0 ? last_nl : space_run(s, i);
            goto emit;
        }
        n = 1; /* unreachable: every character is one of the above */
    emit:
        i += n;
        emit(s, i);
    }
}

/* [\p{P}\$\+<=>\^~\|]: punctuation plus the ASCII symbols llama.cpp's default adds. */
static bool is_default_punct(uint32_t c)
{
    if (c == CP_END || c == ENG_UC_INVALID) {
        return false;
    }
    switch (c) {
    case '$':
    case '+':
    case '<':
    case '=':
    case '>':
    case '^':
    case '~':
    case '|':
        return true;
    default:
        return eng_uc_class(c) == ENG_UC_PUNCT;
    }
}

/* [\p{P}\$\+<=>\^~\|`]: Falcon's first stage (the default's plus the backtick). */
static bool is_falcon_punct(uint32_t c)
{
    return c == '`' || is_default_punct(c);
}

/* A first stage: runs of first_class characters (or each one alone if single) become their
 * own pieces; the stretches between them are split by the GPT-2 matcher. */
static void split_two_stage(struct seg *s, bool (*first_class)(uint32_t), bool single)
{
    size_t n_cp = s->end, i = 0;
    while (i < n_cp) {
        size_t j = i;
        while (j < n_cp && !first_class(s->cp[j])) {
            j++;
        }
        if (j > i) {
            s->end = j; /* the regex sees only this stretch */
            split_gpt2(s, i);
            s->end = n_cp;
        }
        if (j < n_cp) {
            size_t n = 1;
            while (!single && first_class(at(s, j + n))) {
                n++;
            }
            j += n;
            emit(s, j);
        }
        i = j;
    }
}

size_t tok_pretokenize(enum tok_pre pre, const char *text, size_t len, uint32_t *cps,
                       uint32_t *offs, size_t *ends)
{
    size_t n = 0;
    for (size_t b = 0; b < len;) {
        offs[n] = (uint32_t)b;
        b += eng_utf8_decode(text + b, len - b, &cps[n]);
        n++;
    }
    offs[n] = (uint32_t)len;
    struct seg s = {cps, n, ends, 0, 0, REFINE_NONE};
    switch (pre) {
    case TOK_PRE_NONE:
        push_end(&s, n);
        break;
    case TOK_PRE_GPT2:
        split_gpt2(&s, 0);
        break;
    case TOK_PRE_LLAMA3:
        split_llama3(&s, 0, 3);
        break;
    case TOK_PRE_QWEN2:
        split_llama3(&s, 0, 1);
        break;
    case TOK_PRE_SMOLLM:
        split_two_stage(&s, is_number, true);
        break;
    case TOK_PRE_FALCON:
        s.refine = REFINE_TRIPLES;
        split_two_stage(&s, is_falcon_punct, false);
        break;
    case TOK_PRE_DEFAULT:
    default:
        s.refine = REFINE_DEFAULT;
        split_two_stage(&s, is_default_punct, false);
        break;
    }
    for (size_t j = 0; j < s.k; j++) {
        ends[j] = offs[ends[j]];
    }
    return s.k;
}

static const struct {
    const char *name;
    enum tok_pre pre;
    bool ignore_merges;
} pre_names[] = {
    {"default", TOK_PRE_DEFAULT, false},    {"gpt-2", TOK_PRE_GPT2, false},
    {"gpt2", TOK_PRE_GPT2, false},          {"mpt", TOK_PRE_GPT2, false},
    {"olmo", TOK_PRE_GPT2, false},          {"jais", TOK_PRE_GPT2, false},
    {"llama3", TOK_PRE_LLAMA3, true},       {"llama-v3", TOK_PRE_LLAMA3, true},
    {"llama-bpe", TOK_PRE_LLAMA3, true},    {"falcon3", TOK_PRE_LLAMA3, true},
    {"qwen2", TOK_PRE_QWEN2, false},        {"deepseek-r1-qwen", TOK_PRE_QWEN2, false},
    {"stablelm2", TOK_PRE_QWEN2, false},    {"smollm", TOK_PRE_SMOLLM, false},
    {"starcoder", TOK_PRE_SMOLLM, false},   {"refact", TOK_PRE_SMOLLM, false},
    {"command-r", TOK_PRE_SMOLLM, false},   {"exaone", TOK_PRE_SMOLLM, false},
    {"minerva-7b", TOK_PRE_SMOLLM, false},  {"falcon", TOK_PRE_FALCON, false},
    {"dbrx", TOK_PRE_LLAMA3, false},        {"smaug-bpe", TOK_PRE_LLAMA3, false},
    {"chatglm-bpe", TOK_PRE_LLAMA3, false}, {"pixtral", TOK_PRE_LLAMA3, true},
    {"megrez", TOK_PRE_QWEN2, false},       {"codeshell", TOK_PRE_SMOLLM, false},
};

bool tok_pre_from_name(const char *name, size_t len, enum tok_pre *out, bool *ignore_merges)
{
    for (size_t i = 0; i < sizeof(pre_names) / sizeof(pre_names[0]); i++) {
        if (strlen(pre_names[i].name) == len && memcmp(pre_names[i].name, name, len) == 0) {
            *out = pre_names[i].pre;
            *ignore_merges = pre_names[i].ignore_merges;
            return true;
        }
    }
    return false;
}

const char *tok_pre_name(enum tok_pre pre)
{
    switch (pre) {
    case TOK_PRE_NONE:
        return "none";
    case TOK_PRE_DEFAULT:
        return "default";
    case TOK_PRE_GPT2:
        return "gpt-2";
    case TOK_PRE_LLAMA3:
        return "llama3";
    case TOK_PRE_QWEN2:
        return "qwen2";
    case TOK_PRE_SMOLLM:
        return "smollm";
    case TOK_PRE_FALCON:
        return "falcon";
    }
    return "?";
}
