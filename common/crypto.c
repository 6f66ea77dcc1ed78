/* mbedTLS wrapper. The DRBG is seeded from main before threads start and then used under a
 * mutex from any thread; the hash functions are stateless and thread-safe. */
#include "common/crypto.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <pthread.h>
#include <string.h>

#include "common/alloc.h"

struct wye_hmac {
    mbedtls_md_context_t md;
};

static pthread_mutex_t drbg_lock = PTHREAD_MUTEX_INITIALIZER;
static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;
static bool drbg_ready;

enum wye_err wye_crypto_init(void)
{
    static const char pers[] = "wye-drbg";
    enum wye_err err = WYE_OK;
    pthread_mutex_lock(&drbg_lock);
    if (!drbg_ready) {
        mbedtls_entropy_init(&entropy);
        mbedtls_ctr_drbg_init(&drbg);
        if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy,
                                  (const unsigned char *)pers, sizeof(pers) - 1) != 0) {
            mbedtls_ctr_drbg_free(&drbg);
            mbedtls_entropy_free(&entropy);
            err = WYE_ERR_IO;
        } else {
            drbg_ready = true;
        }
    }
    pthread_mutex_unlock(&drbg_lock);
    return err;
}

enum wye_err wye_random(void *buf, size_t n)
{
    enum wye_err err = WYE_OK;
    pthread_mutex_lock(&drbg_lock);
    if (!drbg_ready) {
        err = WYE_ERR_INTERNAL;
    } else {
        unsigned char *p = buf;
        while (n > 0 && !err) {
            size_t chunk = n > MBEDTLS_CTR_DRBG_MAX_REQUEST ? MBEDTLS_CTR_DRBG_MAX_REQUEST : n;
            if (mbedtls_ctr_drbg_random(&drbg, p, chunk) != 0) {
                err = WYE_ERR_IO;
            }
            p += chunk;
            n -= chunk;
        }
    }
    pthread_mutex_unlock(&drbg_lock);
    return err;
}

void wye_sha256(const void *p, size_t n, uint8_t out[WYE_SHA256_LEN])
{
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    mbedtls_md(info, p, n, out);
}

enum wye_err wye_hmac_sha256(const void *key, size_t key_len, const void *p, size_t n,
                             uint8_t out[WYE_SHA256_LEN])
{
    const mbedtls_md_info_t *info = mbedtls_md_info_from_type(MBEDTLS_MD_SHA256);
    return mbedtls_md_hmac(info, key, key_len, p, n, out) == 0 ? WYE_OK : WYE_ERR_INTERNAL;
}

struct wye_hmac *wye_hmac_create(const void *key, size_t key_len)
{
    struct wye_hmac *h = wye_calloc(1, sizeof(*h));
    if (!h) {
        return NULL;
    }
    mbedtls_md_init(&h->md);
    if (mbedtls_md_setup(&h->md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) != 0) {
        goto err_free;
    }
    if (mbedtls_md_hmac_starts(&h->md, key, key_len) != 0) {
        goto err_free;
    }
    return h;
err_free:
    mbedtls_md_free(&h->md);
    wye_free(h);
    return NULL;
}

void wye_hmac_update(struct wye_hmac *h, const void *p, size_t n)
{
    mbedtls_md_hmac_update(&h->md, p, n);
}

void wye_hmac_final(struct wye_hmac *h, uint8_t out[WYE_SHA256_LEN])
{
    mbedtls_md_hmac_finish(&h->md, out);
    mbedtls_md_hmac_reset(&h->md);
}

void wye_hmac_destroy(struct wye_hmac *h)
{
    if (!h) {
        return;
    }
    mbedtls_md_free(&h->md);
    wye_free(h);
}

bool wye_ct_equal(const void *a, const void *b, size_t n)
{
    const volatile unsigned char *x = a;
    const volatile unsigned char *y = b;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++) {
        diff |= (unsigned char)(x[i] ^ y[i]);
    }
    return diff == 0;
}

void wye_hex_encode(const uint8_t *in, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

bool wye_hex_decode(const char *hex, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(hex[2 * i]);
        int lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return hex[2 * n] == '\0';
}

enum wye_err wye_reqid_new(char out[WYE_REQID_LEN + 1])
{
    uint8_t raw[12];
    enum wye_err err = wye_random(raw, sizeof(raw));
    if (err) {
        return err;
    }
    memcpy(out, "req_", 4);
    wye_hex_encode(raw, sizeof(raw), out + 4);
    return WYE_OK;
}
