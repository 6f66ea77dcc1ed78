/* What the gateway-side fuzz targets (tests/fuzz/gateway.cmake) and their seed writer agree on:
 * the layout of fuzz_sse's input header and the ledger test key. */
#ifndef WYE_TESTS_FUZZ_FUZZ_GATEWAY_H
#define WYE_TESTS_FUZZ_FUZZ_GATEWAY_H

/* fuzz_sse: the first FZ_SSE_HDR bytes choose how the rest (an event
 * stream) is fed; see fuzz_sse.c. */
#define FZ_SSE_HDR 8
/* fuzz_gw_format: FZ_FMT_HDR bytes choose the stream's kind and end; see fuzz_gw_format.c. */
#define FZ_FMT_HDR 4

/* The HMAC key fuzz_ledger_line checks lines with (and gateway_seeds signs them with). */
#define FZ_LEDGER_KEY "wye-fuzz-ledger-key-0123456789ab"
#define FZ_LEDGER_KEY_LEN (sizeof(FZ_LEDGER_KEY) - 1)

#endif
