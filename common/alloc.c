/* Allocation wrappers with an atomic fail-after-N test hook. Any thread. */
#include "common/alloc.h"

#include <cJSON.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long fail_after = -1;
static atomic_long n_failed;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_after, memory_order_relaxed);
    if (n < 0) {
        return 0;
    }
    /* Decrement until zero; at zero every allocation fails. */
    while (n > 0) {
        if (atomic_compare_exchange_weak(&fail_after, &n, n - 1)) {
            return 0;
        }
        if (n < 0) {
            return 0;
        }
    }
    atomic_fetch_add(&n_failed, 1);
    return 1;
}

void wye_alloc_fail_after(long n)
{
    atomic_store(&n_failed, 0);
    atomic_store(&fail_after, n);
}

long wye_alloc_failures(void)
{
    return atomic_load(&n_failed);
}

void *wye_malloc(size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return malloc(n ? n : 1);
}

void *wye_calloc(size_t count, size_t size)
{
    if (should_fail()) {
        return NULL;
    }
    return calloc(count ? count : 1, size ? size : 1);
}

void *wye_realloc(void *p, size_t n)
{
    if (should_fail()) {
        return NULL;
    }
    return realloc(p, n ? n : 1);
}

void wye_free(void *p)
{
    free(p);
}

char *wye_strndup(const char *s, size_t n)
{
    char *d = wye_malloc(n + 1);
    if (!d) {
        return NULL;
    }
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *wye_strdup(const char *s)
{
    return wye_strndup(s, strlen(s));
}

int wye_mul_size(size_t a, size_t b, size_t *out)
{
    if (a && b > SIZE_MAX / a) {
        return -1;
    }
    *out = a * b;
    return 0;
}

/* ---- the cJSON arena ---- */

#ifdef WYE_ASAN
#include <sanitizer/asan_interface.h>
/* Under ASan a poisoned gap follows every block and a rewound arena is poisoned whole, so an
 * overflow or a use after the tree was deleted is still reported. */
#define ARENA_REDZONE 16
#define ARENA_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define ARENA_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define ARENA_REDZONE 0
#define ARENA_POISON(p, n) ((void)(p), (void)(n))
#define ARENA_UNPOISON(p, n) ((void)(p), (void)(n))
#endif
#define ARENA_ALIGN 16

struct cjson_arena {
    char *base; /* NULL: this thread has no arena */
    size_t cap, used;
    size_t live;  /* blocks carved and not yet freed */
    bool spilled; /* since the last rewind, a block asked for in the window came from malloc */
    bool active;  /* between begin and end */
};

static _Thread_local struct cjson_arena tl_arena;
static atomic_bool hooks_installed;

enum wye_err wye_cjson_arena_init(size_t cap)
{
    struct cjson_arena *a = &tl_arena;
    if (a->base) {
        return WYE_OK;
    }
    cap = (cap + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    a->base = wye_malloc(cap);
    if (!a->base) {
        return WYE_ERR_NOMEM;
    }
    ARENA_POISON(a->base, cap);
    a->cap = cap;
    a->used = 0;
    a->live = 0;
    a->active = false;
    return WYE_OK;
}

void wye_cjson_arena_cleanup(void)
{
    struct cjson_arena *a = &tl_arena;
    if (!a->base) {
        return;
    }
    /* A block still live here would reach free() later: a leak of a parsed tree. Keep the
     * memory then (it is one arena per thread) rather than turn the leak into a bad free. */
    if (a->live == 0) {
        ARENA_UNPOISON(a->base, a->cap);
        free(a->base);
    }
    memset(a, 0, sizeof(*a));
}

void wye_cjson_arena_begin(void)
{
    tl_arena.active = tl_arena.base != NULL;
}

void wye_cjson_arena_end(void)
{
    tl_arena.active = false;
}

bool wye_cjson_arena_drop(void)
{
    struct cjson_arena *a = &tl_arena;
    /* Without our hooks cJSON never asked the arena (live stays 0): its trees are malloc's. */
    if (!atomic_load_explicit(&hooks_installed, memory_order_relaxed) || !a->base ||
        a->active || a->spilled || a->live == 0) {
        return false;
    }
    ARENA_POISON(a->base, a->used);
    a->used = 0;
    a->live = 0;
    return true;
}

size_t wye_cjson_arena_used(void)
{
    return tl_arena.used;
}

size_t wye_cjson_arena_live(void)
{
    return tl_arena.live;
}

static void *cjson_malloc(size_t n)
{
    struct cjson_arena *a = &tl_arena;
    if (!a->active) {
        return wye_malloc(n);
    }
    if (should_fail()) {
        return NULL;
    }
    size_t want = ((n ? n : 1) + ARENA_REDZONE + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (want < n || want > a->cap - a->used) {
        a->spilled = true;
        return malloc(n ? n : 1); /* full (or huge): the rest of this tree comes from malloc */
    }
    char *p = a->base + a->used;
    a->used += want;
    a->live++;
    ARENA_UNPOISON(p, n);
    return p;
}

static void cjson_free(void *p)
{
    struct cjson_arena *a = &tl_arena;
    /* an arena block is recognised by its address; anything else came from malloc */
    if (a->base && (char *)p >= a->base && (char *)p < a->base + a->cap) {
        a->live--;
        if (a->live == 0) {
            ARENA_POISON(a->base, a->used);
            a->used = 0; /* nothing carved is live: rewind */
            a->spilled = false;
        }
        return;
    }
    free(p);
}

void wye_alloc_install_cjson_hooks(void)
{
    cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = cjson_free};
    cJSON_InitHooks(&hooks);
    atomic_store(&hooks_installed, true);
}
