/* Writes the seed corpora of the gateway-side fuzz targets (tests/fuzz/gateway.cmake) into
 * DIR/sse, DIR/gw_format, DIR/chat_req, DIR/gw_body and DIR/ledger_line: OpenAI event streams
 * (text, usage, tool calls, an error event, odd line ends) behind a few headers of fuzz_sse and
 * fuzz_gw_format, chat requests and WebSocket events, and a ledger line signed with the test
 * key; and DIR/gateway.dict, the tokens those formats are made of (field names, numbers at
 * the edges of what converts, escapes), for libFuzzer's -dict. Usage: gateway_seeds DIR.
 * Single-threaded tool; nothing it writes is committed. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "common/crypto.h"
#include "tests/fuzz/fuzz_gateway.h"

static int n_failed;

static void mkdir_p(const char *dir)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gateway_seeds: cannot create %s: %s\n", dir, strerror(errno));
        n_failed++;
    }
}

static void seed(const char *dir, const char *sub, const char *name, const void *hdr,
                 size_t hdr_len, const char *text)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, sub, name);
    FILE *f = fopen(path, "wb");
    size_t len = strlen(text);
    if (!f || fwrite(hdr, 1, hdr_len, f) != hdr_len || fwrite(text, 1, len, f) != len ||
        fclose(f) != 0) {
        fprintf(stderr, "gateway_seeds: cannot write %s: %s\n", path, strerror(errno));
        n_failed++;
    }
}

static const char *const streams[][2] = {
    {"text",
     "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
     "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":"
     "\"\"},\"finish_reason\":null}]}\n\n"
     "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
     "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello \\u00e9\"},"
     "\"finish_reason\":null}]}\n\n"
     "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
     "\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
     "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":"
     "\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
     "\"total_tokens\":15}}\n\n"
     "data: [DONE]\n\n"},
    {"tools",
     "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null,"
     "\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{"
     "\"name\":\"get_weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n"
     "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
     "\"arguments\":\"{\\\"city\\\":\"}}]},\"finish_reason\":null}]}\n\n"
     "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\","
     "\"function\":{\"name\":\"f\",\"arguments\":\"\\\"Paris\\\"}\"}}]},\"finish_reason\":null}]}"
     "\n\n"
     "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}],"
     "\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":9}}\n\n"
     "data: [DONE]\n\n"},
    {"error",
     ": keep-alive\n\n"
     "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n"
     "event: error\n"
     "data: {\"error\":{\"message\":\"The server is overloaded\",\"type\":\"server_error\"}}\n\n"},
    {"odd", "\xEF\xBB\xBF: comment\r\n"
            "retry: 100\r\n"
            "id: 7\r\n"
            "event: message\r\n"
            "data: {\"choices\":\r"
            "data: [{\"delta\":{\"content\":\"multi\\nline\"}}]}\r\r"
            "data:{\"choices\":[{\"delta\":{\"content\":\"no space\"}}]}\n\n"
            "data\n\n"
            "data: unfinished"},
    {"completion",
     "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
     "\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\","
     "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
     "\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":"
     "7}}\n\n"},
    {"errbody", "{\"error\":{\"message\":\"Invalid 'messages': empty\\narray\",\"type\":"
                "\"invalid_request_error\",\"param\":null,\"code\":null}}"},
};

static const char *const requests[][2] = {
    {"simple", "{\"model\":\"auto\",\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}]}"},
    {"full",
     "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
     "{\"role\":\"developer\",\"content\":null},{\"role\":\"user\",\"content\":[{\"type\":"
     "\"text\",\"text\":\"What is \"},{\"type\":\"text\",\"text\":\"2+2?\"}]},{\"role\":"
     "\"assistant\",\"content\":\"4\"},{\"role\":\"tool\",\"content\":\"{}\"}],"
     "\"max_completion_tokens\":64,\"temperature\":0.2,\"top_p\":1,\"seed\":-42,"
     "\"stop\":[\"\\n\\n\",\"END\"],\"stream\":true,\"stream_options\":{\"include_usage\":"
     "true},\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":{}}}],"
     "\"tool_choice\":\"auto\",\"response_format\":{\"type\":\"json_object\"}}"},
    {"stopstr", "{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"###\","
                "\"max_tokens\":1,\"model\":null,\"stream\":false}"},
};

static const char *const ws_events[][2] = {
    {"ws_envelope", "{\"type\":\"response.create\",\"id\":\"r1\",\"response\":{\"model\":\"auto\","
                    "\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],"
                    "\"max_tokens\":16}}"},
    {"ws_flat", "{\"type\":\"response.create\",\"id\":\"r2\",\"messages\":[{\"role\":\"user\","
                "\"content\":\"Hello\"}],\"temperature\":1.5}"},
    {"ws_cancel", "{\"type\":\"response.cancel\",\"id\":\"r1\"}"},
};

static void ledger_seeds(const char *dir)
{
    static const char body[] =
        "{\"seq\":1,\"ts\":\"2024-05-01T12:34:56.789Z\",\"request_id\":\"req_0123456789abcdef0123"
        "4567\",\"key\":\"team-a\",\"route\":\"remote\",\"score\":0.8123,\"reasons\":[{\"f\":"
        "\"code\",\"w\":0.31}],\"model\":\"gpt-4o-mini\",\"prompt_tokens\":12,"
        "\"completion_tokens\":3,\"usage\":\"reported\",\"ttft_ms\":201.500,\"latency_ms\":"
        "850.250,\"cost_usd\":1.2e-05,\"counterfactual_usd\":1.2e-05,\"saving_usd\":0,"
        "\"status\":\"ok\",\"error\":null,\"run_id\":null,\"agent\":null,\"prev\":\"000000000000"
        "0000000000000000000000000000000000000000000000000000\"";
    uint8_t mac[WYE_SHA256_LEN];
    char hex[2 * WYE_SHA256_LEN + 1];
    char line[2048];
    if (wye_hmac_sha256(FZ_LEDGER_KEY, FZ_LEDGER_KEY_LEN, body, sizeof(body) - 1, mac) != WYE_OK) {
        n_failed++;
        return;
    }
    wye_hex_encode(mac, WYE_SHA256_LEN, hex);
    snprintf(line, sizeof(line), "%s,\"mac\":\"%s\"}", body, hex);
    seed(dir, "ledger_line", "record", "", 0, line);
    seed(dir, "ledger_line", "ts", "", 0, "2024-02-29T23:59:60.5+00:00");
    seed(dir, "ledger_line", "reasons", "", 0, "[ {\"f\": \"len\", \"w\": -0.25}, \"x\" ]");
    seed(dir, "ledger_line", "fields", "", 0,
         "req_1\nkey\xc3\xa9\nlocal\nqwen\nerror\nboom \"quoted\"\t\x01\n[1,2]\nrun-9\nagent");
}

/* libFuzzer dictionary entries: JSON keys (written as "key":), and other tokens already escaped
 * for the file's "..." syntax */
