/* The mbedTLS wrapper against published vectors (FIPS 180-2, RFC 4231), plus random bytes,
 * hex and request ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "common/crypto.h"

static void test_sha256(void **state)
{
    (void)state;
    uint8_t out[32];
    char hex[65];
    wye_sha256("abc", 3, out);
    wye_hex_encode(out, 32, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

static void test_hmac_rfc4231(void **state)
{
    (void)state;
    uint8_t key[20], out[32];
    char hex[65];
    memset(key, 0x0b, sizeof(key));
    assert_int_equal(wye_hmac_sha256(key, sizeof(key), "Hi There", 8, out), WYE_OK);
    wye_hex_encode(out, 32, hex);
    assert_string_equal(hex, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
    /* The incremental form gives the same MAC, and resets after final. */
    struct wye_hmac *h = wye_hmac_create("Jefe", 4);
    assert_non_null(h);
    for (int round = 0; round < 2; round++) {
        wye_hmac_update(h, "what do ya want ", 16);
        wye_hmac_update(h, "for nothing?", 12);
        wye_hmac_final(h, out);
        wye_hex_encode(out, 32, hex);
        assert_string_equal(hex,
                            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
    wye_hmac_destroy(h);
}

/* The incremental HMAC (pad blocks absorbed once at create) equals the one-shot mbedTLS HMAC
 * for keys shorter than, equal to and longer than a block, message after message. */
static void test_hmac_incremental_matches(void **state)
{
    (void)state;
    static const size_t key_lens[] = {0, 1, 32, 63, 64, 65, 131};
    uint8_t key[131], msg[300], want[32], got[32];
    for (size_t i = 0; i < sizeof(key); i++) {
        key[i] = (uint8_t)(i * 7 + 3);
    }
    for (size_t i = 0; i < sizeof(msg); i++) {
        msg[i] = (uint8_t)(i * 13 + 1);
    }
    for (size_t k = 0; k < sizeof(key_lens) / sizeof(key_lens[0]); k++) {
        struct wye_hmac *h = wye_hmac_create(key, key_lens[k]);
        assert_non_null(h);
        for (size_t n = 0; n <= sizeof(msg); n += 37) {
            assert_int_equal(wye_hmac_sha256(key, key_lens[k], msg, n, want), WYE_OK);
            wye_hmac_update(h, msg, n / 3);
            wye_hmac_update(h, msg + n / 3, n - n / 3);
            wye_hmac_final(h, got);
            assert_memory_equal(got, want, sizeof(want));
        }
        wye_hmac_destroy(h);
    }
}

static void test_random_hex_reqid(void **state)
{
    (void)state;
    uint8_t a[32], b[32], c[4];
    assert_int_equal(wye_random(a, sizeof(a)), WYE_OK);
    assert_int_equal(wye_random(b, sizeof(b)), WYE_OK);
    assert_false(wye_ct_equal(a, b, sizeof(a)));
    assert_true(wye_ct_equal(a, a, sizeof(a)));
    assert_true(wye_hex_decode("deadBEEF", c, 4));
    assert_int_equal(c[0], 0xde);
    assert_int_equal(c[3], 0xef);
    assert_false(wye_hex_decode("deadbeeg", c, 4));
    assert_false(wye_hex_decode("deadbeef00", c, 4));
    char id1[WYE_REQID_LEN + 1], id2[WYE_REQID_LEN + 1];
    assert_int_equal(wye_reqid_new(id1), WYE_OK);
    assert_int_equal(wye_reqid_new(id2), WYE_OK);
    assert_int_equal(strlen(id1), WYE_REQID_LEN);
    assert_memory_equal(id1, "req_", 4);
    assert_string_not_equal(id1, id2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha256),
        cmocka_unit_test(test_hmac_rfc4231),
        cmocka_unit_test(test_hmac_incremental_matches),
        cmocka_unit_test(test_random_hex_reqid),
    };
    if (wye_crypto_init() != WYE_OK) {
        return 1;
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
