/* Feature extraction for the complexity score: one pass over the tail (RT_SCAN_MAX bytes) of
 * the last user message, counting general linguistic markers (keywords looked up in small
 * sorted tables, two-word phrases, punctuation, digits, line shapes), plus request-shape
 * features (lengths, turns, max_tokens, tools). No allocation, bounded work per byte: it runs
 * on the lws thread for every request, and on the CLI's thread for `wye route`. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "router/score.h"
#include "router/score_internal.h"

static const char *const feat_names[RT_F__COUNT] = {
    [RT_F_LEN_LAST] = "len_last",
    [RT_F_LEN_CONV] = "len_conversation",
    [RT_F_TURNS] = "turns",
    [RT_F_SYSTEM] = "system_prompt",
    [RT_F_CODE_SYNTAX] = "code_syntax",
    [RT_F_CODE_TOPIC] = "code_topic",
    [RT_F_SYMBOLS] = "symbol_density",
    [RT_F_MATH] = "math_markers",
    [RT_F_LATEX] = "latex",
    [RT_F_NUMBERS] = "numbers",
    [RT_F_MULTI_QTY] = "multi_quantity",
    [RT_F_DIGITS] = "digit_share",
    [RT_F_OPERATORS] = "operators",
    [RT_F_REASONING] = "reasoning",
    [RT_F_CONSTRAINTS] = "constraints",
    [RT_F_LIST_ITEMS] = "list_items",
    [RT_F_IMPERATIVES] = "imperatives",
    [RT_F_LONGFORM] = "longform",
    [RT_F_SHORT_TASK] = "short_task",
    [RT_F_QUESTIONS] = "questions",
    [RT_F_WH_FACTUAL] = "wh_factual",
    [RT_F_WH_OPEN] = "wh_open",
    [RT_F_SMALLTALK] = "smalltalk",
    [RT_F_PERSONAL] = "personal",
    [RT_F_SHORT] = "short_text",
    [RT_F_COMMON] = "common_words",
    [RT_F_SENTENCES] = "sentences",
    [RT_F_LINES] = "lines",
    [RT_F_FIELDS] = "fields",
    [RT_F_AVG_WORD] = "avg_word_len",
    [RT_F_LONG_WORDS] = "long_words",
    [RT_F_NON_ASCII] = "non_ascii",
    [RT_F_MAX_TOKENS] = "max_tokens",
    [RT_F_TOOLS] = "tools",
    [RT_F_RESP_FORMAT] = "response_format",
};

const char *rt_feature_name(int feat)
{
    return feat >= 0 && feat < RT_F__COUNT ? feat_names[feat] : NULL;
}

int rt_feature_index(const char *name)
{
    for (int i = 0; name && i < RT_F__COUNT; i++) {
        if (strcmp(feat_names[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

int rt_features_selfcheck(void)
{
    for (size_t i = 1; i < rt_kw_count; i++) {
        if (strcmp(rt_kw_table[i - 1].w, rt_kw_table[i].w) >= 0) {
            return (int)i;
        }
    }
    return 0;
}

/* An open-addressing hash of rt_kw_table, and a bit per hash of each phrase's first word so that
 * a two-word lookup is only tried after a possible phrase head. Built once (pthread_once),
 * read-only afterwards: any thread may scan. */
#define KW_SLOTS 1024 /* power of two, over twice rt_kw_count */
#define KW_HEAD_BITS 4096

static short kw_slot[KW_SLOTS]; /* index into rt_kw_table + 1; 0: empty */
static unsigned char kw_head[KW_HEAD_BITS / 8];
static unsigned char word_byte[256]; /* 1 for letters and _ ' - # */
static pthread_once_t kw_once = PTHREAD_ONCE_INIT;

static uint32_t kw_hash(const char *w, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (unsigned char)w[i]) * 16777619u;
    }
    return h;
}

static void kw_build(void)
{
    for (int c = 0; c < 256; c++) {
        word_byte[c] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '\'' ||
                       c == '-' || c == '#';
    }
    WYE_ASSERT(rt_kw_count * 2 < KW_SLOTS); /* keeps probe chains short */
    for (size_t i = 0; i < rt_kw_count; i++) {
        const char *w = rt_kw_table[i].w;
        uint32_t h = kw_hash(w, strlen(w)) & (KW_SLOTS - 1);
        while (kw_slot[h]) {
            h = (h + 1) & (KW_SLOTS - 1);
        }
        kw_slot[h] = (short)(i + 1);
        const char *sp = strchr(w, ' ');
        if (sp) {
            uint32_t hh = kw_hash(w, (size_t)(sp - w)) & (KW_HEAD_BITS - 1);
            kw_head[hh / 8] |= (unsigned char)(1u << (hh % 8));
        }
    }
}

