/* Allocation wrappers with an atomic fail-after-N test hook. Any thread. */
#include "common/alloc.h"

#include <cJSON.h>
#include <stdatomic.h>
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

static void *cjson_malloc(size_t n)
{
    return wye_malloc(n);
}

void wye_alloc_install_cjson_hooks(void)
{
    cJSON_Hooks hooks = {.malloc_fn = cjson_malloc, .free_fn = free};
    cJSON_InitHooks(&hooks);
}
