/* Token -> bytes: a token's piece (SPM "▁" -> space, <0xXX> byte tokens, GPT-2 byte-level
 * characters -> bytes, special tokens only on request) and the streaming detokenizer that
 * turns pieces into deltas of whole UTF-8 characters. Caller's thread; no allocation. */
#include <stdint.h>
#include <string.h>

#include "local-engine/tok_internal.h"
#include "local-engine/unicode.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

/* The byte of a "<0xXX>" token text, or -1. */
static int byte_token_value(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') {
        return -1;
    }
    int hi = hexval(s[3]), lo = hexval(s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

size_t eng_token_to_piece(const struct eng_tokenizer *t, int32_t id, char *buf, size_t n,
                          bool special)
{
    if (id < 0 || id >= t->n_vocab) {
        return 0;
    }
    const struct tok_token *tk = &t->tokens[id];
    const char *s = t->text + tk->off;
    size_t len = tk->len, k = 0;
    switch (tk->type) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNKNOWN:
        if (!special) {
            return 0;
        }
        /* fall through */
    case TOK_TYPE_USER_DEFINED:
        if (len > 0 && len <= n) {
            memcpy(buf, s, len);
        }
        return len;
    case TOK_TYPE_UNUSED:
        return 0;
    case TOK_TYPE_BYTE: {
        int b = byte_token_value(s, len);
        if (b >= 0) {
            if (n >= 1) {
                buf[0] = (char)b;
            }
            return 1;
        }
        break; /* not in <0xXX> form: render as a normal token */
    }
    default:
        break;
    }
    if (t->kind == TOK_KIND_SPM) {
        for (size_t i = 0; i < len;) {
            if (i + 3 <= len && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                if (k < n) {
                    buf[k] = ' ';
                }
                k++;
                i += 3;
            } else {
                if (k < n) {
                    buf[k] = s[i];
                }
                k++;
                i++;
            }
        }
        return k;
    }
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t cl = eng_utf8_decode(s + i, len - i, &cp);
        int b = cp == ENG_UC_INVALID ? -1 : tok_cp_to_byte(cp);
        if (b >= 0) {
            if (k < n) {
                buf[k] = (char)b;
            }
            k++;
        } else {
            /* Not a byte-level character: keep its bytes as they are. */
            for (size_t j = 0; j < cl; j++) {
                if (k < n) {
                    buf[k] = s[i + j];
                }
                k++;
            }
        }
        i += cl;
    }
    return k;
}

/* ---- streaming detokenizer ---- */

#define REPLACEMENT "\xef\xbf\xbd"

size_t eng_detok_out_max(const struct eng_tokenizer *t)
{
    return 3 * (t->piece_max + sizeof(((struct eng_detok *)0)->pending));
}

void eng_detok_init(struct eng_detok *d, const struct eng_tokenizer *t)
{
    memset(d, 0, sizeof(*d));
    d->t = t;
    d->first = true;
}

/* Replaces every byte of out[0..len) that does not start a valid character with U+FFFD, in
 * place (out has room for 3 * len bytes); returns the new length. */
static size_t sanitize(char *out, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t cp;
        size_t cl = eng_utf8_decode(out + i, len - i, &cp);
        if (cp != ENG_UC_INVALID) {
            i += cl;
            continue;
        }
        memmove(out + i + 3, out + i + 1, len - i - 1);
        memcpy(out + i, REPLACEMENT, 3);
        len += 2;
        i += 3;
    }
    return len;
}

size_t eng_detok_push(struct eng_detok *d, int32_t id, char *out, size_t n)
{
    const struct eng_tokenizer *t = d->t;
    size_t plen = eng_token_to_piece(t, id, NULL, 0, d->special);
    size_t np = d->n_pending;
    if (n / 3 < np + plen + 1) {
        return SIZE_MAX;
    }
    memcpy(out, d->pending, np);
    eng_token_to_piece(t, id, out + np, plen, d->special);
    if (d->first && plen > 0) {
        d->first = false;
        if (t->kind == TOK_KIND_SPM && t->add_space_prefix && out[np] == ' ') {
            memmove(out + np, out + np + 1, plen - 1);
            plen--;
        }
    }
    size_t total = np + plen;
    size_t done = eng_utf8_complete_prefix(out, total);
    d->n_pending = total - done;
    memcpy(d->pending, out + done, d->n_pending);
    return sanitize(out, done);
}

size_t eng_detok_flush(struct eng_detok *d, char *out, size_t n)
{
    if (d->n_pending == 0) {
        return 0;
    }
    if (n < 3) {
        return SIZE_MAX;
    }
    memcpy(out, REPLACEMENT, 3);
    d->n_pending = 0;
    return 3;
}
