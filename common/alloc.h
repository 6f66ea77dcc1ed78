/* Allocation wrappers with a fail-after-N hook so tests can drive every constructor and
 * parser through allocation failure in a loop (SQLite's OOM loops). */
#ifndef WYE_COMMON_ALLOC_H
#define WYE_COMMON_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

#include "common/err.h"

/* WYE_ASAN is defined when the build runs under AddressSanitizer (GCC or clang), for code that
 * poisons memory it manages itself (the cJSON arena, huge-page mappings). */
#if defined(__SANITIZE_ADDRESS__)
#define WYE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WYE_ASAN 1
#endif
#endif

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

/* A per-thread bump arena for short-lived cJSON trees (a parsed SSE chunk), so a hot path
 * parses without malloc/free per node. With the hooks installed, cJSON allocations made by
 * the calling thread between begin and end are carved from the arena (falling back to malloc
 * when it is full, and still subject to the fail-after hook); cJSON_free/cJSON_Delete on that
 * thread give them back, and the arena rewinds once nothing carved from it is live. Every
 * arena pointer must be freed on the thread that got it, before wye_cjson_arena_cleanup.
 * init: NOMEM, or OK (a second init is a no-op). Calling thread only. */
enum wye_err wye_cjson_arena_init(size_t cap);
void wye_cjson_arena_cleanup(void);
void wye_cjson_arena_begin(void);
void wye_cjson_arena_end(void);
/* Frees every block carved from the calling thread's arena at once, without walking the
 * trees: true if done, false (nothing changed: free the trees as usual) when the hooks are
 * not installed, nothing was carved, some block asked for since the last rewind came from
 * malloc, or inside begin/end. Only for a caller that
 * owns every tree parsed in the window since the last rewind and drops them all. */
bool wye_cjson_arena_drop(void);
/* Bytes carved and still live blocks (tests). */
size_t wye_cjson_arena_used(void);
size_t wye_cjson_arena_live(void);

#endif