static const char dict_keys[] =
    "index id type function name arguments tool_calls choices delta message content "
    "finish_reason usage prompt_tokens completion_tokens error messages role model stop "
    "max_tokens seed temperature response seq ts prev mac reasons";
static const char *const dict_raw[] = {
    "data: ",     "event: ",   "\\x0d\\x0a", ":",      "[DONE]",
    "null",       "true",      "false",      "-1",     "0.5",
    "1e10",       "1e400",     "-1e400",     "9.3e18", "9007199254740993",
    "2147483648", "\\\\u0000", "\\\\ud800",  "\\\\n",  "\\xef\\xbb\\xbf",
    "T00:00:00Z", "+00:00",    "[]",         "{}"};

static void write_dict(const char *dir)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/gateway.dict", dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "gateway_seeds: cannot write %s: %s\n", path, strerror(errno));
        n_failed++;
        return;
    }
    for (const char *k = dict_keys; *k;) {
        size_t n = strcspn(k, " ");
        fprintf(f, "\"\\\"%.*s\\\":\"\n", (int)n, k);
        k += n + (k[n] == ' ');
    }
    for (size_t i = 0; i < sizeof(dict_raw) / sizeof(dict_raw[0]); i++) {
        fprintf(f, "\"%s\"\n", dict_raw[i]);
    }
    if (fclose(f) != 0) {
        n_failed++;
    }
}

int main(int argc, char **argv)
{
    /* fuzz_sse headers: production cap in one piece; a 4 KB cap fed in small pieces with AGAIN
     * after every event; a 64-byte cap in the arena with allocations failing */
    static const unsigned char hdrs[][FZ_SSE_HDR] = {
        {0x80, 0, 0, 7, 1, 0, 0, 0},
        {0x0f, 0xf0, 1, 0x0a, 0x35, 0x12, 0x07, 0},
        {0x00, 0x30, 2, 0x0c, 0x99, 0x01, 0x20, 7},
    };
    /* fuzz_gw_format headers: JSON; SSE with usage, a small high-water mark and a scored
     * start; WebSocket ending in an upstream failure; WebSocket cancelled by the client */
    static const unsigned char fmt_hdrs[][FZ_FMT_HDR] = {
        {0, 0, 0, 0},
        {5, 4, 0, 0x0c},
        {2, 0, 1, 1},
        {6, 1, 2, 3},
    };
    if (argc != 2) {
        fprintf(stderr, "usage: gateway_seeds DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    char sub[1024];
    mkdir_p(dir);
    static const char *const subs[] = {"sse", "gw_format", "chat_req", "gw_body", "ledger_line"};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(sub, sizeof(sub), "%s/%s", dir, subs[i]);
        mkdir_p(sub);
    }
    for (size_t i = 0; i < sizeof(streams) / sizeof(streams[0]); i++) {
        for (size_t h = 0; h < sizeof(hdrs) / sizeof(hdrs[0]); h++) {
            char name[64];
            snprintf(name, sizeof(name), "%s-%zu", streams[i][0], h);
            seed(dir, "sse", name, hdrs[h], FZ_SSE_HDR, streams[i][1]);
        }
        for (size_t h = 0; h < sizeof(fmt_hdrs) / sizeof(fmt_hdrs[0]); h++) {
            char name[64];
            snprintf(name, sizeof(name), "%s-%zu", streams[i][0], h);
            seed(dir, "gw_format", name, fmt_hdrs[h], FZ_FMT_HDR, streams[i][1]);
        }
    }
    for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
        seed(dir, "chat_req", requests[i][0], "", 0, requests[i][1]);
        seed(dir, "gw_body", requests[i][0], "", 0, requests[i][1]);
    }
    for (size_t i = 0; i < sizeof(ws_events) / sizeof(ws_events[0]); i++) {
        seed(dir, "gw_body", ws_events[i][0], "", 0, ws_events[i][1]);
    }
    ledger_seeds(dir);
    write_dict(dir);
    return n_failed ? 1 : 0;
}