static unsigned kw_lookup(const char *w, size_t n)
{
    uint32_t h = kw_hash(w, n) & (KW_SLOTS - 1);
    for (int k; (k = kw_slot[h]) != 0; h = (h + 1) & (KW_SLOTS - 1)) {
        if (strcmp(rt_kw_table[k - 1].w, w) == 0) {
            return rt_kw_table[k - 1].cls;
        }
    }
    return 0;
}

static bool kw_is_head(const char *w, size_t n)
{
    uint32_t h = kw_hash(w, n) & (KW_HEAD_BITS - 1);
    return (kw_head[h / 8] >> (h % 8)) & 1u;
}

#define WORD_MAX 24

/* The scanner's running counts for one text. */
struct scan {
    unsigned n_words, n_letters_ascii, n_long_words, n_nonascii, n_digits, n_numbers;
    unsigned n_code, n_code_t, n_math, n_math_weak, n_latex, n_ops, n_symbols, n_reason, n_constr,
        n_long;
    unsigned n_short, n_small, n_verb, n_wh_fact, n_wh_open, n_personal, n_common;
    unsigned n_questions, n_sentences, n_lines, n_list, n_fields, n_bytes;
    unsigned step_seen; /* bit per distinct sequencing word class seen */
    bool sentence_start;
    char prev[WORD_MAX + 1]; /* previous word (lowercase), "" at a sentence start */
    size_t prev_len;         /* strlen(prev); 0 where phrases cannot continue */
    char prev_num;           /* the previous token was a number */
};

static void on_word(struct scan *s, const char *w, size_t n, int ident)
{
    char phrase[2 * WORD_MAX + 2];
    unsigned cls = kw_lookup(w, n);
    if (s->prev_len && kw_is_head(s->prev, s->prev_len)) {
        size_t pn = s->prev_len;
        memcpy(phrase, s->prev, pn);
        phrase[pn] = ' ';
        memcpy(phrase + pn + 1, w, n + 1);
        cls |= kw_lookup(phrase, pn + 1 + n);
    }
    /* "in N words", "N sentences", "N bullet points": an explicit length constraint. */
    if (s->prev_num && (strcmp(w, "words") == 0 || strcmp(w, "sentences") == 0 ||
                        strcmp(w, "paragraphs") == 0 || strcmp(w, "bullet") == 0)) {
        s->n_constr++;
    }
    s->n_words++;
    s->n_long_words += n >= 9;
    s->n_code += (cls & RT_KW_CODE) != 0 || ident;
    s->n_code_t += (cls & RT_KW_CODE_T) != 0;
    s->n_math += (cls & RT_KW_MATH) != 0;
    s->n_math_weak += (cls & RT_KW_MATHW) != 0;
    s->n_reason += (cls & RT_KW_REASON) != 0;
    s->n_constr += (cls & RT_KW_CONSTR) != 0;
    s->n_long += (cls & RT_KW_LONG) != 0;
    s->n_short += (cls & RT_KW_SHORT) != 0;
    s->n_small += (cls & RT_KW_SMALL) != 0;
    s->n_personal += (cls & RT_KW_PERSONAL) != 0;
    s->n_common += (cls & RT_KW_COMMON) != 0;
    if (cls & RT_KW_STEP) {
        unsigned bit = w[0] == 'f' && w[1] == 'i' && w[2] == 'r' ? 1u : w[0] == 't' ? 2u : 4u;
        s->step_seen |= bit;
    }
    if (s->sentence_start) {
        s->n_verb += (cls & RT_KW_VERB) != 0;
        s->n_wh_fact += (cls & RT_KW_WH_FACT) != 0;
        s->n_wh_open += (cls & RT_KW_WH_OPEN) != 0;
    }
    s->sentence_start = false;
    memcpy(s->prev, w, n + 1);
    s->prev_len = n;
    s->n_numbers += (cls & RT_KW_NUMW) != 0;
    s->prev_num = (cls & RT_KW_NUMW) != 0;
}

static int is_word_byte(unsigned char c)
{
    return word_byte[c];
}

