/* libFuzzer entry point for the chat templates: eng_chat_detect on the whole input as a
 * tokenizer.chat_template text, then eng_chat_format for every family with a conversation
 * built from the input (after a flag byte: NUL-separated messages, each a role byte and its
 * content, so empty contents, unknown roles, a NULL content and long conversations all occur).
 * Checks what chat_template.h promises: a known family, INVAL exactly for an unknown role, valid
 * UTF-8 out of valid UTF-8 in, and on error (TOOBIG just below the needed size) the buffer as it
 * was. Any violation aborts. Single-threaded. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/chat.h"
#include "local-engine/chat_template.h"
#include "local-engine/unicode.h"
#include "tests/fuzz/fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define OUT_MAX (1u << 22)
#define PREFIX "kept before the conversation"

/* Renders with out's cap set to max after an optional prefix; checks the error contract. */
static enum wye_err render(enum eng_chat_family f, const struct wye_chat_msg *m, size_t n, bool gen,
                           const char *bos, bool prefix, size_t max, struct wye_buf *out)
{
    wye_buf_init(out, max);
    if (prefix) {
        CHECK(wye_buf_append_str(out, PREFIX) == WYE_OK);
    }
    size_t before = out->len;
    enum wye_err e = eng_chat_format(f, m, n, gen, bos, out);
    if (e != WYE_OK) {
        CHECK(out->len == before);
        CHECK(out->data == NULL || out->data[before] == '\0');
        CHECK(!prefix || memcmp(out->data, PREFIX, before) == 0);
    } else {
        CHECK(out->len >= before && out->len <= max);
    }
    return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    bool known;
    enum eng_chat_family fam = eng_chat_detect((const char *)data, size, &known);
    CHECK((unsigned)fam < ENG_CHAT__COUNT);
    CHECK(strcmp(eng_chat_family_name(fam), "?") != 0);
    if (!known) {
        CHECK(fam == ENG_CHAT_CHATML);
    }
    if (size == 0) {
        return 0;
    }
    static const char *const bos_texts[] = {NULL, "<s>", "<|begin_of_text|>", "<bos>"};
    unsigned flags = data[0];
    bool gen = flags & 1u, prefix = flags & 8u;
    const char *bos = bos_texts[(flags >> 1) & 3u];

    /* The conversation: NUL-separated pieces; a piece's first byte is its role (5 and up:
     * not a role), the rest its content. */
    const char *body = (const char *)data + 1;
    size_t blen = size - 1, n = 1;
    for (size_t i = 0; i < blen; i++) {
        n += body[i] == '\0';
    }
    struct wye_chat_msg *msgs = calloc(n, sizeof(*msgs));
    char *copy = malloc(blen + 1);
    CHECK(msgs != NULL && copy != NULL);
    memcpy(copy, body, blen);
    copy[blen] = '\0';
    bool bad_role = false, utf8 = true;
    size_t k = 0;
    for (size_t i = 0; k < n; k++) {
        char *piece = copy + i;
        size_t plen = strlen(piece);
        i += plen + 1;
        unsigned role = plen > 0 ? (uint8_t)piece[0] % 6u : WYE_ROLE_USER;
        msgs[k].role = (enum wye_role)role;
        msgs[k].content = plen > 0 ? piece + 1 : piece;
        bad_role |= role > WYE_ROLE_TOOL;
        utf8 &= eng_utf8_valid(msgs[k].content, strlen(msgs[k].content));
    }
    if (flags & 16u) {
        msgs[n - 1].content = NULL; /* refused (INVAL) like an unknown role */
        bad_role = true;
    }

    for (int f = 0; f < ENG_CHAT__COUNT; f++) {
        struct wye_buf out;
        enum wye_err e = render((enum eng_chat_family)f, msgs, n, gen, bos, prefix, OUT_MAX, &out);
        if (bad_role) {
            CHECK(e == WYE_ERR_INVAL);
            wye_buf_cleanup(&out);
            continue;
        }
        CHECK(e == WYE_OK || e == WYE_ERR_TOOBIG);
        if (e != WYE_OK) {
            wye_buf_cleanup(&out);
            continue;
        }
        if (utf8) {
            CHECK(eng_utf8_valid(out.data ? out.data : "", out.len));
        }
        /* Exactly the room it needs is enough; one byte less is TOOBIG. */
        struct wye_buf again;
        e = render((enum eng_chat_family)f, msgs, n, gen, bos, prefix, out.len, &again);
        if (e != WYE_OK) {
            fprintf(stderr, "fuzz_chat_template: %s: %zu bytes of room are not enough: %s\n",
                    eng_chat_family_name((enum eng_chat_family)f), out.len, wye_err_str(e));
            abort();
        }
        CHECK(again.len == out.len && (out.len == 0 || memcmp(again.data, out.data, out.len) == 0));
        wye_buf_cleanup(&again);
        size_t start = prefix ? strlen(PREFIX) : 0;
        if (out.len > start) {
            CHECK(render((enum eng_chat_family)f, msgs, n, gen, bos, prefix, out.len - 1, &again) ==
                  WYE_ERR_TOOBIG);
            wye_buf_cleanup(&again);
        }
        wye_buf_cleanup(&out);
    }
    CHECK(eng_chat_format(ENG_CHAT__COUNT, msgs, n, gen, bos, &(struct wye_buf){0}) ==
          WYE_ERR_INVAL);
    free(copy);
    free(msgs);
    return 0;
}
