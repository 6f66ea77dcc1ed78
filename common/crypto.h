/* The project's only door to mbedTLS: SHA-256, HMAC-SHA256, constant-time compare and
 * random bytes from a CTR-DRBG seeded once in main before any thread starts. */
#ifndef WYE_COMMON_CRYPTO_H
#define WYE_COMMON_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define WYE_SHA256_LEN 32
/* "req_" + 24 hex characters. */
#define WYE_REQID_LEN 28

struct wye_hmac;

/* Seeds the process-wide DRBG from the system entropy source. Call once from main (and from
 * test setup) before any thread starts; later calls are no-ops. */
enum wye_err wye_crypto_init(void);
/* Fills buf with n random bytes; thread-safe. */
enum wye_err wye_random(void *buf, size_t n);
/* out = SHA-256(p[0..n)). */
void wye_sha256(const void *p, size_t n, uint8_t out[WYE_SHA256_LEN]);
/* out = HMAC-SHA256(key, p[0..n)). */
enum wye_err wye_hmac_sha256(const void *key, size_t key_len, const void *p, size_t n,
                             uint8_t out[WYE_SHA256_LEN]);
/* An incremental HMAC-SHA256 keyed once and reused: create, update*, final, update*, ... */
struct wye_hmac *wye_hmac_create(const void *key, size_t key_len);
void wye_hmac_update(struct wye_hmac *h, const void *p, size_t n);
/* Writes the MAC of everything since the last final and resets for the next message. */
void wye_hmac_final(struct wye_hmac *h, uint8_t out[WYE_SHA256_LEN]);
void wye_hmac_destroy(struct wye_hmac *h);
/* Compares in time that depends only on n, never on where a and b differ. */
bool wye_ct_equal(const void *a, const void *b, size_t n);
/* Writes 2n lowercase hex characters plus a NUL into out. */
void wye_hex_encode(const uint8_t *in, size_t n, char *out);
/* Decodes exactly 2n hex characters from hex into out; returns false if malformed. */
bool wye_hex_decode(const char *hex, uint8_t *out, size_t n);
/* Writes a fresh random request id ("req_" + 24 hex) into out[WYE_REQID_LEN + 1]. */
enum wye_err wye_reqid_new(char out[WYE_REQID_LEN + 1]);

#endif
