/* Helpers shared by the tokenizer tests that read ../shared/vocab (test_tok_util.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>

#include "local-engine/gguf.h"
#include "local-engine/tokenizer.h"
#include "tests/local-engine/test_tok_util.h"

struct eng_tokenizer *tok_test_load_vocab(const char *name)
{
    char path[512], err[256];
    snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf", WYE_SHARED_DIR, name);
    struct eng_gguf *g = NULL;
    if (eng_gguf_open(path, &g, err, sizeof(err)) != WYE_OK) {
        fail_msg("cannot open %s: %s", path, err);
    }
    struct eng_tokenizer *t = NULL;
    enum wye_err e = eng_tokenizer_load(g, &t, err, sizeof(err));
    eng_gguf_close(g); /* the tokenizer copies what it needs */
    if (e != WYE_OK) {
        fail_msg("cannot load the tokenizer of %s: %s", path, err);
    }
    return t;
}

char *tok_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    char *p = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (p = malloc((size_t)n + 1)) != NULL) {
        if (fread(p, 1, (size_t)n, f) == (size_t)n) {
            p[n] = '\0';
            if (len) {
                *len = (size_t)n;
            }
        } else {
            free(p);
            p = NULL;
        }
    }
    fclose(f);
    return p;
}