static bool line_is_list_item(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    if (p + 1 < end && (*p == '-' || *p == '*' || *p == '+') && p[1] == ' ') {
        return true;
    }
    if (p + 2 < end && p[0] == 0xE2 && p[1] == 0x80 && p[2] == 0xA2) { /* U+2022 bullet */
        return true;
    }
    const unsigned char *q = p;
    while (q < end && q - p < 3 && *q >= '0' && *q <= '9') {
        q++;
    }
    return q > p && q + 1 < end && (*q == '.' || *q == ')') && q[1] == ' ';
}

/* "Question:", "Title:", "Options:" or "(A)" at a line start: a labelled field of a
 * templated prompt (context, then the question about it). */
static bool line_is_field(const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\t')) {
        p++;
    }
    if (p + 2 < end && p[0] == '(' && p[1] >= 'A' && p[1] <= 'H' && p[2] == ')') {
        return true;
    }
    const unsigned char *q = p;
    while (q < end && q - p <= 20 &&
           ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q == ' ' && q > p))) {
        q++;
    }
    return q > p && q < end && *q == ':' && *p >= 'A' && *p <= 'Z';
}

/* Two-byte sequences that are almost only found in code: == != && || -> => :: += () >> */
static bool is_code_pair(unsigned char a, unsigned char b)
{
    return (b == '=' && (a == '=' || a == '!' || a == '+')) || (a == '&' && b == '&') ||
           (a == '|' && b == '|') || (b == '>' && (a == '-' || a == '=' || a == '>')) ||
           (a == ':' && b == ':') || (a == '(' && b == ')');
}

static bool is_operand(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '(' ||
           c == ')' || c == '{' || c == '}' || c == '$' || c == '\\';
}

/* An operator between two operands (spaces allowed): "3 * 4", "x^2", "a/b"; not "**bold**". */
static bool is_infix(const unsigned char *begin, const unsigned char *p, const unsigned char *end)
{
    const unsigned char *a = p, *b = p + 1;
    for (int i = 0; i < 2 && a > begin && a[-1] == ' '; i++) {
        a--;
    }
    for (int i = 0; i < 2 && b < end && *b == ' '; i++) {
        b++;
    }
    return a > begin && b < end && is_operand(a[-1]) && is_operand(*b);
}

