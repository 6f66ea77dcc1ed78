/* Development helper for tok_pretok_fuzz.py: reads NUL-separated UTF-8 strings from stdin
 * and, for the pre-tokenizer named in argv[1] (gpt-2, llama3, qwen2, smollm, default), prints
 * each string's pieces as one line of byte lengths. Single-threaded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "local-engine/tok_internal.h"

int main(int argc, char **argv)
{
    enum tok_pre pre;
    bool ignore;
    if (argc != 2 || !tok_pre_from_name(argv[1], strlen(argv[1]), &pre, &ignore)) {
        fprintf(stderr, "usage: tok_pretok_dump PRE < strings\n");
        return 2;
    }
    static char buf[16 << 20];
    size_t n = fread(buf, 1, sizeof(buf), stdin);
    size_t start = 0;
    uint32_t *cps = malloc((n + 1) * sizeof(*cps));
    uint32_t *offs = malloc((n + 1) * sizeof(*offs));
    size_t *ends = malloc((n + 1) * sizeof(*ends));
    if (cps == NULL || offs == NULL || ends == NULL) {
        return 1;
    }
    for (size_t i = 0; i <= n; i++) {
        if (i < n && buf[i] != '\0') {
            continue;
        }
        if (i == n && i == start) {
            break;
        }
        size_t k = tok_pretokenize(pre, buf + start, i - start, cps, offs, ends);
        size_t prev = 0;
        for (size_t j = 0; j < k; j++) {
            printf("%s%zu", j ? " " : "", ends[j] - prev);
            prev = ends[j];
        }
        printf("\n");
        start = i + 1;
    }
    free(cps);
    free(offs);
    free(ends);
    return 0;
}
