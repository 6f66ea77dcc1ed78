/* The byte matcher of a compiled constraint: a pushdown automaton whose stack holds one frame
 * per open value (object, array, string, number, literal). Feeding a byte asks the top frame;
 * it consumes the byte, rejects it, completes (pop), or hands it on to a child (push) or to
 * its parent (a number ends at the first byte that cannot continue it). States reachable by
 * accepted bytes always have a completion, and eng_cstate_min_close gives the length of the
 * shortest one exactly (the sum over frames of what each still needs), which the budget rule
 * of the mask relies on. With recursive schemas the stack is the limit: every push, and
 * every object key, must leave room for the shortest value of what it opens (cnode.need).
 * Pure functions over caller-owned state: any thread. */
#include <string.h>

#include "local-engine/constrain_internal.h"

enum step_ret { R_REJ, R_OK, R_DONE, R_POP, R_PUSH, R_REPLACE };

/* Number phases. */
enum { N_START, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP };
#define N_INT_DIGITS_MAX 15
#define N_FRAC_DIGITS_MAX 15
#define N_EXP_DIGITS_MAX 2

/* String phases. */
enum { S_OPEN, S_CHARS, S_ESC, S_UTF8, S_HEX, S_LOW_BSL, S_LOW_U, S_LOW_HEX };

/* Object phases (declared and generic). */
enum { O_OPEN, O_FIRST, O_KEY, O_COLON, O_VALUE, O_AFTER, O_NEXT };

/* Array phases. */
enum { A_OPEN, A_FIRST, A_AFTER, A_NEXT };
/* tagged union: '{', the shared first key, ':', the tag, then the chosen object at O_AFTER */
enum { T_OPEN, T_FIRST, T_KEY, T_COLON, T_VALUE, T_TAG };

