/* Helpers shared by the tokenizer tests that read ../shared/vocab. */
#ifndef WYE_TESTS_TOK_UTIL_H
#define WYE_TESTS_TOK_UTIL_H

#include <stddef.h>

struct eng_tokenizer;

/* The tokenizer of ../shared/vocab/ggml-vocab-NAME.gguf; fails the running test with the
 * loader's message when the file cannot be opened or its tokenizer loaded. */
struct eng_tokenizer *tok_test_load_vocab(const char *name);

/* The whole file, NUL-terminated (malloc'd; *len gets its size when len is not NULL), or
 * NULL when it cannot be read. */
char *tok_test_read_file(const char *path, size_t *len);

#endif