static void scan_text(struct scan *s, const unsigned char *p, size_t len)
{
    const unsigned char *begin = p, *end = p + len;
    char word[WORD_MAX + 1];
    s->sentence_start = true;
    if (line_is_list_item(p, end)) {
        s->n_list++;
    }
    s->n_fields += line_is_field(p, end);
    while (p < end) {
        unsigned char c = *p;
        if (is_word_byte(c) && !(c == '\'' || c == '-')) {
            /* A word: letters plus inner _ ' - and a leading #; lowercase into word[]. */
            size_t n = 0, letters = 0;
            int ident = 0, upper_inner = 0;
            const unsigned char *start = p;
            while (p < end && is_word_byte(*p)) {
                unsigned char ch = *p;
                if (ch >= 'A' && ch <= 'Z') {
                    upper_inner |= p > start && p[-1] >= 'a' && p[-1] <= 'z';
                    ch = (unsigned char)(ch - 'A' + 'a');
                }
                if (ch >= 'a' && ch <= 'z') {
                    letters++;
                }
                ident |= ch == '_' && p > start && p + 1 < end && is_word_byte(p[1]);
                if (n < WORD_MAX) {
                    word[n++] = (char)ch;
                }
                p++;
            }
            while (n > 0 && (word[n - 1] == '\'' || word[n - 1] == '-')) {
                n--; /* a trailing quote or dash is punctuation */
            }
            word[n] = '\0';
            s->n_letters_ascii += (unsigned)letters;
            if (n == 0 || letters == 0) {
                continue;
            }
            /* foo( is a call or a definition in code (and f(x) in maths). */
            ident |= upper_inner;
            if (p < end && *p == '(' && letters > 1) {
                ident = 1;
            }
            on_word(s, word, n, ident);
            continue;
        }
        if (c >= '0' && c <= '9') {
            while (p < end && ((*p >= '0' && *p <= '9') || *p == ',' || *p == '.') &&
                   !((*p == ',' || *p == '.') && (p + 1 >= end || p[1] < '0' || p[1] > '9'))) {
                s->n_digits += *p >= '0' && *p <= '9';
                p++;
            }
            s->n_numbers++;
            s->prev_num = 1;
            s->sentence_start = false;
            continue;
        }
        if (c >= 0x80) {
            /* UTF-8: count each character once (at its lead byte). */
            if (c >= 0xC0) {
                s->n_nonascii++;
                s->sentence_start = false;
            }
            p++;
            continue;
        }
        if (p + 1 < end && is_code_pair(c, p[1])) {
            s->n_code++;
            s->n_symbols += 2;
            p += 2;
            continue;
        }
        switch (c) {
        case '\n':
            s->n_lines++;
            s->n_fields += line_is_field(p + 1, end);
            if (line_is_list_item(p + 1, end)) {
                s->n_list++;
                s->sentence_start = true;
                s->prev_len = 0;
            }
            if (p + 1 < end && p[1] == '\n') {
                s->sentence_start = true; /* a paragraph break ends a sentence */
                s->prev_len = 0;
            }
            break;
        case '?':
            s->n_questions++;
            /* fall through */
        case '.':
        case '!':
            if (p + 1 >= end || p[1] == ' ' || p[1] == '\n' || p[1] == '\r' || p[1] == '"') {
                s->n_sentences++;
                s->sentence_start = true;
                s->prev_len = 0;
            }
            break;
        case '$':
            /* "$5.50" is money, "$x$" is LaTeX. */
            s->n_latex += !(p + 1 < end && p[1] >= '0' && p[1] <= '9');
            break;
        case '\\':
            s->n_latex++;
            break;
        case '`':
            if (p + 2 < end && p[1] == '`' && p[2] == '`') {
                s->n_code += 3; /* a fenced block is strong evidence */
                p += 2;
            }
            break;
        case '+':
        case '*':
        case '/':
        case '^':
        case '=':
            s->n_ops += is_infix(begin, p, end);
            break;
        default:
            break;
        }
        if (c == '{' || c == '}' || c == '[' || c == ']' || c == ';' || c == '=' || c == '<' ||
            c == '>' || c == '|' || c == '_') {
            s->n_symbols++;
        }
        if (c != ' ' && c != '\t' && c != '\r') {
            s->prev_num = 0;
        }
        if (c == ',' || c == ':' || c == ';' || c == '(' || c == ')') {
            s->prev_len = 0; /* phrases do not span punctuation */
            s->prev_num = 0;
        }
        p++;
    }
}

/* Rough token estimate: ~4 bytes of ASCII per token, one per non-ASCII character. Past
 * RT_SCAN_MAX bytes, the tail's tokens per byte are extrapolated (bounded work). */
static float est_tokens(const char *text, size_t len)
{
    size_t ascii = 0, nonascii = 0, n = len > RT_SCAN_MAX ? RT_SCAN_MAX : len;
    if (len > n) {
        float tail = est_tokens(text + len - n, n);
        return tail * (float)len / (float)n;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        ascii += c < 0x80;
        nonascii += c >= 0xC0;
    }
    /* A non-ASCII character (2-4 bytes) is counted as about one token. */
    return (float)ascii / 4.0f + (float)nonascii;
}

static float lg(unsigned n)
{
    return log1pf((float)n);
}