static bool is_ws(uint8_t b)
{
    return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

static bool is_digit(uint8_t b)
{
    return b >= '0' && b <= '9';
}

static int hex_val(uint8_t b)
{
    if (is_digit(b)) {
        return b - '0';
    }
    if (b >= 'a' && b <= 'f') {
        return b - 'a' + 10;
    }
    if (b >= 'A' && b <= 'F') {
        return b - 'A' + 10;
    }
    return -1;
}

void cn_frame_init(const struct eng_constraint *c, struct eng_cframe *f, uint32_t node)
{
    memset(f, 0, sizeof(*f));
    f->node = (uint16_t)node;
    if (c->nodes[node].kind == CN_LIT) {
        f->b = (uint16_t)c->nodes[node].n;
    }
}

void eng_cstate_init(struct eng_cstate *st, const struct eng_constraint *c)
{
    st->sp = 1;
    cn_frame_init(c, &st->f[0], CN_NODE_ROOT);
}

void eng_cstate_copy(struct eng_cstate *dst, const struct eng_cstate *src)
{
    dst->sp = src->sp;
    memcpy(dst->f, src->f, (size_t)src->sp * sizeof(src->f[0]));
}

/* Narrows the sorted texts L[*lo..*hi) (sharing their first pos bytes) to those whose byte
 * pos is b. False if none is. */
static bool lit_narrow(const struct eng_constraint *c, const struct cn_lit *L, uint32_t *lo,
                       uint32_t *hi, uint32_t pos, uint8_t b)
{
    uint32_t i = *lo;
    while (i < *hi && (L[i].len <= pos || (uint8_t)c->str[L[i].off + pos] < b)) {
        i++;
    }
    if (i == *hi || (uint8_t)c->str[L[i].off + pos] != b) {
        return false;
    }
    uint32_t j = i + 1;
    while (j < *hi && (uint8_t)c->str[L[j].off + pos] == b) {
        j++;
    }
    *lo = i;
    *hi = j;
    return true;
}

/* Takes a whitespace byte at the current position if the bound allows. */
static enum step_ret take_ws(struct eng_cframe *f)
{
    if (f->ws >= ENG_CONSTRAIN_WS_MAX) {
        return R_REJ;
    }
    f->ws++;
    return R_OK;
}

static void set_ph(struct eng_cframe *f, uint8_t ph)
{
    f->ph = ph;
    f->ws = 0;
}

static enum step_ret step_string(const struct cnode *n, struct eng_cframe *f, uint8_t b)
{
    switch (f->ph) {
    case S_OPEN:
        if (b != '"') {
            return R_REJ;
        }
        f->ph = S_CHARS;
        return R_OK;
    case S_CHARS:
        if (b == '"') {
            return f->c >= n->lo ? R_DONE : R_REJ;
        }
        if (f->c >= n->hi || b < 0x20) {
            return R_REJ;
        }
        f->c++;
        if (b == '\\') {
            f->ph = S_ESC;
        } else if (b >= 0x80) {
            uint8_t lo = 0x80, hi = 0xBF;
            if (b >= 0xC2 && b <= 0xDF) {
                f->a = 1;
            } else if (b >= 0xE0 && b <= 0xEF) {
                f->a = 2;
                lo = b == 0xE0 ? 0xA0 : 0x80;
                hi = b == 0xED ? 0x9F : 0xBF;
            } else if (b >= 0xF0 && b <= 0xF4) {
                f->a = 3;
                lo = b == 0xF0 ? 0x90 : 0x80;
                hi = b == 0xF4 ? 0x8F : 0xBF;
            } else {
                return R_REJ;
            }
            f->b = (uint16_t)(lo << 8 | hi);
            f->ph = S_UTF8;
        }
        return R_OK;
    case S_UTF8:
        if (b < (f->b >> 8) || b > (f->b & 0xFF)) {
            return R_REJ;
        }
        f->b = 0x80BF;
        if (--f->a == 0) {
            f->ph = S_CHARS;
        }
        return R_OK;
    case S_ESC:
        if (b == 'u') {
            f->ph = S_HEX;
            f->a = 0;
            f->b = 0;
            return R_OK;
        }
        if (b == '"' || b == '\\' || b == '/' || b == 'b' || b == 'f' || b == 'n' || b == 'r' ||
            b == 't') {
            f->ph = S_CHARS;
            return R_OK;
        }
        return R_REJ;
    case S_HEX: {
        int h = hex_val(b);
        if (h < 0) {
            return R_REJ;
        }
        f->b = (uint16_t)(f->b << 4 | h);
        f->a++;
        if (f->a == 2 && f->b >= 0xDC && f->b <= 0xDF) {
            return R_REJ; /* a low surrogate with no high one before it */
        }
        if (f->a == 4) {
            f->ph = f->b >= 0xD800 && f->b <= 0xDBFF ? S_LOW_BSL : S_CHARS;
        }
        return R_OK;
    }
    case S_LOW_BSL:
        if (b != '\\') {
            return R_REJ;
        }
        f->ph = S_LOW_U;
        return R_OK;
    case S_LOW_U:
        if (b != 'u') {
            return R_REJ;
        }
        f->ph = S_LOW_HEX;
        f->a = 0;
        f->b = 0;
        return R_OK;
    case S_LOW_HEX: {
        int h = hex_val(b);
        if (h < 0) {
            return R_REJ;
        }
        f->b = (uint16_t)(f->b << 4 | h);
        f->a++;
        if ((f->a == 1 && f->b != 0xD) || (f->a == 2 && (f->b < 0xDC || f->b > 0xDF))) {
            return R_REJ;
        }
        if (f->a == 4) {
            f->ph = S_CHARS;
        }
        return R_OK;
    }
    default:
        return R_REJ;
    }
}

static enum step_ret step_number(bool integer, struct eng_cframe *f, uint8_t b)
{
    bool d = is_digit(b);
    switch (f->ph) {
    case N_START:
    case N_MINUS:
        if (b == '-' && f->ph == N_START) {
            f->ph = N_MINUS;
        } else if (b == '0') {
            f->ph = N_ZERO;
        } else if (d) {
            f->ph = N_INT;
            f->a = 1;
        } else {
            return R_REJ;
        }
        return R_OK;
    case N_ZERO:
    case N_INT:
        if (d && f->ph == N_INT && f->a < N_INT_DIGITS_MAX) {
            f->a++;
            return R_OK;
        }
        if (!integer && b == '.') {
            f->ph = N_DOT;
            return R_OK;
        }
        if (!integer && (b == 'e' || b == 'E')) {
            f->ph = N_E;
            return R_OK;
        }
        return R_POP;
    case N_DOT:
        if (!d) {
            return R_REJ;
        }
        f->ph = N_FRAC;
        f->a = 1;
        return R_OK;
    case N_FRAC:
        if (d && f->a < N_FRAC_DIGITS_MAX) {
            f->a++;
            return R_OK;
        }
        if (b == 'e' || b == 'E') {
            f->ph = N_E;
            return R_OK;
        }
        return R_POP;
    case N_E:
    case N_ESIGN:
        if ((b == '+' || b == '-') && f->ph == N_E) {
            f->ph = N_ESIGN;
            return R_OK;
        }
        if (!d) {
            return R_REJ;
        }
        f->ph = N_EXP;
        f->a = 1;
        return R_OK;
    case N_EXP:
        if (d && f->a < N_EXP_DIGITS_MAX) {
            f->a++;
            return R_OK;
        }
        return R_POP;
    default:
        return R_REJ;
    }
}

static enum step_ret step_lit(const struct eng_constraint *c, const struct cnode *n,
                              struct eng_cframe *f, uint8_t b)
{
    const struct cn_lit *L = c->lits + n->list;
    uint32_t lo = f->a, hi = f->b;
    if (!lit_narrow(c, L, &lo, &hi, f->c, b)) {
        return L[f->a].len == f->c ? R_POP : R_REJ;
    }
    f->a = (uint16_t)lo;
    f->b = (uint16_t)hi;
    f->c++;
    return hi - lo == 1 && L[lo].len == f->c ? R_DONE : R_OK;
}

/* Whether some key in L[lo..hi) of object n has a value whose shortest form fits in the
 * stack above depth frames (always, unless a recursive schema nears the cap). */
static bool key_feasible(const struct eng_constraint *c, const struct cnode *n,
                         const struct cn_lit *L, uint32_t lo, uint32_t hi, uint32_t depth)
{
    for (uint32_t i = lo; i < hi; i++) {
        if (depth + c->nodes[c->props[n->list + L[i].prop].node].need <= ENG_CONSTRAIN_STACK_MAX) {
            return true;
        }
    }
    return false;
}

/* Starts matching a key of object n at next-property index f->a with byte b. */
static enum step_ret key_start(const struct eng_constraint *c, const struct cnode *n,
                               struct eng_cframe *f, uint8_t b, uint32_t depth)
{
    const struct cn_keyset *ks = &c->keysets[n->ks + f->a];
    uint32_t lo = 0, hi = ks->n;
    if (!lit_narrow(c, c->lits + ks->off, &lo, &hi, 0, b) ||
        !key_feasible(c, n, c->lits + ks->off, lo, hi, depth)) {
        return R_REJ;
    }
    set_ph(f, O_KEY);
    f->b = (uint16_t)(lo | hi << 8);
    f->c = 1;
    return R_OK;
}

static enum step_ret step_object(const struct eng_constraint *c, const struct cnode *n,
                                 struct eng_cframe *f, uint8_t b, uint32_t depth, uint32_t *next)
{
    switch (f->ph) {
    case O_OPEN:
        if (b != '{') {
            return R_REJ;
        }
        set_ph(f, O_FIRST);
        f->a = 0;
        return R_OK;
    case O_FIRST:
    case O_NEXT:
        if (is_ws(b)) {
            return take_ws(f);
        }
        if (b == '}' && f->ph == O_FIRST) {
            return c->keysets[n->ks + f->a].has_req ? R_REJ : R_DONE;
        }
        return key_start(c, n, f, b, depth);
    case O_KEY: {
        const struct cn_keyset *ks = &c->keysets[n->ks + f->a];
        const struct cn_lit *L = c->lits + ks->off;
        uint32_t lo = f->b & 0xFF, hi = f->b >> 8;
        if (!lit_narrow(c, L, &lo, &hi, f->c, b) || !key_feasible(c, n, L, lo, hi, depth)) {
            return R_REJ;
        }
        f->c++;
        if (hi - lo == 1 && L[lo].len == f->c) {
            set_ph(f, O_COLON);
            f->b = (uint16_t)L[lo].prop;
        } else {
            f->b = (uint16_t)(lo | hi << 8);
        }
        return R_OK;
    }
    case O_COLON:
        if (is_ws(b)) {
            return take_ws(f);
        }
        if (b != ':') {
            return R_REJ;
        }
        set_ph(f, O_VALUE);
        return R_OK;
    case O_VALUE:
        if (is_ws(b)) {
            return take_ws(f);
        }
        set_ph(f, O_AFTER);
        f->a = (uint16_t)(f->b + 1);
        *next = c->props[n->list + f->b].node;
        return R_PUSH;
    case O_AFTER:
        if (is_ws(b)) {
            return take_ws(f);
        }
        const struct cn_keyset *ks = &c->keysets[n->ks + f->a];
        if (b == ',' && key_feasible(c, n, c->lits + ks->off, 0, ks->n, depth)) {
            set_ph(f, O_NEXT);
            return R_OK;
        }
        if (b == '}' && !c->keysets[n->ks + f->a].has_req) {
            return R_DONE;
        }
        return R_REJ;
    default:
        return R_REJ;
    }
}

/* The shared first key of tagged union n (its first alternative's). */
static const struct cn_lit *tagged_key(const struct eng_constraint *c, const struct cnode *n)
{
    return &c->lits[c->keysets[c->nodes[c->alts[n->list]].ks].off];
}

static enum step_ret step_tagged(const struct eng_constraint *c, const struct cnode *n,
                                 struct eng_cframe *f, uint8_t b)
{
    const struct cn_lit *key = tagged_key(c, n);
    const struct cn_lit *L = c->lits + n->ks;
    uint32_t lo = f->a, hi = f->b;
    switch (f->ph) {
    case T_OPEN:
        if (b != '{') {
            return R_REJ;
        }
        set_ph(f, T_FIRST);
        return R_OK;
    case T_FIRST:
    case T_COLON:
    case T_VALUE:
        if (is_ws(b)) {
            return take_ws(f);
        }
        if (f->ph == T_FIRST) {
            if (b != (uint8_t)c->str[key->off]) {
                return R_REJ;
            }
            set_ph(f, T_KEY);
            f->c = 1;
            return R_OK;
        }
        if (f->ph == T_COLON) {
            if (b != ':') {
                return R_REJ;
            }
            set_ph(f, T_VALUE);
            return R_OK;
        }
        lo = 0;
        hi = n->n;
        if (!lit_narrow(c, L, &lo, &hi, 0, b)) {
            return R_REJ;
        }
        set_ph(f, T_TAG);
        f->a = (uint16_t)lo;
        f->b = (uint16_t)hi;
        f->c = 1;
        return R_OK;
    case T_KEY:
        if (b != (uint8_t)c->str[key->off + f->c]) {
            return R_REJ;
        }
        if (++f->c == key->len) {
            set_ph(f, T_COLON);
        }
        return R_OK;
    case T_TAG:
        if (!lit_narrow(c, L, &lo, &hi, f->c, b)) {
            return R_REJ;
        }
        f->c++;
        if (hi - lo == 1 && L[lo].len == f->c) {
            /* the tag names one object: continue as that object after its first property */
            f->node = (uint16_t)c->alts[n->list + L[lo].prop];
            set_ph(f, O_AFTER);
            f->a = 1;
            f->b = 0;
            f->c = 0;
            return R_OK;
        }
        f->a = (uint16_t)lo;
        f->b = (uint16_t)hi;
        return R_OK;
    default:
        return R_REJ;
    }
}

static enum step_ret step_gobj(struct eng_cframe *f, uint8_t b, uint32_t *next)
{
    if (f->ph != O_OPEN && is_ws(b)) {
        return take_ws(f);
    }
    switch (f->ph) {
    case O_OPEN:
        if (b != '{') {
            return R_REJ;
        }
        set_ph(f, O_FIRST);
        return R_OK;
    case O_FIRST:
    case O_NEXT:
        if (b == '}' && f->ph == O_FIRST) {
            return R_DONE;
        }
        if (b != '"') {
            return R_REJ;
        }
        set_ph(f, O_COLON);
        *next = CN_NODE_STR;
        return R_PUSH;
    case O_COLON:
        if (b != ':') {
            return R_REJ;
        }
        set_ph(f, O_VALUE);
        return R_OK;
    case O_VALUE:
        set_ph(f, O_AFTER);
        *next = CN_NODE_ANY;
        return R_PUSH;
    case O_AFTER:
        if (b == ',') {
            set_ph(f, O_NEXT);
            return R_OK;
        }
        return b == '}' ? R_DONE : R_REJ;
    default:
        return R_REJ;
    }
}

static enum step_ret step_array(const struct cnode *n, bool generic, struct eng_cframe *f,
                                uint8_t b, uint32_t *next)
{
    uint32_t lo = generic ? 0 : n->lo, hi = generic ? CN_UNBOUNDED : n->hi;
    uint32_t item = generic ? CN_NODE_ANY : n->child;
    if (f->ph != A_OPEN && is_ws(b)) {
        return take_ws(f);
    }
    switch (f->ph) {
    case A_OPEN:
        if (b != '[') {
            return R_REJ;
        }
        set_ph(f, A_FIRST);
        f->c = 0;
        return R_OK;
    case A_FIRST:
        if (b == ']') {
            return lo == 0 ? R_DONE : R_REJ;
        }
        if (hi == 0) {
            return R_REJ;
        }
        set_ph(f, A_AFTER);
        f->c = 1;
        *next = item;
        return R_PUSH;
    case A_AFTER:
        if (b == ',' && f->c < hi) {
            set_ph(f, A_NEXT);
            return R_OK;
        }
        if (b == ']' && f->c >= lo) {
            return R_DONE;
        }
        return R_REJ;
    case A_NEXT:
        set_ph(f, A_AFTER);
        f->c++;
        *next = item;
        return R_PUSH;
    default:
        return R_REJ;
    }
}

static enum step_ret step_frame(const struct eng_constraint *c, struct eng_cframe *f, uint8_t b,
                                uint32_t depth, uint32_t *next)
{
    const struct cnode *n = &c->nodes[f->node];
    switch (n->kind) {
    case CN_ROOT:
        if (f->ph != 0) {
            return R_REJ;
        }
        if (is_ws(b)) {
            return take_ws(f);
        }
        f->ph = 1;
        *next = n->child;
        return R_PUSH;
    case CN_ANYOF:
        if (!cn_first_has(n, b)) {
            return R_REJ; /* also a recursive $ref still being compiled (no first bytes) */
        }
        for (uint32_t i = 0; i < n->n; i++) {
            uint32_t alt = c->alts[n->list + i];
            if (alt < c->n_nodes && cn_first_has(&c->nodes[alt], b)) {
                *next = alt;
                return R_REPLACE;
            }
        }
        return R_REJ;
    case CN_STRING:
        return step_string(n, f, b);
    case CN_NUMBER:
    case CN_INTEGER:
        return step_number(n->kind == CN_INTEGER, f, b);
    case CN_LIT:
        return step_lit(c, n, f, b);
    case CN_ARRAY:
    case CN_GARR:
        return step_array(n, n->kind == CN_GARR, f, b, next);
    case CN_OBJECT:
        return step_object(c, n, f, b, depth, next);
    case CN_GOBJ:
        return step_gobj(f, b, next);
    case CN_TAGGED:
        return step_tagged(c, n, f, b);
    default:
        return R_REJ;
    }
}

bool eng_cstate_feed(const struct eng_constraint *c, struct eng_cstate *st, uint8_t byte)
{
    /* Each push or replace is followed by the new frame taking or rejecting the byte, and
     * pops only go down: the loop is bounded by twice the stack plus a little. */
    for (int guard = 0; guard < 3 * ENG_CONSTRAIN_STACK_MAX + 4; guard++) {
        if (st->sp == 0) {
            return false;
        }
        struct eng_cframe *f = &st->f[st->sp - 1];
        uint32_t next = 0;
        switch (step_frame(c, f, byte, st->sp, &next)) {
        case R_REJ:
            return false;
        case R_OK:
            return true;
        case R_DONE:
            st->sp--;
            return true;
        case R_POP:
            st->sp--;
            break;
        case R_PUSH:
            if (st->sp + c->nodes[next].need > ENG_CONSTRAIN_STACK_MAX) {
                return false;
            }
            cn_frame_init(c, &st->f[st->sp++], next);
            break;
        case R_REPLACE:
            if (st->sp - 1 + c->nodes[next].need > ENG_CONSTRAIN_STACK_MAX) {
                return false;
            }
            cn_frame_init(c, f, next);
            break;
        }
    }
    return false;
}

bool eng_cstate_feed_n(const struct eng_constraint *c, struct eng_cstate *st, const void *bytes,
                       size_t n)
{
    const uint8_t *p = bytes;
    for (size_t i = 0; i < n; i++) {
        if (!eng_cstate_feed(c, st, p[i])) {
            return false;
        }
    }
    return true;
}

static uint32_t lit_min_rest(const struct cn_lit *L, uint32_t lo, uint32_t hi, uint32_t pos)
{
    uint32_t best = CN_UNBOUNDED;
    for (uint32_t i = lo; i < hi; i++) {
        uint32_t r = L[i].len - pos;
        best = r < best ? r : best;
    }
    return best;
}

static uint32_t string_cost(const struct cnode *n, const struct eng_cframe *f)
{
    uint32_t rem = f->c < n->lo ? n->lo - f->c : 0;
    switch (f->ph) {
    case S_OPEN:
        return n->minlen;
    case S_CHARS:
        return rem + 1;
    case S_ESC:
        return 1 + rem + 1;
    case S_UTF8:
        return f->a + rem + 1;
    case S_HEX: {
        /* Two digits D8..DB commit to a surrogate pair: "\uDC00" must follow. */
        bool pair =
            f->a >= 2 && (f->b >> (4 * (f->a - 2))) >= 0xD8 && (f->b >> (4 * (f->a - 2))) <= 0xDB;
        return (4u - f->a) + (pair ? 6u : 0u) + rem + 1;
    }
    case S_LOW_BSL:
        return 6 + rem + 1;
    case S_LOW_U:
        return 5 + rem + 1;
    case S_LOW_HEX:
        return (4u - f->a) + rem + 1;
    default:
        return 0;
    }
}

static uint32_t number_cost(const struct eng_cframe *f)
{
    switch (f->ph) {
    case N_ZERO:
    case N_INT:
    case N_FRAC:
    case N_EXP:
        return 0;
    default:
        return 1;
    }
}

static uint32_t object_cost(const struct eng_constraint *c, const struct cnode *n,
                            const struct eng_cframe *f, uint32_t depth)
{
    const struct cn_keyset *ks = &c->keysets[n->ks + f->a];
    switch (f->ph) {
    case O_OPEN:
        return n->minlen;
    case O_FIRST:
        return ks->req_first + 1;
    case O_KEY: {
        const struct cn_lit *L = c->lits + ks->off;
        uint32_t best = CN_UNBOUNDED;
        for (uint32_t i = (f->b & 0xFF); i < (uint32_t)(f->b >> 8); i++) {
            uint32_t r = L[i].tail - f->c;
            if (r < best && key_feasible(c, n, L, i, i + 1, depth)) {
                best = r;
            }
        }
        return best + 1;
    }
    case O_COLON:
    case O_VALUE: {
        uint32_t p = f->b;
        uint32_t v = c->nodes[c->props[n->list + p].node].minlen;
        return (f->ph == O_COLON ? 1u : 0u) + v + c->keysets[n->ks + p + 1].req_rest + 1;
    }
    case O_AFTER:
        return ks->req_rest + 1;
    case O_NEXT: {
        const struct cn_lit *L = c->lits + ks->off;
        uint32_t best = CN_UNBOUNDED;
        for (uint32_t i = 0; i < ks->n; i++) {
            if (L[i].tail < best && key_feasible(c, n, L, i, i + 1, depth)) {
                best = L[i].tail;
            }
        }
        return best + 1;
    }
    default:
        return 0;
    }
}

static uint32_t tagged_cost(const struct eng_constraint *c, const struct cnode *n,
                            const struct eng_cframe *f)
{
    const struct cn_lit *L = c->lits + n->ks;
    uint32_t lo = f->ph == T_TAG ? f->a : 0, hi = f->ph == T_TAG ? f->b : n->n;
    uint32_t pos = f->ph == T_TAG ? f->c : 0;
    uint64_t best = CN_UNBOUNDED;
    for (uint32_t i = lo; i < hi; i++) {
        uint64_t r = (uint64_t)(L[i].len - pos) + L[i].tail;
        best = r < best ? r : best;
    }
    uint32_t key = tagged_key(c, n)->len;
    switch (f->ph) {
    case T_OPEN:
        return n->minlen;
    case T_FIRST:
        return (uint32_t)(best + key + 1);
    case T_KEY:
        return (uint32_t)(best + (key - f->c) + 1);
    case T_COLON:
        return (uint32_t)(best + 1);
    default:
        return (uint32_t)best;
    }
}

static uint32_t frame_cost(const struct eng_constraint *c, const struct eng_cframe *f,
                           uint32_t depth)
{
    const struct cnode *n = &c->nodes[f->node];
    switch (n->kind) {
    case CN_ROOT:
        return f->ph == 0 ? c->nodes[n->child].minlen : 0;
    case CN_ANYOF:
        return n->minlen;
    case CN_STRING:
        return string_cost(n, f);
    case CN_NUMBER:
    case CN_INTEGER:
        return number_cost(f);
    case CN_LIT:
        return lit_min_rest(c->lits + n->list, f->a, f->b, f->c);
    case CN_OBJECT:
        return object_cost(c, n, f, depth);
    case CN_TAGGED:
        return tagged_cost(c, n, f);
    case CN_GOBJ: {
        static const uint32_t cost[] = {2, 1, 0, 3, 2, 1, 5};
        return f->ph < 7 ? cost[f->ph] : 0;
    }
    case CN_ARRAY:
    case CN_GARR: {
        uint32_t lo = n->kind == CN_ARRAY ? n->lo : 0;
        uint32_t item = n->kind == CN_ARRAY ? c->nodes[n->child].minlen : 1;
        uint64_t need;
        switch (f->ph) {
        case A_OPEN:
            return n->kind == CN_ARRAY ? n->minlen : 2;
        case A_FIRST:
            need = lo ? (uint64_t)lo * item + lo - 1 : 0;
            return (uint32_t)(need + 1);
        case A_AFTER:
            need = f->c < lo ? (uint64_t)(lo - f->c) * (item + 1) : 0;
            return (uint32_t)(need + 1);
        case A_NEXT:
            need = item + (f->c + 1 < lo ? (uint64_t)(lo - f->c - 1) * (item + 1) : 0);
            return (uint32_t)(need + 1);
        default:
            return 0;
        }
    }
    default:
        return 0;
    }
}

uint32_t eng_cstate_min_close(const struct eng_constraint *c, const struct eng_cstate *st)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < st->sp; i++) {
        sum += frame_cost(c, &st->f[i], i + 1);
    }
    return sum > CN_UNBOUNDED ? CN_UNBOUNDED : (uint32_t)sum;
}

bool eng_cstate_can_continue(const struct eng_constraint *c, const struct eng_cstate *st)
{
    (void)c;
    return !(st->sp == 1 && st->f[0].ph == 1);
}
