/* A cache of compiled JSON-Schema constraints keyed by the schema text, so that a router
 * serving the same tool or response_format schema again and again compiles it once. Any
 * thread: one mutex guards the table; compilation runs outside it (two threads missing on
 * the same schema may both compile it, the second result is dropped). Entries hold a
 * reference, so evicting one never frees a constraint a running sequence still uses. */
#include <pthread.h>
#include <string.h>

#include "common/alloc.h"
#include "local-engine/constrain_internal.h"

#define CACHE_N_MAX 4096

struct centry {
    uint64_t hash;
    char *text; /* NULL with len 0: the json_object constraint */
    size_t len;
    bool json_object;
    struct eng_constraint *c; /* NULL: free entry */
    uint64_t last_use;
};

struct eng_constraint_cache {
    pthread_mutex_t mu;
    struct centry *e; /* (n_max) */
    size_t n_max;
    uint64_t clock;
};

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ULL;
    }
    return h;
}

enum wye_err eng_constraint_cache_create(size_t n_max, struct eng_constraint_cache **out)
{
    *out = NULL;
    if (n_max == 0 || n_max > CACHE_N_MAX) {
        return WYE_ERR_INVAL;
    }
    struct eng_constraint_cache *cc = wye_calloc(1, sizeof(*cc));
    if (!cc) {
        goto fail;
    }
    cc->e = wye_calloc(n_max, sizeof(*cc->e));
    if (!cc->e) {
        goto fail_cache;
    }
    if (pthread_mutex_init(&cc->mu, NULL) != 0) {
        goto fail_entries;
    }
    cc->n_max = n_max;
    *out = cc;
    return WYE_OK;
fail_entries:
    wye_free(cc->e);
fail_cache:
    wye_free(cc);
fail:
    return WYE_ERR_NOMEM;
}

void eng_constraint_cache_destroy(struct eng_constraint_cache *cc)
{
    if (!cc) {
        return;
    }
    for (size_t i = 0; i < cc->n_max; i++) {
        eng_constraint_destroy(cc->e[i].c);
        wye_free(cc->e[i].text);
    }
    pthread_mutex_destroy(&cc->mu);
    wye_free(cc->e);
    wye_free(cc);
}

/* The entry for the key, or NULL. Caller holds mu. */
static struct centry *find_locked(struct eng_constraint_cache *cc, uint64_t h, const char *s,
                                  size_t n, bool json_object)
{
    for (size_t i = 0; i < cc->n_max; i++) {
        struct centry *e = &cc->e[i];
        if (e->c && e->hash == h && e->json_object == json_object && e->len == n &&
            (n == 0 || memcmp(e->text, s, n) == 0)) {
            return e;
        }
    }
    return NULL;
}

enum wye_err eng_constraint_cache_get(struct eng_constraint_cache *cc, const char *schema,
                                      size_t len, struct eng_constraint **out, char *errbuf,
                                      size_t errlen)
{
    bool jo = schema == NULL;
    size_t n = jo ? 0 : len;
    uint64_t h = jo ? 0 : fnv1a(schema, n);
    *out = NULL;
    pthread_mutex_lock(&cc->mu);
    struct centry *e = find_locked(cc, h, schema, n, jo);
    if (e) {
        e->last_use = ++cc->clock;
        eng_constraint_ref(e->c);
        *out = e->c;
        pthread_mutex_unlock(&cc->mu);
        return WYE_OK;
    }
    pthread_mutex_unlock(&cc->mu);

    struct eng_constraint *c = NULL;
    enum wye_err err = jo ? eng_constraint_json_object(&c, errbuf, errlen)
                          : eng_constraint_compile(schema, n, &c, errbuf, errlen);
    if (err) {
        return err;
    }
    char *text = n ? wye_malloc(n) : NULL;
    if (n && !text) {
        *out = c; /* usable, just not cached */
        return WYE_OK;
    }
    if (n) {
        memcpy(text, schema, n);
    }
    pthread_mutex_lock(&cc->mu);
    e = find_locked(cc, h, schema, n, jo);
    if (e) { /* another thread compiled it meanwhile */
        e->last_use = ++cc->clock;
        eng_constraint_ref(e->c);
        *out = e->c;
        pthread_mutex_unlock(&cc->mu);
        eng_constraint_destroy(c);
        wye_free(text);
        return WYE_OK;
    }
    struct centry *victim = &cc->e[0];
    for (size_t i = 0; i < cc->n_max; i++) {
        if (!cc->e[i].c) {
            victim = &cc->e[i];
            break;
        }
        if (cc->e[i].last_use < victim->last_use) {
            victim = &cc->e[i];
        }
    }
    struct eng_constraint *old = victim->c;
    char *old_text = victim->text;
    *victim = (struct centry){h, text, n, jo, c, ++cc->clock};
    eng_constraint_ref(c);
    *out = c;
    pthread_mutex_unlock(&cc->mu);
    eng_constraint_destroy(old);
    wye_free(old_text);
    return WYE_OK;
}