static void fill_text_features(struct scan *s, struct rt_features *out)
{
    float *v = out->v;
    unsigned letters = s->n_letters_ascii + s->n_nonascii;
    v[RT_F_CODE_SYNTAX] = lg(s->n_code);
    v[RT_F_CODE_TOPIC] = lg(s->n_code_t);
    v[RT_F_SYMBOLS] = s->n_bytes ? 10.0f * (float)s->n_symbols / (float)s->n_bytes : 0.0f;
    /* Words like "total" or "area" are maths only beside numbers. */
    v[RT_F_MATH] = lg(s->n_math + (s->n_numbers + s->n_latex ? s->n_math_weak : 0));
    v[RT_F_LATEX] = lg(s->n_latex);
    v[RT_F_NUMBERS] = lg(s->n_numbers);
    /* Beyond two quantities a word problem usually takes more than one operation. */
    v[RT_F_MULTI_QTY] = lg(s->n_numbers > 2 ? s->n_numbers - 2 : 0);
    v[RT_F_DIGITS] =
        letters + s->n_digits ? (float)s->n_digits / (float)(letters + s->n_digits) : 0.0f;
    v[RT_F_OPERATORS] = lg(s->n_ops);
    unsigned steps = (s->step_seen & 1u) && (s->step_seen & 6u) ? 2u : 0u;
    v[RT_F_REASONING] = lg(s->n_reason + steps);
    v[RT_F_CONSTRAINTS] = lg(s->n_constr);
    v[RT_F_LIST_ITEMS] = lg(s->n_list);
    v[RT_F_IMPERATIVES] = lg(s->n_verb);
    v[RT_F_LONGFORM] = lg(s->n_long);
    v[RT_F_SHORT_TASK] = lg(s->n_short);
    v[RT_F_QUESTIONS] = lg(s->n_questions);
    v[RT_F_WH_FACTUAL] = lg(s->n_wh_fact);
    v[RT_F_WH_OPEN] = lg(s->n_wh_open);
    v[RT_F_SMALLTALK] = lg(s->n_small);
    v[RT_F_PERSONAL] = s->n_words ? (float)s->n_personal / (float)s->n_words : 0.0f;
    v[RT_F_COMMON] = s->n_words ? (float)s->n_common / (float)s->n_words : 0.0f;
    v[RT_F_SHORT] = s->n_words + s->n_numbers <= 6 ? 1.0f : 0.0f;
    /* A text without terminal punctuation is still one sentence. */
    v[RT_F_SENTENCES] = lg(s->n_sentences ? s->n_sentences : (s->n_words > 0));
    v[RT_F_LINES] = lg(s->n_lines);
    v[RT_F_FIELDS] = lg(s->n_fields);
    float avg = s->n_words ? (float)s->n_letters_ascii / (float)s->n_words : 0.0f;
    v[RT_F_AVG_WORD] = avg > 12.0f ? 12.0f : avg;
    v[RT_F_LONG_WORDS] = s->n_words ? (float)s->n_long_words / (float)s->n_words : 0.0f;
    v[RT_F_NON_ASCII] = letters ? (float)s->n_nonascii / (float)letters : 0.0f;
}

static void scan_tail(const char *text, size_t len, struct scan *s)
{
    const unsigned char *p = (const unsigned char *)text;
    if (len > RT_SCAN_MAX) {
        p += len - RT_SCAN_MAX;
        len = RT_SCAN_MAX;
        /* Start on a character boundary. */
        while (len > 0 && (*p & 0xC0) == 0x80) {
            p++;
            len--;
        }
    }
    memset(s, 0, sizeof(*s));
    s->n_bytes = (unsigned)len;
    scan_text(s, p, len);
}

void rt_features_extract_text(const char *text, size_t len, struct rt_features *out)
{
    struct scan s;
    pthread_once(&kw_once, kw_build);
    memset(out, 0, sizeof(*out));
    scan_tail(text, len, &s);
    fill_text_features(&s, out);
    float t = est_tokens(text, len);
    out->v[RT_F_LEN_LAST] = log1pf(t);
    out->v[RT_F_LEN_CONV] = log1pf(t);
}

void rt_features_extract(const struct wye_chat_req *req, struct rt_features *out)
{
    const char *last = "";
    size_t last_len = 0;
    float conv = 0.0f;
    unsigned users = 0, system = 0;
    for (size_t i = 0; i < req->n_msgs; i++) {
        const struct wye_chat_msg *m = &req->msgs[i];
        size_t n = strlen(m->content);
        conv += est_tokens(m->content, n);
        if (m->role == WYE_ROLE_USER) {
            users++;
            last = m->content;
            last_len = n;
        } else if (m->role == WYE_ROLE_SYSTEM) {
            system = 1;
        }
    }
    rt_features_extract_text(last, last_len, out);
    out->v[RT_F_LEN_CONV] = log1pf(conv);
    out->v[RT_F_TURNS] = users > 1 ? log1pf((float)(users - 1)) : 0.0f;
    out->v[RT_F_SYSTEM] = (float)system;
    float mt = 0.0f;
    if (req->max_tokens > 0) {
        mt = log2f((float)req->max_tokens / 256.0f);
        mt = mt < -3.0f ? -3.0f : mt > 4.0f ? 4.0f : mt;
    }
    out->v[RT_F_MAX_TOKENS] = mt;
    out->v[RT_F_TOOLS] = req->has_tools ? 1.0f : 0.0f;
    out->v[RT_F_RESP_FORMAT] = req->has_response_format ? 1.0f : 0.0f;
}
