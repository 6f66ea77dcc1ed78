/* Allocation wrappers with a fail-after-N hook so tests can drive every constructor and
 * parser through allocation failure in a loop (SQLite's OOM loops). */
#ifndef WYE_COMMON_ALLOC_H
#define WYE_COMMON_ALLOC_H

#include <stddef.h>

void *wye_malloc(size_t n);
void *wye_calloc(size_t count, size_t size);
void *wye_realloc(void *p, size_t n);
void wye_free(void *p);
/* Returns a copy of s (NULL on allocation failure). */
char *wye_strdup(const char *s);
/* Returns a NUL-terminated copy of the first n bytes of s. */
char *wye_strndup(const char *s, size_t n);
/* Multiplies with overflow check; returns 0 and sets *out, or -1 on overflow. */
int wye_mul_size(size_t a, size_t b, size_t *out);

/* Test hook: after n more successful allocations, every allocation fails; n < 0 disables.
 * Process-wide (atomic). Also routes cJSON's allocations through the hook. */
void wye_alloc_fail_after(long n);
/* Returns how many allocations failed because of the hook since it was last armed. */
long wye_alloc_failures(void);
/* Installs the wrappers as cJSON's allocator; called once from main and test setup. */
void wye_alloc_install_cjson_hooks(void);

#endif
